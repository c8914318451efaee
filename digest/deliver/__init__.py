"""Deliver: plan each digest, build its email, and send the outbox."""
