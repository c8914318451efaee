"""The listings ingested, as an operator sees them, and taking one back.

A dump brought two kinds of papers: those it added (they carry its ingest number,
``paper.seq == dump.seq``) and known ones it saw again (``dumppaper``). Taking it back
counts each of them seen once less; a paper that no other dump has seen (its count falls
to nothing) is deleted, with its place in every digest and the readers' votes on it. A
paper another dump also listed stays. Digests not yet sent lose the deleted papers, and
one left with none is skipped as planning would have; digests already sent keep what
went out in the mail, but no longer list those papers (feeds, history). The dump's row
stays, marked removed, so the same bytes are not ingested again by the next run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from digest.clock import as_utc
from digest.store.engine import next_ingest_sequence
from digest.store.models import Digest, DigestItem, Dump, DumpPaper, Feedback, Paper, Subscriber
from digest.store.papers import PARAMETERS

_DUMP = Dump.__table__  # type: ignore[attr-defined]
_DUMP_PAPER = DumpPaper.__table__  # type: ignore[attr-defined]
_PAPER = Paper.__table__  # type: ignore[attr-defined]
_DIGEST = Digest.__table__  # type: ignore[attr-defined]
_ITEM = DigestItem.__table__  # type: ignore[attr-defined]
_FEEDBACK = Feedback.__table__  # type: ignore[attr-defined]
_SUBSCRIBER = Subscriber.__table__  # type: ignore[attr-defined]
_UNSENT = ("pending", "sending")
REMOVED = "removed"


@dataclass(frozen=True, slots=True)
class ListingRow:
    """One dump ingested: where it came from, what it brought, whether it was taken back."""

    id: int
    name: str
    sha256: str
    source: str
    layout: str
    listing_date: date | None
    ingested_at: datetime
    entries: int
    new: int
    seen: int
    status: str
    removed_at: datetime | None


@dataclass(frozen=True, slots=True)
class Removal:
    """What taking a listing back did."""

    listing: ListingRow
    deleted: int  # papers no other listing had: gone
    kept: int  # papers another listing also had: seen once less
    unsent_items: int  # places in digests not yet sent, taken out
    emptied: int  # digests not yet sent left with nothing: skipped
    sent_items: int  # places in digests already mailed (they went out; no longer listed)
    votes: int  # readers' votes on the deleted papers
    already: bool = False  # it had been taken back before: nothing changed

    def as_json(self) -> dict[str, Any]:
        """Plain JSON values: the listing and the figures."""
        return {
            "listing": listing_json(self.listing),
            "already_removed": self.already,
            "papers_deleted": self.deleted,
            "papers_kept": self.kept,
            "unsent_items_removed": self.unsent_items,
            "unsent_digests_skipped": self.emptied,
            "sent_items_removed": self.sent_items,
            "votes_removed": self.votes,
        }


_COLUMNS = tuple(_DUMP.c[name] for name in ListingRow.__slots__)


def listing_json(row: ListingRow) -> dict[str, Any]:
    """A listing as ``--json`` prints it: dates and times in ISO form."""
    data = {name: getattr(row, name) for name in ListingRow.__slots__}
    for name in ("listing_date", "ingested_at", "removed_at"):
        value = data[name]
        data[name] = value.isoformat() if value is not None else None
    return data


def _listing(values: Any) -> ListingRow:
    found = dict(values._mapping)
    found["ingested_at"] = as_utc(found["ingested_at"])
    if found["removed_at"] is not None:
        found["removed_at"] = as_utc(found["removed_at"])
    return ListingRow(**found)


def listings(conn: Connection, limit: int) -> list[ListingRow]:
    """The ``limit`` listings ingested last, newest first."""
    query = sa.select(*_COLUMNS).order_by(_DUMP.c.id.desc()).limit(limit)
    return [_listing(row) for row in conn.execute(query)]


def listing_by(
    conn: Connection, *, ident: int | None = None, sha256: str = ""
) -> ListingRow | None:
    """The listing with this id, or with these exact bytes; None when there is none."""
    where = _DUMP.c.id == ident if ident is not None else _DUMP.c.sha256 == sha256
    found = conn.execute(sa.select(*_COLUMNS).where(where)).first()
    return None if found is None else _listing(found)


def remove_listing(conn: Connection, listing: ListingRow, now: datetime) -> Removal:
    """Take ``listing`` back in this transaction (see the module's notes)."""
    if listing.status == REMOVED:
        return Removal(listing, 0, 0, 0, 0, 0, 0, already=True)
    now = as_utc(now, naive="refuse")
    # Taken first: the counter row is locked until commit, so an ingest (which takes it
    # too) cannot see these papers again meanwhile; and feeds and pages, cached by the
    # ingest number, read the store afresh.
    next_ingest_sequence(conn)
    seq = conn.execute(sa.select(_DUMP.c.seq).where(_DUMP.c.id == listing.id)).scalar()
    added = sa.select(_PAPER.c.id).where(_PAPER.c.seq == seq) if seq is not None else None
    again = sa.select(_DUMP_PAPER.c.paper_id).where(_DUMP_PAPER.c.dump_id == listing.id)
    brought = again if added is None else sa.union(added, again)
    ids = sorted(conn.execute(brought).scalars())
    gone: list[int] = []
    for part in _parts(ids):
        gone += conn.execute(
            sa.select(_PAPER.c.id).where(_PAPER.c.id.in_(part), _PAPER.c.times_seen <= 1)
        ).scalars()
        conn.execute(
            sa.update(_PAPER)
            .where(_PAPER.c.id.in_(part), _PAPER.c.times_seen > 1)
            .values(times_seen=_PAPER.c.times_seen - 1)
        )
    unsent, sent, emptied, votes = _forget(conn, gone)
    conn.execute(sa.delete(_DUMP_PAPER).where(_DUMP_PAPER.c.dump_id == listing.id))
    conn.execute(
        sa.update(_DUMP).where(_DUMP.c.id == listing.id).values(status=REMOVED, removed_at=now)
    )
    done = listing_by(conn, ident=listing.id)
    assert done is not None  # updated just above, in this transaction
    return Removal(done, len(gone), len(ids) - len(gone), unsent, emptied, sent, votes)


def _parts(ids: list[int]) -> list[list[int]]:
    return [ids[start : start + PARAMETERS] for start in range(0, len(ids), PARAMETERS)]


def _forget(conn: Connection, papers: list[int]) -> tuple[int, int, int, int]:
    """Delete ``papers`` and every row naming them; returns the places in unsent and sent
    digests removed, the unsent digests left empty (now skipped), and the votes removed."""
    unsent = sent = votes = 0
    touched: set[int] = set()
    for part in _parts(papers):
        for digest_id, status in conn.execute(
            sa.select(_ITEM.c.digest_id, _DIGEST.c.status)
            .join(_DIGEST, _DIGEST.c.id == _ITEM.c.digest_id)
            .where(_ITEM.c.paper_id.in_(part))
        ):
            if status in _UNSENT:
                unsent += 1
                touched.add(digest_id)
            else:
                sent += 1
        conn.execute(sa.delete(_ITEM).where(_ITEM.c.paper_id.in_(part)))
        votes += conn.execute(sa.delete(_FEEDBACK).where(_FEEDBACK.c.paper_id.in_(part))).rowcount
        conn.execute(sa.delete(_DUMP_PAPER).where(_DUMP_PAPER.c.paper_id.in_(part)))
        conn.execute(sa.delete(_PAPER).where(_PAPER.c.id.in_(part)))
    emptied = 0
    if touched:
        # Left with nothing: skipped, as planning skips an empty digest unless the reader
        # asked for "nothing new" mails; one being handed to the transport right now is left.
        still = sa.select(_ITEM.c.digest_id).where(_ITEM.c.digest_id == _DIGEST.c.id).exists()
        quiet = sa.select(_SUBSCRIBER.c.id).where(_SUBSCRIBER.c.send_empty.is_(False))
        for part in _parts(sorted(touched)):
            emptied += conn.execute(
                sa.update(_DIGEST)
                .where(
                    _DIGEST.c.id.in_(part),
                    _DIGEST.c.status == "pending",
                    ~still,
                    _DIGEST.c.subscriber_id.in_(quiet),
                )
                .values(
                    status="skipped",
                    last_error="not sent: every paper in it was taken back with its listing",
                )
            ).rowcount
    return unsent, sent, emptied, votes
