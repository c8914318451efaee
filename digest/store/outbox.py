"""The outbox: one digest row per subscriber per period, its items, and how sending went.

A paper goes into a subscriber's digests once (unique on subscriber and paper). Rows are
recorded when planned and marked as they are sent, each mark in its own short transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, col, select

from digest.clock import as_utc
from digest.store.engine import insert_or_skip, reading, transaction
from digest.store.models import Digest, DigestItem, Paper, Subscriber, TransportState
from digest.store.papers import PaperRow, paper_columns, reader
from digest.store.unsent import Carried

STATUSES = ("pending", "sending", "sent", "skipped", "failed")
_WAITING = ("pending", "sending")
_TRANSPORT = TransportState.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Planned:
    """A digest to record: its status, Message-ID, the ingest it reads up to, and its items
    as (paper id, score, stored explanation JSON), best first."""

    subscriber_id: int
    status: str
    message_id: str
    upto: int
    items: Sequence[tuple[int, float, str]]
    carried: Carried | None = None  # from the waiting digests it takes in (``fold_waiting``)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A digest still to send, with the subscriber it goes to."""

    digest_id: int
    period: date
    message_id: str
    subscriber_id: int
    email: str
    token_salt: str
    retried: bool = False  # tried before and still here: it goes after the fresh ones


@dataclass(frozen=True, slots=True)
class ItemRow:
    """A paper in a digest: its score, its stored explanation JSON, and when it went out."""

    digest_id: int
    subscriber_id: int
    score: float
    matched: str
    sent_at: datetime | None
    paper: PaperRow


def owed_subscribers(conn: Connection, period: date) -> list[Subscriber]:
    """Active subscribers with no digest recorded for ``period`` yet, by id."""
    done = sa.select(col(Digest.subscriber_id)).where(col(Digest.period) == period)
    with Session(bind=conn) as session:
        rows = list(
            session.exec(
                select(Subscriber)
                .where(col(Subscriber.status) == "active", col(Subscriber.id).not_in(done))
                .order_by(col(Subscriber.id))
            ).all()
        )
        for row in rows:
            session.expunge(row)
    return rows


def active_with_last(conn: Connection) -> list[tuple[Any, date | None]]:
    """Active subscribers with an hour of their own, by id, each as a plain row of their
    columns (read by name: no objects built, as this is read every quarter hour) with the
    period of their newest digest (None: none yet): what deciding whose own hour has come
    needs. Readers without an hour go at the site's schedule and are not read here."""
    newest = (
        sa.select(col(Digest.subscriber_id), sa.func.max(col(Digest.period)).label("last"))
        .group_by(col(Digest.subscriber_id))
        .subquery()
    )
    table = Subscriber.__table__  # type: ignore[attr-defined]
    query = (
        sa.select(table, newest.c.last)
        .outerjoin(newest, newest.c.subscriber_id == table.c.id)
        .where(table.c.status == "active", table.c.digest_hour.is_not(None))
        .order_by(table.c.id)
    )
    return [(row, row.last) for row in conn.execute(query)]


def subscribers_by_id(conn: Connection, ids: Collection[int]) -> list[Subscriber]:
    """The active subscribers with these ids, by id."""
    wanted = sorted(ids)
    rows: list[Subscriber] = []
    with Session(bind=conn) as session:
        for start in range(0, len(wanted), 1_000):
            rows.extend(
                session.exec(
                    select(Subscriber)
                    .where(
                        col(Subscriber.id).in_(wanted[start : start + 1_000]),
                        col(Subscriber.status) == "active",
                    )
                    .order_by(col(Subscriber.id))
                ).all()
            )
        for row in rows:
            session.expunge(row)
    return rows


def sent_pairs(
    conn: Connection, subscriber_ids: Collection[int], from_paper: int
) -> dict[int, set[int]]:
    """The papers with ids from ``from_paper`` on already in a digest of these subscribers."""
    sent: dict[int, set[int]] = {}
    for sub_id, paper_id in conn.execute(
        sa.select(col(DigestItem.subscriber_id), col(DigestItem.paper_id)).where(
            col(DigestItem.paper_id) >= from_paper
        )
    ).all():
        if sub_id in subscriber_ids:
            sent.setdefault(sub_id, set()).add(paper_id)
    return sent


