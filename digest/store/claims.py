"""The outbox as a queue: senders on any host claim digests, send them, and mark them sent.

A sender claims a batch of waiting digests in one transaction: it picks them with
``FOR UPDATE SKIP LOCKED`` on PostgreSQL (two senders never wait on, nor take, the same
rows; SQLite has one writer at a time and needs no such clause), and stamps them
``sending`` with its name (``claimed_by``) and a lease (``claimed_until``). Another
sender takes a digest only once its lease has run out, so a sender that dies leaves its
digests to the others after at most one lease.

A digest is marked sent only while its claim holds (``claimed_by`` is still the sender):
a sender that lost a claim (its lease ran out and another took the digest) learns it from
the rows its mark did not touch, and the digest is never marked twice. Marks are written
in groups, one transaction for every message the sender's connections finished meanwhile;
the sender's heartbeat renews its remaining leases.

``sender`` holds one row per sender at work, with its heartbeat, for ``digest status``.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import col

from digest.clock import as_utc
from digest.errors import StoreError
from digest.store.engine import driver_form, reading, transaction
from digest.store.models import Digest, Subscriber
from digest.store.outbox import OutboxRow

_WAITING = ("pending", "sending")
_SENDER = sa.table(
    "sender",
    sa.column("name", sa.String),
    sa.column("host", sa.String),
    sa.column("pid", sa.Integer),
    sa.column("started_at", sa.DateTime(timezone=True)),
    sa.column("seen_at", sa.DateTime(timezone=True)),
    sa.column("sent", sa.Integer),
)
FORGET_SENDERS_AFTER = timedelta(days=1)  # a sender silent this long died: its row goes


def claim(
    engine: Engine,
    sender: str,
    *,
    now: datetime,
    lease: timedelta,
    after: int = 0,
    limit: int,
    retried: bool | None = None,
) -> list[OutboxRow]:
    """Claim up to ``limit`` waiting digests of active subscribers after digest id ``after``,
    oldest first, for ``sender`` until ``now + lease``: those nobody holds, those whose lease
    ran out, and the sender's own. ``retried``: as in ``outbox.load``."""
    now = as_utc(now, naive="refuse")
    free = sa.or_(
        col(Digest.claimed_until).is_(None),
        col(Digest.claimed_until) < now,
        col(Digest.claimed_by) == sender,
    )
    query: Any = (
        sa.select(col(Digest.id))
        .join(Subscriber, col(Subscriber.id) == col(Digest.subscriber_id))
        .where(
            col(Digest.status).in_(_WAITING),
            col(Subscriber.status) == "active",
            col(Digest.id) > after,
            free,
        )
        .order_by(col(Digest.id))
        .limit(limit)
        # OF digest: the subscriber rows stay free for the web front's writes
        .with_for_update(skip_locked=True, of=Digest)
    )
    if retried is not None:
        tried = col(Digest.last_error).is_not(None)
        query = query.where(tried if retried else sa.not_(tried))
    with transaction(engine) as conn:
        ids = [row[0] for row in conn.execute(query)]
        if not ids:
            return []
        conn.execute(
            sa.update(Digest)
            .where(col(Digest.id).in_(ids))
            .values(status="sending", claimed_by=sender, claimed_until=now + lease)
        )
        rows: Any = conn.execute(
            sa.select(
                col(Digest.id),
                col(Digest.period),
                col(Digest.message_id),
                col(Subscriber.id),
                col(Subscriber.email),
                col(Subscriber.token_salt),
                col(Digest.last_error).is_not(None),
            )
            .join(Subscriber, col(Subscriber.id) == col(Digest.subscriber_id))
            .where(col(Digest.id).in_(ids))
            .order_by(col(Digest.id))
        ).all()
    return [
        OutboxRow(
            digest_id=row[0],
            period=row[1],
            message_id=row[2],
            subscriber_id=row[3],
            email=row[4],
            token_salt=row[5],
            retried=bool(row[6]),
        )
        for row in rows
    ]


# A sender writes its marks every few messages: the statements are built once, not for
# every group (building them cost more than running them).
_HELD = sa.select(col(Digest.id)).where(
    col(Digest.id).in_(sa.bindparam("ids", expanding=True)),
    col(Digest.claimed_by) == sa.bindparam("sender"),
    col(Digest.status).in_((*_WAITING, "sent")),
)
_SENT = (
    sa.update(Digest)
    .where(col(Digest.id).in_(sa.bindparam("ids", expanding=True)), col(Digest.status) != "sent")
    .values(
        status="sent",
        sent_at=sa.bindparam("at"),
        last_error=None,
        claimed_until=None,
        attempts=col(Digest.attempts) + 1,
    )
)
_RENEW = (
    sa.update(Digest)
    .where(col(Digest.claimed_by) == sa.bindparam("sender"), col(Digest.status) == "sending")
    .values(claimed_until=sa.bindparam("until"))
)
_SEEN = (
    sa.update(_SENDER)
    .where(_SENDER.c.name == sa.bindparam("sender"))
    .values(seen_at=sa.bindparam("at"), sent=_SENDER.c.sent + sa.bindparam("count"))
)


