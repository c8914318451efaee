"""Ingest listing dumps: one transaction per dump, recorded by content hash.

A dump either goes in whole or not at all: the entries are upserted and the
``dump`` row written in one transaction, so a file that breaks half-way
leaves the store as it was. Failures are reported, not recorded, so the same
bytes can be ingested again once the reader learns them.

Each dump fails alone, and how it failed decides where it goes. One that is
bad in itself (not a listing, not a regular file, a symbolic link in the
inbox) is moved to the inbox's ``failed/`` with a ``.error`` note beside it.
One that met a failure of the machine (the disk full, the database locked, an
I/O error, memory short) is reported with ``retry`` set and stays in the inbox,
so the next run tries it again. Only a damaged database stops the whole
ingest: every dump after would fail the same way.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy.engine import Engine

from digest.errors import DigestError, ListingError, ListingUnreadable, StoreCorrupt
from digest.files import make_folder, write_private
from digest.ingest.diff import upsert_entries
from digest.ingest.listing import Entry
from digest.ingest.readers import display_path, open_listing, read_listing
from digest.store import sources
from digest.store.papers import index_papers

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
    retry: bool = False  # failed for a reason of the machine: the same file may go in later
    warnings: list[str] = field(default_factory=list)  # what the reader mended

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
    with path.open("rb") as handle:
        return _sha256(handle)


def _sha256(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
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
    follow_symlinks: bool = True,
) -> DumpResult:
    """Ingest one dump file; never raises for a bad file or a failure of the machine, but
    reports it (``retry`` set for the latter). Only a damaged database raises (``StoreCorrupt``).

    The dump's papers are stamped first seen at a time taken once the write lock is held:
    a run composing digests meanwhile either sees them or picks them up next time, so a
    long ingest that commits after a run never falls behind that run's cut-off.
    The search index is brought up to date in the same transaction unless
    ``defer_index`` (a back-fill of millions): then the next search or run does it.
    """
    shown = display_path(path)
    try:
        handle = open_listing(path, follow_symlinks=follow_symlinks)
    except ListingUnreadable as exc:
        return _retry(shown, exc.reason)
    except ListingError as exc:
        return DumpResult(shown, "failed", error=str(exc.at(shown)))
    with handle:
        return _ingest_open_file(engine, path, handle, shown, clock, source, progress, defer_index)


def _ingest_open_file(
    engine: Engine,
    path: Path,
    handle: BinaryIO,
    shown: str,
    clock: Callable[[], datetime],
    source: str,
    progress: Progress | None,
    defer_index: bool,
) -> DumpResult:
    try:
        sha = _sha256(handle)
        known = sources.dump_known(engine, sha)
        if known is not None:
            # a listing taken back stays out: its bytes are remembered for that
            note = ["taken back earlier (digest papers remove); it stays out"]
            return DumpResult(shown, "duplicate", warnings=note if known == "removed" else [])
        listing = read_listing(path, now=clock(), source=handle)
        with sources.ingesting(engine) as conn:  # the write lock first, then the clock
            now = clock()
            entries = _counting(listing.entries, shown, progress, listing.listing_date)
            counts = upsert_entries(conn, entries, now)
            if counts.entries == 0:
                raise ListingError("no papers found in this listing", shown)
            sources.record_dump(
                conn,
                sha256=sha,
                name=display_path(path.name),
                source=source,
                layout=listing.layout,
                listing_date=listing.listing_date,
                ingested_at=now,
                entries=counts.entries,
                new=counts.new,
                seen=counts.seen,
                seq=counts.seq,
                again=counts.again,
            )
            if not defer_index:
                index_papers(conn)
    except ListingUnreadable as exc:
        return _retry(shown, exc.reason)
    except ListingError as exc:
        return DumpResult(shown, "failed", error=str(exc.at(shown)))
    except sources.AlreadyIngested:
        # the same bytes went in from another process between our check and our commit
        return DumpResult(shown, "duplicate")
    except StoreCorrupt:
        raise
    except DigestError as exc:  # the database locked or full, …: the dump is not to blame
        return _retry(shown, str(exc))
    except OSError as exc:
        return _retry(shown, f"cannot read file: {exc.strerror or exc}")
    except MemoryError:
        return _retry(shown, "out of memory")
    return DumpResult(
        shown,
        "ok",
        entries=counts.entries,
        new=counts.new,
        seen=counts.seen,
        layout=listing.layout,
        listing_date=listing.listing_date,
        warnings=list(listing.notes),
    )


def _retry(shown: str, reason: str) -> DumpResult:
    return DumpResult(shown, "failed", error=f"{shown}: {reason}", retry=True)


def dump_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The paths named, and what is under the folders named (sorted, hidden names skipped).

    Whatever is not a folder is yielded, a FIFO or a device too, so it is refused aloud.
    """
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                parts = child.relative_to(path).parts
                if not child.is_dir() and not any(part.startswith(".") for part in parts):
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
        if not os.path.lexists(path):
            shown = display_path(path)
            results.append(DumpResult(shown, "failed", error=f"{shown}: no such file"))
            continue
        results.append(
            ingest_file(engine, path, clock=clock, progress=progress, defer_index=defer_index)
        )
    return results