def record(
    conn: Connection,
    planned: Sequence[Planned],
    *,
    period: date,
    now: datetime,
    run_id: int | None,
) -> None:
    """Write the digest rows and their items in bulk, and move each subscriber's cut-off."""
    if not planned:
        return
    now = as_utc(now, naive="refuse")
    conn.execute(
        sa.insert(Digest),
        [
            {
                "subscriber_id": p.subscriber_id,
                "period": period,
                "status": p.status,
                "message_id": p.message_id,
                "created_at": now if p.carried is None else p.carried.since,
                "run_id": run_id,
                "attempts": 0 if p.carried is None else p.carried.attempts,
                "first_attempt_at": None if p.carried is None else p.carried.first_attempt_at,
                "last_error": None if p.carried is None else p.carried.last_error,
            }
            for p in planned
        ],
    )
    digest_of = dict(
        conn.execute(
            sa.select(col(Digest.subscriber_id), col(Digest.id)).where(col(Digest.period) == period)
        ).all()
    )
    items = [
        {
            "digest_id": digest_of[p.subscriber_id],
            "subscriber_id": p.subscriber_id,
            "paper_id": paper_id,
            "rank": rank,
            "score": score,
            "matched": matched,
        }
        for p in planned
        for rank, (paper_id, score, matched) in enumerate(p.items, 1)
    ]
    if items:
        conn.execute(sa.insert(DigestItem), items)
    conn.execute(
        sa.update(Subscriber)
        .where(col(Subscriber.id) == sa.bindparam("_id"))
        .values(last_digest_at=now, seen_upto=sa.bindparam("_upto")),
        [{"_id": p.subscriber_id, "_upto": p.upto} for p in planned],
    )


def load(
    engine: Engine, *, after: int = 0, limit: int | None = None, retried: bool | None = None
) -> list[OutboxRow]:
    """The digests still to send (pending, or caught mid-send by a crash) of active
    subscribers after digest id ``after``, oldest first; ``retried`` True: only those tried
    before (they carry an error), False: only the others."""
    query: Any = (
        sa.select(
            col(Digest.id).label("digest_id"),
            col(Digest.period).label("period"),
            col(Digest.message_id).label("message_id"),
            col(Subscriber.id).label("subscriber_id"),
            col(Subscriber.email).label("email"),
            col(Subscriber.token_salt).label("token_salt"),
            col(Digest.last_error).is_not(None).label("retried"),
        )
        .join(Subscriber, col(Subscriber.id) == col(Digest.subscriber_id))
        .where(
            col(Digest.status).in_(_WAITING),
            col(Subscriber.status) == "active",
            col(Digest.id) > after,
        )
        .order_by(col(Digest.id))
    )
    if retried is not None:
        tried = col(Digest.last_error).is_not(None)
        query = query.where(tried if retried else sa.not_(tried))
    if limit is not None:
        query = query.limit(limit)
    with reading(engine) as conn:
        rows = [
            OutboxRow(
                digest_id=row.digest_id,
                period=row.period,
                message_id=row.message_id,
                subscriber_id=row.subscriber_id,
                email=row.email,
                token_salt=row.token_salt,
                retried=bool(row.retried),
            )
            for row in conn.execute(query)
        ]
        conn.rollback()
    return rows


def _item_rows(conn: Connection, query: Any) -> list[ItemRow]:
    result = conn.execute(query)
    paper = reader(result.keys(), "paper_")
    return [
        ItemRow(
            digest_id=row.digest_id,
            subscriber_id=row.subscriber_id,
            score=row.score,
            matched=row.matched,
            sent_at=row.sent_at,
            paper=paper(row),
        )
        for row in result
    ]


def items_of(conn: Connection, digest_ids: Sequence[int]) -> dict[int, list[ItemRow]]:
    """The items of each digest, in rank order."""
    items: dict[int, list[ItemRow]] = {d: [] for d in digest_ids}
    if not digest_ids:
        return items
    query = (
        sa.select(
            col(DigestItem.digest_id),
            col(DigestItem.subscriber_id),
            col(DigestItem.score),
            col(DigestItem.matched),
            sa.null().label("sent_at"),
            *paper_columns("paper_"),
        )
        .join(Paper, col(Paper.id) == col(DigestItem.paper_id))
        .where(col(DigestItem.digest_id).in_(digest_ids))
        .order_by(col(DigestItem.digest_id), col(DigestItem.rank))
    )
    for item in _item_rows(conn, query):
        items[item.digest_id].append(item)
    return items


