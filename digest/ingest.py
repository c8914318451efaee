"""Ingest listing dumps: one transaction per dump, recorded by content hash.

A dump either goes in whole or not at all: the entries are upserted and the
``dump`` row written in one transaction, so a file that breaks half-way
leaves the store as it was. Failures are reported, not recorded, so the same
bytes can be ingested again once the reader learns them.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from digest.errors import DigestError, ListingError
from digest.listing import Entry
from digest.models import Dump
from digest.readers import read_listing
from digest.store import db_time, index_papers, reading, transaction, upsert_entries

Progress = Callable[[str, int], None]  # (path, entries so far)
PROGRESS_EVERY = 20_000


@dataclass
class DumpResult:
    """The outcome for one file, as ``ingest --json`` prints it."""

    path: str
    status: str  # ok, duplicate, failed
    entries: int = 0
    new: int = 0
    seen: int = 0
    error: str | None = None
    layout: str | None = None
    listing_date: date | None = None

    def as_json(self) -> dict[str, Any]:
        """The contract's fields, dates as ISO strings."""
        data = asdict(self)
        data["listing_date"] = self.listing_date.isoformat() if self.listing_date else None
        return data


class Clock:
    """Hands out strictly increasing UTC times, so each dump's ``now`` is its own."""

    def __init__(self, now: Callable[[], datetime] | None = None) -> None:
        self._now = now or (lambda: datetime.now(UTC))
        self._last: datetime | None = None

    def __call__(self) -> datetime:
        value = self._now()
        if self._last is not None and value <= self._last:
            value = self._last + timedelta(microseconds=1)
        self._last = value
        return value


def file_sha256(path: Path) -> str:
    """The content hash of a file, read in blocks (snapshots are gigabytes)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _counting(
    entries: Iterable[Entry], path: str, progress: Progress | None, listed: date | None
) -> Iterator[Entry]:
    """The entries, dated by their listing where they carry no date of their own."""
    for count, entry in enumerate(entries, 1):
        yield replace(entry, published=listed) if listed and entry.published is None else entry
        if progress is not None and count % PROGRESS_EVERY == 0:
            progress(path, count)


def ingest_file(
    engine: Engine,
    path: Path,
    *,
    clock: Callable[[], datetime],
    source: str = "",
    progress: Progress | None = None,
    defer_index: bool = False,
) -> DumpResult:
    """Ingest one dump file; never raises for a bad file, reports it instead.

    The dump's papers are stamped first seen at a time taken once the write lock is held:
    a run composing digests meanwhile either sees them or picks them up next time, so a
    long ingest that commits after a run never falls behind that run's cut-off.
    The search index is brought up to date in the same transaction unless
    ``defer_index`` (a back-fill of millions): then the next search or run does it.
    """
    shown = str(path)
    try:
        sha = file_sha256(path)
    except OSError as exc:
        return DumpResult(shown, "failed", error=f"{shown}: cannot read: {exc.strerror}")
    with reading(engine) as conn:
        known = conn.execute(sa.select(col(Dump.id)).where(col(Dump.sha256) == sha)).first()
        conn.rollback()
    if known is not None:
        return DumpResult(shown, "duplicate")
    try:
        listing = read_listing(path, now=clock())
        with transaction(engine) as conn:
            conn.execute(sa.select(1))  # takes the write lock (BEGIN IMMEDIATE) before the clock
            now = clock()
            entries = _counting(listing.entries, shown, progress, listing.listing_date)
            counts = upsert_entries(conn, entries, now)
            if counts.entries == 0:
                raise ListingError("no papers found in this listing", shown)
            conn.execute(
                sa.insert(Dump).values(
                    sha256=sha,
                    name=path.name,
                    source=source,
                    layout=listing.layout,
                    listing_date=listing.listing_date,
                    ingested_at=db_time(now),
                    entries=counts.entries,
                    new=counts.new,
                    seen=counts.seen,
                    status="ok",
                )
            )
            if not defer_index:
                index_papers(conn)
    except ListingError as exc:
        message = str(exc) if exc.path else str(exc.at(shown))
        return DumpResult(shown, "failed", error=message)
    except IntegrityError:
        # the same bytes went in from another process between our check and our commit
        return DumpResult(shown, "duplicate")
    except DigestError as exc:
        return DumpResult(shown, "failed", error=f"{shown}: {exc}")
    return DumpResult(
        shown,
        "ok",
        entries=counts.entries,
        new=counts.new,
        seen=counts.seen,
        layout=listing.layout,
        listing_date=listing.listing_date,
    )


def dump_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The files named, and the files under the folders named (sorted, hidden ones skipped)."""
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                parts = child.relative_to(path).parts
                if child.is_file() and not any(part.startswith(".") for part in parts):
                    yield child
        else:
            yield path


def ingest_paths(
    engine: Engine,
    paths: Iterable[Path],
    *,
    clock: Callable[[], datetime],
    progress: Progress | None = None,
    defer_index: bool = False,
) -> list[DumpResult]:
    """Ingest every file named or found under the folders named, each on its own."""
    results = []
    for path in dump_files(paths):
        if not path.exists():
            results.append(DumpResult(str(path), "failed", error=f"{path}: no such file"))
            continue
        results.append(
            ingest_file(engine, path, clock=clock, progress=progress, defer_index=defer_index)
        )
    return results


def _move_aside(path: Path, folder: Path) -> Path:
    """Move ``path`` into ``folder`` without overwriting an earlier file of the same name."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    counter = 1
    while target.exists():
        target = folder / f"{path.stem}.{counter}{path.suffix}"
        counter += 1
    shutil.move(str(path), target)
    return target


def inbox_files(inbox: Path) -> list[Path]:
    """Files waiting in the inbox, oldest first; temp files (dot-names) are still being written."""
    if not inbox.is_dir():
        return []
    files = [p for p in inbox.iterdir() if p.is_file() and not p.name.startswith(".")]
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))


def ingest_inbox(
    engine: Engine,
    inbox: Path,
    *,
    clock: Callable[[], datetime],
    progress: Progress | None = None,
) -> list[DumpResult]:
    """Ingest the inbox: each file then goes to ``processed/``, or to ``failed/`` with its error."""
    results = []
    for path in inbox_files(inbox):
        result = ingest_file(engine, path, clock=clock, source="inbox", progress=progress)
        if result.status == "failed":
            moved = _move_aside(path, inbox / "failed")
            error_file = moved.with_name(moved.name + ".error")
            error_file.write_text((result.error or "failed") + "\n", encoding="utf-8")
        else:
            moved = _move_aside(path, inbox / "processed")
        result.path = str(moved)
        results.append(result)
    return results
