"""Service: a run, the scheduler, the run lock, status and preview, wired up."""