def mark_sent(
    engine: Engine,
    sender: str,
    digest_ids: Collection[int],
    *,
    at: datetime,
    lease: timedelta,
    renew: bool = True,
) -> set[int]:
    """Mark these digests sent where ``sender`` still holds them, and (``renew``) renew its
    other claims' leases, in one transaction; returns the ids marked (the others' claims were
    lost). Renewing rewrites every row the sender holds, a batch of them: a sender whose
    leases a heartbeat renews marks without it.

    The sender's name stays on a sent digest: it says who sent it, and a mark written again
    (its first commit's answer was lost with the connection) finds the row still its own.
    """
    at = as_utc(at, naive="refuse")
    ids = sorted(digest_ids)
    if engine.dialect.name == "sqlite":
        return _mark_sqlite(engine, sender, ids, at=at, until=at + lease if renew else None)
    return _mark(engine, sender, ids, at=at, until=at + lease if renew else None)


def _mark(
    engine: Engine, sender: str, ids: list[int], *, at: datetime, until: datetime | None
) -> set[int]:
    with transaction(engine) as conn:
        marked: set[int] = set()
        if ids:
            found: Any = conn.execute(_HELD, {"ids": ids, "sender": sender})
            marked = {int(row[0]) for row in found}
            if marked:
                conn.execute(_SENT, {"ids": sorted(marked), "at": at})
        if until is not None:
            conn.execute(_RENEW, {"sender": sender, "until": until})
        conn.execute(_SEEN, {"sender": sender, "at": at, "count": len(marked)})
    return marked


def _mark_sqlite(
    engine: Engine, sender: str, ids: list[int], *, at: datetime, until: datetime | None
) -> set[int]:
    """``_mark`` through the driver: on SQLite the statements cost less than SQLAlchemy's
    work around them (a transaction, four executions) for the one or two digests of a
    group. The statements of ``_HELD``, ``_SENT``, ``_RENEW`` and ``_SEEN`` written for
    the driver, the times written as the columns' types write them (a test holds the two
    ways to the same rows)."""
    held, sent, renew, seen, stamp, seen_stamp = _sqlite_statements(engine.dialect)
    with engine.connect() as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute("BEGIN IMMEDIATE")
            try:
                marked: set[int] = set()
                if ids:
                    found = cursor.execute(held.format(_marks(len(ids))), (*ids, sender))
                    marked = {int(row[0]) for row in found.fetchall()}
                    if marked:
                        cursor.execute(
                            sent.format(_marks(len(marked))), (stamp(at), *sorted(marked))
                        )
                if until is not None:
                    cursor.execute(renew, (stamp(until), sender))
                cursor.execute(seen, (seen_stamp(at), len(marked), sender))
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"database error: {exc}") from None
        finally:
            cursor.close()
    return marked


def _marks(count: int) -> str:
    return ", ".join("?" * count)


@functools.cache
def _sqlite_statements(dialect: sa.Dialect) -> tuple[str, str, str, str, Any, Any]:
    """The four statements as the driver takes them (``{}`` where a list of ids goes), and
    how the digest's times and the sender's are written."""
    stamp = driver_form(dialect, Digest.__table__.c.sent_at)  # type: ignore[attr-defined]
    seen_stamp = driver_form(dialect, _SENDER.c.seen_at)
    held = (
        "SELECT digest.id FROM digest WHERE digest.id IN ({}) AND digest.claimed_by = ?"
        f" AND digest.status IN ({', '.join(repr(s) for s in (*_WAITING, 'sent'))})"
    )
    sent = (
        "UPDATE digest SET status = 'sent', sent_at = ?, last_error = NULL,"
        " claimed_until = NULL, attempts = digest.attempts + 1"
        " WHERE digest.id IN ({}) AND digest.status != 'sent'"
    )
    renew = (
        "UPDATE digest SET claimed_until = ? WHERE digest.claimed_by = ?"
        " AND digest.status = 'sending'"
    )
    seen = "UPDATE sender SET seen_at = ?, sent = (sender.sent + ?) WHERE sender.name = ?"
    return held, sent, renew, seen, stamp, seen_stamp


