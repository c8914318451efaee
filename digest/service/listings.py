"""``digest ingest`` and ``digest papers``: listings in, the listings ingested, and taking a
bad one back.

A listing is named by its id (``digest papers listings`` shows them) or by the file
itself, wherever it lies now (the inbox moves it to ``processed/``): its bytes are what
the store knows it by.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import Engine

from digest.errors import UsageError
from digest.ingest.dumps import Clock as Clock  # the command keeps one for all its dumps
from digest.ingest.dumps import DumpResult as DumpResult  # each dump, as the command reports it
from digest.ingest.dumps import file_sha256, ingest_inbox, ingest_paths
from digest.store.engine import reading, transaction, write_lock
from digest.store.listings import (
    ListingRow,
    Removal,
    listing_by,
    listings,
    remove_listing,
)
from digest.store.listings import listing_json as listing_json  # as ``--json`` prints it


def ingest_dumps(
    engine: Engine,
    *,
    inbox: Path | None,
    paths: Sequence[Path],
    clock: Clock,
    progress: Callable[[str, int], None] | None = None,
    defer_index: bool = False,
) -> list[DumpResult]:
    """Ingest the inbox (when given), then ``paths``, one transaction per dump; each dump's
    result, in that order."""
    results: list[DumpResult] = []
    if inbox is not None:
        results += ingest_inbox(engine, inbox, clock=clock, progress=progress)
    if paths:
        results += ingest_paths(
            engine, list(paths), clock=clock, progress=progress, defer_index=defer_index
        )
    return results


class _DryRun(Exception):
    """Rolls back a removal that was only to be shown."""

    def __init__(self, removal: Removal) -> None:
        self.removal = removal


def recent_listings(engine: Engine, limit: int) -> list[ListingRow]:
    """The listings ingested last, newest first."""
    with reading(engine) as conn:
        found = listings(conn, limit)
        conn.rollback()
    return found


def find_listing(engine: Engine, what: str) -> ListingRow:
    """The listing ``what`` names (an id, or a file with its bytes), or a UsageError."""
    path = Path(what)
    if what.isdigit() and not path.exists():
        with reading(engine) as conn:
            found = listing_by(conn, ident=int(what))
            conn.rollback()
        if found is None:
            raise UsageError(f"no listing with id {what} (see digest papers listings)")
        return found
    if not path.is_file():
        raise UsageError(f"--listing {what}: neither a listing id nor a file")
    try:
        sha = file_sha256(path)
    except OSError as exc:
        raise UsageError(f"--listing {what}: cannot read it ({exc.strerror or exc})") from None
    with reading(engine) as conn:
        found = listing_by(conn, sha256=sha)
        conn.rollback()
    if found is None:
        raise UsageError(
            f"--listing {what}: these bytes were never ingested (see digest papers listings)"
        )
    return found


def take_back(engine: Engine, what: str, now: datetime, *, dry_run: bool = False) -> Removal:
    """Remove the listing ``what`` names and the papers only it brought (``dry_run``: say
    what that would do, and change nothing)."""
    listing = find_listing(engine, what)
    try:
        with transaction(engine) as conn:
            write_lock(conn)
            removal = remove_listing(conn, listing, now)
            if dry_run:
                raise _DryRun(removal)
    except _DryRun as undone:
        return undone.removal
    return removal


def listing_line(row: ListingRow) -> str:
    """One listing as ``digest papers listings`` shows it."""
    when = row.ingested_at.strftime("%Y-%m-%d %H:%M")
    listed = f", listed {row.listing_date.isoformat()}" if row.listing_date else ""
    state = f", removed {row.removed_at:%Y-%m-%d %H:%M}" if row.removed_at else ""
    return (
        f"{row.id:>5}  {when}  {row.name} ({row.layout or 'unknown layout'}{listed}):"
        f" {row.entries} entries, {row.new} new, {row.seen} seen{state}"
    )


def removal_lines(removal: Removal, *, dry_run: bool) -> list[str]:
    """What ``digest papers remove`` did (or would do)."""
    row = removal.listing
    name = f"listing {row.id} ({row.name})"
    if removal.already:
        when = f"{row.removed_at:%Y-%m-%d %H:%M}" if row.removed_at else "earlier"
        return [f"{name} was removed {when}; nothing changed"]
    lines = [
        f"{'would remove' if dry_run else 'removed'} {name}:"
        f" {removal.deleted} papers deleted (no other listing had them),"
        f" {removal.kept} kept (also in another listing; seen once less)",
        f"  digests not yet sent: {removal.unsent_items} items taken out,"
        f" {removal.emptied} left empty and skipped",
    ]
    if removal.sent_items:
        lines.append(
            f"  digests already sent: {removal.sent_items} items had gone out by mail;"
            " they are no longer listed in feeds or history"
        )
    if removal.votes:
        lines.append(f"  {removal.votes} readers' votes on the deleted papers removed")
    if dry_run:
        lines.append("dry run: nothing changed")
    return lines