@dataclass(frozen=True, slots=True)
class SentItem:
    """A paper that went to a subscriber: which, why (its stored explanation JSON), when."""

    subscriber_id: int
    paper_id: int
    matched: str
    sent_at: datetime


_NUMBERED = (
    sa.select(
        col(DigestItem.subscriber_id),
        col(DigestItem.paper_id),
        col(DigestItem.matched),
        col(Digest.sent_at),
        sa.func.row_number()
        .over(
            partition_by=col(DigestItem.subscriber_id),
            order_by=(col(Digest.sent_at).desc(), col(DigestItem.rank)),
        )
        .label("n"),
    )
    .join(Digest, col(Digest.id) == col(DigestItem.digest_id))
    .join(Paper, col(Paper.id) == col(DigestItem.paper_id))
    .where(
        col(Digest.status) == "sent",
        col(DigestItem.subscriber_id).in_(sa.bindparam("ids", expanding=True)),
    )
    .subquery()
)
_SENT_ITEMS = (
    sa.select(
        _NUMBERED.c.subscriber_id, _NUMBERED.c.paper_id, _NUMBERED.c.matched, _NUMBERED.c.sent_at
    )
    .where(_NUMBERED.c.n <= sa.bindparam("limit"))
    .order_by(_NUMBERED.c.subscriber_id, _NUMBERED.c.n)
)


def sent_items(conn: Connection, subscriber_ids: Sequence[int], limit: int) -> list[SentItem]:
    """The newest ``limit`` items sent to each of these subscribers, by subscriber, newest
    first: the papers by id (a paper goes to many readers: ``papers.by_ids`` reads each
    once)."""
    if not subscriber_ids:
        return []
    rows = conn.execute(_SENT_ITEMS, {"ids": list(subscriber_ids), "limit": limit})
    return [SentItem(*row) for row in rows]


# Built once: these run for every message, and building a statement costs more than running it.
# An attempt is counted when the server answered about the recipient: here, or in a failure.
_SENT = (
    sa.update(Digest)
    .where(col(Digest.id) == sa.bindparam("_id"))
    .values(
        status="sent",
        sent_at=sa.bindparam("_at"),
        last_error=None,
        attempts=col(Digest.attempts) + 1,
    )
)
_UNSENT = (
    sa.update(Digest)
    .where(col(Digest.id) == sa.bindparam("_id"))
    .values(status="pending", last_error=sa.bindparam("_error"))
)


def mark_sent(engine: Engine, digest_id: int, at: datetime) -> None:
    """The transport took the digest."""
    with transaction(engine) as conn:
        conn.execute(_SENT, {"_id": digest_id, "_at": as_utc(at, naive="refuse")})


def mark_unsent(engine: Engine, digest_id: int, error: str) -> None:
    """Back to pending at no cost: the failure was nobody's fault."""
    with transaction(engine) as conn:
        conn.execute(_UNSENT, {"_id": digest_id, "_error": error[:500]})


def mark_failed(engine: Engine, digest_id: int, reason: str) -> None:
    """This digest cannot go out: set aside, with why."""
    with transaction(engine) as conn:
        conn.execute(
            sa.update(Digest)
            .where(col(Digest.id) == digest_id)
            .values(status="failed", last_error=reason[:500])
        )


def counts(conn: Connection) -> dict[str, int]:
    """Digests by status."""
    query = sa.select(col(Digest.status), sa.func.count()).group_by(col(Digest.status))
    rows = conn.execute(query).all()
    found = dict.fromkeys(STATUSES, 0)
    found.update({status: int(n) for status, n in rows})
    return found


def withdraw_unwanted(engine: Engine) -> int:
    """Digests still waiting for a subscriber who has left since (unsubscribed, bounced, or
    not active for another reason) are never sent: they are marked skipped, with why."""
    left = sa.select(col(Subscriber.id)).where(col(Subscriber.status) != "active")
    waiting = col(Digest.status).in_(_WAITING)
    with transaction(engine) as conn:
        reasons = conn.execute(
            sa.select(col(Subscriber.status), sa.func.count())
            .join(Digest, col(Digest.subscriber_id) == col(Subscriber.id))
            .where(waiting, col(Subscriber.status) != "active")
            .group_by(col(Subscriber.status))
        ).all()
        for status, _ in reasons:
            conn.execute(
                sa.update(Digest)
                .where(
                    waiting,
                    col(Digest.subscriber_id).in_(left.where(col(Subscriber.status) == status)),
                )
                .values(
                    status="skipped",
                    last_error=f"not sent: the subscriber was {status} before it went out",
                )
            )
    return sum(count for _, count in reasons)


