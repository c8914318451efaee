"""The outbox: one digest row per subscriber per period, its items, and how sending went.

A paper goes into a subscriber's digests once (unique on subscriber and paper). Rows are
recorded when planned and marked as they are sent, each mark in its own short transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, col, select

from digest.clock import as_utc
from digest.store.engine import driver_mark, insert_or_skip, read_form, reading, transaction
from digest.store.feed_rows import newest_sent
from digest.store.models import Digest, DigestItem, Subscriber, TransportState
from digest.store.papers import PARAMETERS, PaperRow, by_ids, reader
from digest.store.unsent import Carried, held_by

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


@dataclass(frozen=True, slots=True)
class Recipient:
    """A reader a digest is planned for: who gets it, and whether an empty one goes out."""

    id: int
    email: str
    token_salt: str
    send_empty: bool


# What planning reads of each reader before ranking any: whether and for when they are due,
# where their last digest stopped, and their profile.
_PLANNING = ("id", "frequency", "digest_hour", "seen_upto", "interests", "max_items", "min_score")
_ROWS_AT_ONCE = 2_000  # rows a streamed query fetches at a time (a cursor on PostgreSQL)


def owed_readers(conn: Connection, period: date) -> Iterator[Any]:
    """Active subscribers with no digest recorded for ``period`` yet, by id, streamed as plain
    rows of what planning reads of them (by name: ``id``, ``frequency``, ``digest_hour``,
    ``seen_upto``, ``interests``, ``max_items``, ``min_score``); no objects built, and never
    every row in memory at once."""
    table = Subscriber.__table__  # type: ignore[attr-defined]
    done = sa.select(col(Digest.subscriber_id)).where(col(Digest.period) == period)
    query = (
        sa.select(*(table.c[name] for name in _PLANNING))
        .where(table.c.status == "active", table.c.id.not_in(done))
        .order_by(table.c.id)
        .execution_options(yield_per=_ROWS_AT_ONCE)
    )
    yield from conn.execute(query)


def recipients(conn: Connection, ids: Collection[int]) -> dict[int, Recipient]:
    """The active subscribers with these ids as ``Recipient``s, by id."""
    wanted = sorted(ids)
    table = Subscriber.__table__  # type: ignore[attr-defined]
    query = sa.select(table.c.id, table.c.email, table.c.token_salt, table.c.send_empty)
    found: dict[int, Recipient] = {}
    for start in range(0, len(wanted), PARAMETERS):
        part = wanted[start : start + PARAMETERS]
        for row in conn.execute(query.where(table.c.id.in_(part), table.c.status == "active")):
            found[row.id] = Recipient(row.id, row.email, row.token_salt, bool(row.send_empty))
    return found


def sent_pairs(
    conn: Connection, subscriber_ids: Collection[int], from_paper: int
) -> dict[int, set[int]]:
    """The papers with ids from ``from_paper`` on already in a digest of these subscribers."""
    wanted = sorted(subscriber_ids)
    sent: dict[int, set[int]] = {}
    query = sa.select(col(DigestItem.subscriber_id), col(DigestItem.paper_id))
    for start in range(0, len(wanted), PARAMETERS):
        part = wanted[start : start + PARAMETERS]
        for sub_id, paper_id in conn.execute(
            query.where(
                col(DigestItem.subscriber_id).in_(part), col(DigestItem.paper_id) >= from_paper
            )
        ):
            sent.setdefault(sub_id, set()).add(paper_id)
    return sent


_ITEM = DigestItem.__table__  # type: ignore[attr-defined]
_ITEM_COLUMNS = ("digest_id", "subscriber_id", "paper_id", "rank", "score", "matched")


def insert_many(
    conn: Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """Many rows into one table, the quickest way the driver has: ``COPY`` on PostgreSQL
    (a quarter of the time of a multi-row ``INSERT``), and on SQLite a plain ``executemany``
    of tuples (SQLAlchemy's handling of each row's parameters cost as much as SQLite's
    insert). The same rows, in the same order, as an ``INSERT``."""
    names = ", ".join(columns)
    if conn.dialect.name == "postgresql":
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    elif conn.dialect.paramstyle == "qmark":
        marks = ", ".join("?" for _ in columns)
        conn.exec_driver_sql(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", rows)
    else:
        conn.execute(sa.insert(table), [dict(zip(columns, row, strict=True)) for row in rows])


def record(
    conn: Connection,
    planned: Sequence[Planned],
    *,
    period: date,
    now: datetime,
    run_id: int | None,
) -> None:
    """Write the digest rows and their items in bulk, and move each subscriber's cut-off.

    Called once per batch of readers while a period is planned: each call writes only its
    own rows and reads back only their ids."""
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
    record_items(conn, planned, period=period)
    conn.execute(
        sa.update(Subscriber)
        .where(col(Subscriber.id) == sa.bindparam("_id"))
        .values(last_digest_at=now, seen_upto=sa.bindparam("_upto")),
        [{"_id": p.subscriber_id, "_upto": p.upto} for p in planned],
    )


def record_items(conn: Connection, planned: Sequence[Planned], *, period: date) -> None:
    """The items of a batch's digests, once the digests are written: their ids read back,
    of this batch's readers only (a period may be recorded in batches), then every item in
    bulk."""
    digest_of: dict[int, int] = {}
    wanted = [p.subscriber_id for p in planned]
    for start in range(0, len(wanted), PARAMETERS):
        for sid, did in conn.execute(
            sa.select(col(Digest.subscriber_id), col(Digest.id)).where(
                col(Digest.period) == period,
                col(Digest.subscriber_id).in_(wanted[start : start + PARAMETERS]),
            )
        ):
            digest_of[sid] = int(did or 0)
    items = [
        (digest_of[p.subscriber_id], p.subscriber_id, paper_id, rank, score, matched)
        for p in planned
        for rank, (paper_id, score, matched) in enumerate(p.items, 1)
    ]
    if items:
        insert_many(conn, _ITEM, _ITEM_COLUMNS, items)


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


_ITEMS = DigestItem.__table__  # type: ignore[attr-defined]
_ITEMS_OF = (
    sa.select(
        _ITEMS.c.digest_id, _ITEMS.c.subscriber_id, _ITEMS.c.paper_id, _ITEMS.c.score,
        _ITEMS.c.matched,
    )
    .where(_ITEMS.c.digest_id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(_ITEMS.c.digest_id, _ITEMS.c.rank)
)  # fmt: skip


_WAITING_PAPERS = (
    sa.select(_ITEMS.c.paper_id)
    .distinct()
    .join(Digest, col(Digest.id) == _ITEMS.c.digest_id)
    .where(col(Digest.status).in_(("pending", "sending")))
)


def waiting_papers(conn: Connection) -> list[PaperRow]:
    """The papers of the digests waiting to be sent, each once, in id order."""
    ids = sorted(int(paper_id) for paper_id in conn.execute(_WAITING_PAPERS).scalars())
    return list(by_ids(conn, ids).values())


class PapersRead:
    """The papers read for a sending pass's batches so far, by id, to read each once a pass
    (``items_of``), not once a batch: a day's papers are in nearly every batch. Each kept
    row is one object for the whole pass, so what is worked out from it (a view, a block)
    is found again by identity, its fields not compared. A paper changed during the pass
    (a listing revised by an ingest meanwhile) keeps the text it had when the pass read it,
    as a digest keeps the text it had when it went out. At most ``most`` rows are kept."""

    def __init__(self, most: int = 50_000) -> None:
        self.most = most
        self.rows: dict[int, PaperRow] = {}


def items_of(
    conn: Connection, digest_ids: Sequence[int], papers: PapersRead | None = None
) -> dict[int, list[ItemRow]]:
    """The items of each digest, in rank order.

    One query for the items and one for their papers, each paper read once however many
    digests carry it (and shared by their items): a batch of digests holds each of the
    day's papers many times over. ``papers``: the papers read for the batches before, of
    which only those not there yet are read (and added).
    """
    items: dict[int, list[ItemRow]] = {d: [] for d in digest_ids}
    if not digest_ids:
        return items
    rows: list[Any] = []
    for start in range(0, len(digest_ids), PARAMETERS):
        ids = list(digest_ids[start : start + PARAMETERS])
        rows.extend(conn.execute(_ITEMS_OF, {"ids": ids}).all())
    wanted = {row[2] for row in rows}
    if papers is None:
        found = by_ids(conn, sorted(wanted))
    else:
        found = papers.rows
        if len(found) + len(wanted) > papers.most:  # held to a size: let go, read again
            papers.rows = found = {}
        found.update(by_ids(conn, sorted(wanted.difference(found))))
    for digest_id, subscriber_id, paper_id, score, matched in rows:
        items[digest_id].append(
            ItemRow(digest_id, subscriber_id, score, matched, None, found[paper_id])
        )
    return items


@dataclass(frozen=True, slots=True)
class SentItem:
    """A paper that went to a subscriber: which, why (its stored explanation JSON), when."""

    subscriber_id: int
    paper_id: int
    matched: str
    sent_at: datetime


def sent_items(conn: Connection, subscriber_ids: Sequence[int], limit: int) -> list[SentItem]:
    """The newest ``limit`` items sent to each of these subscribers, by subscriber, newest
    first: the papers by id (a paper goes to many readers: ``papers.by_ids`` reads each
    once)."""
    rows = newest_sent(conn, subscriber_ids, limit, sent_at=True)
    when = read_form(conn.dialect, Digest.__table__.c.sent_at)  # type: ignore[attr-defined]
    return [
        SentItem(sid, paper_id, matched, when(sent_at))
        for sid, paper_id, _, matched, sent_at in rows
    ]


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
    .where(col(Digest.id) == sa.bindparam("_id"), held_by(sa.bindparam("_sender")))
    .values(status="pending", last_error=sa.bindparam("_error"))
)
_FAILED = (
    sa.update(Digest)
    .where(col(Digest.id) == sa.bindparam("_id"), held_by(sa.bindparam("_sender")))
    .values(status="failed", last_error=sa.bindparam("_error"))
)


def mark_sent(engine: Engine, digest_id: int, at: datetime) -> None:
    """The transport took the digest."""
    with transaction(engine) as conn:
        conn.execute(_SENT, {"_id": digest_id, "_at": as_utc(at, naive="refuse")})


def mark_unsent(engine: Engine, digest_id: int, error: str, *, sender: str) -> bool:
    """Back to pending at no cost: the failure was nobody's fault. Written only while
    ``sender`` holds the digest's claim (``unsent.held_by``); False: the claim was lost,
    and nothing was written."""
    with transaction(engine) as conn:
        done = conn.execute(_UNSENT, {"_id": digest_id, "_sender": sender, "_error": error[:500]})
    return bool(done.rowcount)


def mark_failed(engine: Engine, digest_id: int, reason: str, *, sender: str) -> bool:
    """This digest cannot go out: set aside, with why. Written only while ``sender`` holds
    the digest's claim; False: the claim was lost, and nothing was written."""
    with transaction(engine) as conn:
        done = conn.execute(_FAILED, {"_id": digest_id, "_sender": sender, "_error": reason[:500]})
    return bool(done.rowcount)


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
    " (SELECT max(d.sent_at) FROM digest d WHERE d.subscriber_id = s.id AND d.status = 'sent'),"
    " (SELECT value FROM ingest_sequence)"
    " FROM subscriber s WHERE s.id = {mark}"
)


def feed_state(engine: Engine, subscriber_id: int) -> FeedState | None:
    """The :class:`FeedState` of a subscriber; None when there is none.

    One statement on a pooled driver connection, outside any transaction of ours: a feed
    reader's conditional poll is this query and nothing else, and the Core execution and
    transaction around it would cost four times the query.
    """
    mark = driver_mark(engine.dialect)
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
