"""Listings in: dump files and folders, or the inbox, ingested one transaction per dump.

``Clock`` and ``DumpResult`` are named here for the command line, which keeps a clock for
the whole command and reports each dump.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy.engine import Engine

from digest.ingest.dumps import Clock as Clock
from digest.ingest.dumps import DumpResult as DumpResult
from digest.ingest.dumps import ingest_inbox, ingest_paths


def ingest_dumps(
    engine: Engine,
    *,
    inbox: Path | None,
    paths: Sequence[Path],
    clock: Clock,
    progress: Callable[[str, int], None] | None = None,
    defer_index: bool = False,
) -> list[DumpResult]:
    """Ingest the inbox (when given), then ``paths``; each dump's result, in that order."""
    results: list[DumpResult] = []
    if inbox is not None:
        results += ingest_inbox(engine, inbox, clock=clock, progress=progress)
    if paths:
        results += ingest_paths(
            engine, list(paths), clock=clock, progress=progress, defer_index=defer_index
        )
    return results