def heartbeat(engine: Engine, sender: str, *, at: datetime, lease: timedelta) -> None:
    """The sender is alive: its heartbeat, and its claims' leases renewed."""
    mark_sent(engine, sender, (), at=at, lease=lease)


@dataclass(frozen=True, slots=True)
class Holder:
    """A sender holding claims, with the host and process its ``sender`` row names (None
    when it has no row: it was forgotten, and its leases ran out long ago)."""

    name: str
    host: str | None
    pid: int | None


def holders(engine: Engine) -> list[Holder]:
    """The senders holding claims on digests still being sent, by name."""
    held = (
        sa.select(col(Digest.claimed_by).label("name"))
        .where(col(Digest.status) == "sending", col(Digest.claimed_by).is_not(None))
        .distinct()
        .subquery()
    )
    with reading(engine) as conn:
        rows = conn.execute(
            sa.select(held.c.name, _SENDER.c.host, _SENDER.c.pid)
            .outerjoin(_SENDER, _SENDER.c.name == held.c.name)
            .order_by(held.c.name)
        ).all()
        conn.rollback()
    return [Holder(str(name), host, None if pid is None else int(pid)) for name, host, pid in rows]


def release(engine: Engine, sender: str) -> int:
    """Give back the digests ``sender`` claimed and did not send (it stops): pending again, for
    any sender at once. Returns how many."""
    with transaction(engine) as conn:
        result = conn.execute(
            sa.update(Digest)
            .where(col(Digest.claimed_by) == sender, col(Digest.status).in_(_WAITING))
            .values(status="pending", claimed_by=None, claimed_until=None)
        )
    return int(result.rowcount or 0)


def register(engine: Engine, sender: str, *, host: str, pid: int, now: datetime) -> None:
    """Record a sender at work (and forget senders silent for ``FORGET_SENDERS_AFTER``)."""
    now = as_utc(now, naive="refuse")
    with transaction(engine) as conn:
        conn.execute(sa.delete(_SENDER).where(_SENDER.c.seen_at < now - FORGET_SENDERS_AFTER))
        conn.execute(sa.delete(_SENDER).where(_SENDER.c.name == sender))
        conn.execute(
            sa.insert(_SENDER).values(
                name=sender, host=host, pid=pid, started_at=now, seen_at=now, sent=0
            )
        )


def unregister(engine: Engine, sender: str) -> None:
    """The sender stopped cleanly."""
    with transaction(engine) as conn:
        conn.execute(sa.delete(_SENDER).where(_SENDER.c.name == sender))


@dataclass(frozen=True, slots=True)
class SenderState:
    """A sender as ``status`` shows it: who, since when, last heard of, what it holds."""

    name: str
    host: str
    pid: int | None
    started_at: datetime | None
    seen_at: datetime | None
    sent: int
    claims: int
    lease_until: datetime | None  # the latest lease of its claims

    def to_json(self, now: datetime) -> dict[str, Any]:
        """A plain dict, with the ages in seconds as of ``now``."""

        def age(moment: datetime | None) -> float | None:
            return None if moment is None else round((now - as_utc(moment)).total_seconds(), 1)

        return {
            "name": self.name,
            "host": self.host,
            "pid": self.pid,
            "started_at": None if self.started_at is None else as_utc(self.started_at).isoformat(),
            "heartbeat_age_s": age(self.seen_at),
            "sent": self.sent,
            "claims": self.claims,
            "lease_left_s": None if self.lease_until is None else -(age(self.lease_until) or 0.0),
        }


def senders(engine: Engine) -> list[SenderState]:
    """The senders at work, and any that hold claims without a row (they died mid-pass)."""
    with reading(engine) as conn:
        rows = conn.execute(sa.select(_SENDER).order_by(_SENDER.c.name)).all()
        held = {
            name: (int(n), until)
            for name, n, until in conn.execute(
                sa.select(
                    col(Digest.claimed_by), sa.func.count(), sa.func.max(col(Digest.claimed_until))
                )
                .where(col(Digest.status) == "sending", col(Digest.claimed_by).is_not(None))
                .group_by(col(Digest.claimed_by))
            )
        }
        conn.rollback()
    found = []
    for row in rows:
        claims, until = held.pop(row.name, (0, None))
        found.append(
            SenderState(
                row.name, row.host, row.pid, row.started_at, row.seen_at, row.sent, claims, until
            )
        )
    for name, (claims, until) in sorted(held.items()):
        found.append(SenderState(str(name), "", None, None, None, 0, claims, until))
    return found