def _free_name(folder: Path, path: Path) -> Path:
    """``folder/<name>``, numbered when that (or its ``.error`` note) is taken."""
    target = folder / path.name
    counter = 1
    while os.path.lexists(target) or os.path.lexists(_note_of(target)):
        target = folder / f"{path.stem}.{counter}{path.suffix}"
        counter += 1
    return target


def _note_of(path: Path) -> Path:
    # The name as the file system has it: bytes that are not UTF-8 stay as they are.
    return path.with_name(path.name + ".error")


def _move_aside(path: Path, folder: Path, note: str | None = None) -> Path:
    """Move ``path`` into ``folder`` without overwriting an earlier file of the same name;
    with ``note``, write it first into ``<name>.error`` beside where the file goes."""
    make_folder(folder)
    target = _free_name(folder, path)
    if note is not None:
        write_private(_note_of(target), (note + "\n").encode("utf-8"))
    try:
        os.rename(path, target)  # the same file system: a FIFO or a link moves as itself
    except OSError:
        if note is not None:
            _note_of(target).unlink(missing_ok=True)
        raise
    return target


def inbox_files(inbox: Path) -> list[Path]:
    """What waits in the inbox, oldest first: every entry but folders and dot-names (temp
    files still being written). Symbolic links and special files are listed, to be refused."""
    try:
        with os.scandir(inbox) as found:
            entries = list(found)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise DigestError(f"cannot read the inbox {display_path(inbox)}: {exc.strerror}") from None
    waiting = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                continue
            mtime = entry.stat(follow_symlinks=False).st_mtime_ns
        except FileNotFoundError:
            continue  # taken away meanwhile
        waiting.append((mtime, entry.name, Path(entry.path)))
    return [path for _, _, path in sorted(waiting)]


def ingest_inbox(
    engine: Engine,
    inbox: Path,
    *,
    clock: Callable[[], datetime],
    progress: Progress | None = None,
) -> list[DumpResult]:
    """Ingest the inbox: each file then goes to ``processed/``, or to ``failed/`` with its
    error when it is bad in itself; a file that met a failure of the machine stays."""
    results = []
    for path in inbox_files(inbox):
        result = ingest_file(
            engine, path, clock=clock, source="inbox", progress=progress, follow_symlinks=False
        )
        if not result.retry:
            bad = result.status == "failed"
            try:
                moved = _move_aside(
                    path,
                    inbox / ("failed" if bad else "processed"),
                    note=(result.error or "failed") if bad else None,
                )
                result.path = display_path(moved)
            except OSError as exc:
                if bad:
                    why = f"cannot set it aside in failed/: {exc.strerror}"
                else:
                    why = f"ingested, but cannot move it to processed/: {exc.strerror}"
                result.status, result.retry = "failed", True
                result.error = f"{result.error}; {why}" if bad else f"{result.path}: {why}"
        if result.retry:
            result.error = f"{result.error}; left in the inbox, to be tried again"
        results.append(result)
    return results
