"""Digests that did not go out: what a failure costs, when a digest fails for good, the
papers such a digest gives back, the waiting digests a later one takes in, and how long
digests have waited.

A digest is out of attempts only when it has used ``max_attempts`` and the first was
made ``fail_after`` ago; a digest that will never go out hands its papers back, so no
reader loses a paper to a mail server's bad days.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import col

from digest.clock import as_utc
from digest.store.engine import transaction
from digest.store.models import Digest, DigestItem, Paper, Subscriber

_WAITING = ("pending", "sending")
_CHUNK = 500  # ids in one IN (...): well under every database's limit on parameters


@dataclass(frozen=True, slots=True)
class Carried:
    """What a reader's waiting digest hands on to the one that takes it in: its attempts,
    when the first was made, its last error, and since when the reader has been waiting
    (the new digest's ``created_at``, so the age health looks at does not start again)."""

    attempts: int
    first_attempt_at: datetime | None
    last_error: str | None
    since: datetime
    seen_upto: int | None = None  # the reader's cut-off, moved back before the papers given back


def held_by(sender: str | sa.BindParameter[str]) -> Any:
    """The condition that a digest is still ``sender``'s claim: its name on it, and not sent
    or settled since. Every outcome a sender writes is written under it (``claims.mark_sent``,
    ``outbox.mark_unsent``, ``outbox.mark_failed``, ``record_failure``): a sender whose lease
    ran out and whose digest another sender took (taking it writes the taker's name) writes
    nothing over the other's outcome. A lease that ran out with nobody taking the digest
    leaves it the sender's: nobody else can have sent it."""
    return sa.and_(col(Digest.claimed_by) == sender, col(Digest.status).in_(_WAITING))


def record_failure(
    engine: Engine,
    digest_id: int,
    subscriber_id: int,
    *,
    sender: str,
    error: str,
    counts: bool,
    permanent: bool,
    max_attempts: int,
    fail_after: timedelta,
    now: datetime,
) -> str | None:
    """Record a failed send by ``sender``, only while it holds the digest's claim (``held_by``);
    returns what became of the digest: "bounced" (the subscriber too), "failed" (out of
    attempts, the first made at least ``fail_after`` ago: its papers go back to the reader's
    next digest), "pending" (tried again later), or None: the claim was lost, and nothing
    was written."""
    error = error[:500]
    now = as_utc(now, naive="refuse")
    held = held_by(sender)
    with transaction(engine) as conn:
        # FOR UPDATE: a sender claiming the digest now waits for this transaction (or skips
        # the row), and one that took it first leaves nothing here to find (PostgreSQL reads
        # the row again after the wait); SQLite writes one transaction at a time
        found = conn.execute(
            sa.select(col(Digest.attempts), col(Digest.first_attempt_at))
            .where(col(Digest.id) == digest_id, held)
            .with_for_update()
        ).first()
        if found is None:
            return None
        attempts, first = found
        if counts:
            attempts += 1
            first = first or now
        spread = first is not None and now - as_utc(first) >= fail_after
        used_up = attempts >= max_attempts and spread
        outcome = "bounced" if permanent else "failed" if used_up else "pending"
        if outcome == "failed":
            papers = give_back(conn, {digest_id: subscriber_id})[0].get(digest_id)
            if papers:
                error = f"{error[:400]} (its {papers} paper(s) go to the reader's next digest)"
        conn.execute(
            sa.update(Digest)
            .where(col(Digest.id) == digest_id, held)
            .values(
                status="pending" if outcome == "pending" else "failed",
                attempts=attempts,
                first_attempt_at=first,
                last_error=error,
            )
        )
        if permanent:
            conn.execute(
                sa.update(Subscriber)
                .where(col(Subscriber.id) == subscriber_id)
                .values(status="bounced")
            )
    return outcome


def give_back(conn: Connection, digests: dict[int, int]) -> tuple[dict[int, int], dict[int, int]]:
    """Digests that will never go out (``digests``: id to subscriber id) hand their papers
    back: their items are dropped and each reader's cut-off moves back before them, so the
    reader's next digest ranks them again. Returns how many papers each digest held, and
    the cut-off each reader's may have moved back to."""
    ids = list(digests)
    held: dict[int, int] = {}
    before: dict[int, int] = {}  # subscriber id -> the cut-off that takes their papers in again
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        found = conn.execute(
            sa.select(col(DigestItem.digest_id), sa.func.min(col(Paper.seq)), sa.func.count())
            .join(Paper, col(Paper.id) == col(DigestItem.paper_id))
            .where(col(DigestItem.digest_id).in_(chunk))
            .group_by(col(DigestItem.digest_id))
        ).all()
        for digest_id, first_seq, papers in found:
            held[int(digest_id)] = int(papers)
            sid = digests[int(digest_id)]
            before[sid] = min(before.get(sid, int(first_seq) - 1), int(first_seq) - 1)
        conn.execute(sa.delete(DigestItem).where(col(DigestItem.digest_id).in_(chunk)))
    if before:
        conn.execute(
            sa.update(Subscriber)
            .where(
                col(Subscriber.id) == sa.bindparam("_id"),
                col(Subscriber.seen_upto) > sa.bindparam("_before"),
            )
            .values(seen_upto=sa.bindparam("_before")),
            [{"_id": sid, "_before": cut} for sid, cut in before.items()],
        )
    return held, before


def fold_waiting(
    conn: Connection, subscriber_ids: Collection[int], *, into: date
) -> dict[int, Carried]:
    """Digests of these subscribers still pending from periods before ``into`` (the mail
    server was down, or the machine off) are taken into the digest about to be planned for
    ``into``: each gives its papers back and is marked skipped, with why, so a reader gets
    one digest after an outage rather than one per missed period. Returns, by subscriber,
    what the new digest carries on (attempts count across them all)."""
    rows = conn.execute(
        sa.select(
            col(Digest.id),
            col(Digest.subscriber_id),
            col(Digest.attempts),
            col(Digest.first_attempt_at),
            col(Digest.last_error),
            col(Digest.created_at),
        )
        .where(col(Digest.status) == "pending", col(Digest.period) < into)
        .order_by(col(Digest.id))
    ).all()
    carried: dict[int, Carried] = {}
    folded: dict[int, int] = {}
    for digest_id, sid, attempts, first, error, since in rows:
        if sid not in subscriber_ids:
            continue
        folded[int(digest_id or 0)] = sid
        since = as_utc(since)
        before = carried.get(sid)
        if before is not None:  # newer last: its error is the one to keep
            attempts = max(attempts, before.attempts)
            firsts = [as_utc(t) for t in (first, before.first_attempt_at) if t is not None]
            first = min(firsts, default=None)
            error = error or before.last_error
            since = min(since, before.since)
        carried[sid] = Carried(attempts, first, error, since)
    _, cutoffs = give_back(conn, folded)
    for sid, cut in cutoffs.items():
        carried[sid] = replace(carried[sid], seen_upto=cut)
    ids = list(folded)
    for start in range(0, len(ids), _CHUNK):
        conn.execute(
            sa.update(Digest)
            .where(col(Digest.id).in_(ids[start : start + _CHUNK]))
            .values(status="skipped", last_error=f"not sent: taken into the digest of {into}")
        )
    return carried


def waiting_ages(
    conn: Connection, now: datetime, bounds: Sequence[timedelta]
) -> tuple[datetime | None, int, list[int]]:
    """Since when the oldest digest still to send has waited (None: none waits), how many
    wait, and how many have waited longer than each of ``bounds``."""
    now = as_utc(now, naive="refuse")
    waiting = col(Digest.status).in_(_WAITING)
    row = conn.execute(
        sa.select(
            sa.func.min(col(Digest.created_at)),
            sa.func.count(),
            *(
                sa.func.coalesce(
                    sa.func.sum(sa.case((col(Digest.created_at) < now - bound, 1), else_=0)), 0
                )
                for bound in bounds
            ),
        ).where(waiting)
    ).one()
    oldest = as_utc(row[0]) if row[0] is not None else None
    return oldest, int(row[1]), [int(n) for n in row[2:]]