def pending_reason(conn: Connection) -> str | None:
    """Why digests are still waiting to be sent: the newest failure among them, or why they
    were not tried; None when nothing waits."""
    row = conn.execute(
        sa.select(col(Digest.last_error), col(Subscriber.status))
        .join(Subscriber, col(Subscriber.id) == col(Digest.subscriber_id))
        .where(col(Digest.status).in_(_WAITING))
        .order_by(col(Digest.last_error).is_(None), col(Digest.id).desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    if row.last_error:
        return str(row.last_error)
    if row.status != "active":
        return f"the subscriber is {row.status}"
    return "not tried yet"


def record_transport(
    engine: Engine, label: str, *, gave_up: str | None, sent: int, now: datetime
) -> None:
    """Remember how the transport fared: the error that stopped sending and since when it
    has been failing, or that it worked. A pass that tried nothing changes nothing."""
    now = as_utc(now, naive="refuse")
    if gave_up:
        values: dict[str, Any] = {"last_error": gave_up[:500], "last_failure_at": now}
    elif sent:
        values = {"last_error": None, "failing_since": None, "last_ok_at": now}
    else:
        return
    with transaction(engine) as conn:
        since = conn.execute(
            sa.select(_TRANSPORT.c.id, _TRANSPORT.c.failing_since).where(
                _TRANSPORT.c.transport == label
            )
        ).first()
        if gave_up:
            values["failing_since"] = since.failing_since if since and since.failing_since else now
        if since is not None:
            conn.execute(sa.update(_TRANSPORT).where(_TRANSPORT.c.id == since.id).values(**values))
            return
        # senders on other hosts may record the same transport's first pass at once
        made = conn.execute(
            insert_or_skip(conn, _TRANSPORT)
            .values(transport=label, **values)
            .on_conflict_do_nothing(index_elements=[_TRANSPORT.c.transport])
        )
        if not made.rowcount:
            conn.execute(
                sa.update(_TRANSPORT).where(_TRANSPORT.c.transport == label).values(**values)
            )


def transport_state(conn: Connection, label: str) -> dict[str, Any] | None:
    """What ``record_transport`` remembers of the transport ``label``."""
    row = conn.execute(sa.select(_TRANSPORT).where(_TRANSPORT.c.transport == label)).first()
    return None if row is None else dict(row._mapping)


def recent_failures(conn: Connection, since: datetime, limit: int = 20) -> list[Any]:
    """Digests failed since ``since``, newest first: (period, email, last_error)."""
    return list(
        conn.execute(
            sa.select(col(Digest.period), col(Subscriber.email), col(Digest.last_error))
            .join(Subscriber, col(Subscriber.id) == col(Digest.subscriber_id))
            .where(col(Digest.status) == "failed", col(Digest.created_at) >= since)
            .order_by(col(Digest.id).desc())
            .limit(limit)
        ).all()
    )


@dataclass(frozen=True, slots=True)
class FeedState:
    """What a private feed depends on: the subscriber's status and salt, when they were last
    sent a digest (as the database gives it: only compared), and the newest ingest (papers'
    text can change when listed again)."""

    status: str
    token_salt: str
    last_sent: object
    ingest: int


# The status is tested inside max(), not in the WHERE: with ``d.status = 'sent'`` there,
# SQLite reads the digests through the (status, id) index, every sent digest of everyone
# (17 ms a poll at 20,000 digests), instead of the few of this subscriber.
_FEED_STATE = (
    "SELECT s.status, s.token_salt,"
    " (SELECT max(CASE WHEN d.status = 'sent' THEN d.sent_at END) FROM digest d"
    " WHERE d.subscriber_id = s.id),"
    " (SELECT value FROM ingest_sequence)"
    " FROM subscriber s WHERE s.id = {mark}"
)


def feed_state(engine: Engine, subscriber_id: int) -> FeedState | None:
    """The :class:`FeedState` of a subscriber; None when there is none.

    One statement on a pooled driver connection, outside any transaction of ours: a feed
    reader's conditional poll is this query and nothing else, and the Core execution and
    transaction around it would cost four times the query.
    """
    mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(_FEED_STATE.format(mark=mark), (subscriber_id,))
        row = cursor.fetchone()
        cursor.close()
    finally:
        raw.close()
    if row is None:
        return None
    return FeedState(str(row[0]), str(row[1]), row[2], int(row[3]))
