"""Writing a planned batch's outbox rows on SQLite with the driver's own ``executemany``.

``outbox.record`` writes a batch's digests and moves its readers' cut-offs through
SQLAlchemy, which turns every row into a dictionary of parameters and processes each
value: at 100,000 readers, two statements of 100,000 rows each. Here the same rows go to
SQLite as tuples, each value converted by the column's type as the dialect implements it,
so the stored text is what SQLAlchemy stores; the items as ``outbox.record`` writes them.
Other databases (PostgreSQL writes its items by ``COPY``), and a schema whose digest or
subscriber columns fill themselves in Python (a default made by a function, a value set
on update), take ``outbox.record`` itself. ``planning`` is a run's transaction for them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from digest.clock import as_utc
from digest.store import outbox
from digest.store.engine import driver_form, transaction_under
from digest.store.models import Digest, Subscriber
from digest.store.outbox import Planned

_DIGEST: sa.Table = Digest.__table__  # type: ignore[attr-defined]
_SUBSCRIBER: sa.Table = Subscriber.__table__  # type: ignore[attr-defined]
# What a planned digest sets; every other column takes its default.
_SET = (
    "subscriber_id",
    "period",
    "status",
    "message_id",
    "created_at",
    "run_id",
    "attempts",
    "first_attempt_at",
    "last_error",
)
# Converted as SQLAlchemy converts them: a digest's times, its period, a reader's last digest.
_CONVERTED = (_DIGEST.c.created_at, _DIGEST.c.period, _SUBSCRIBER.c.last_digest_at)


@contextmanager
def planning(engine: Engine) -> Iterator[Connection]:
    """A run's plan transaction: ``engine.transaction``, and on SQLite without checking
    foreign keys. Every row the plan writes refers to a digest it wrote, or to a reader or
    a paper it read, in this same transaction, under the write lock every other writer
    waits for (``BEGIN IMMEDIATE``): none can be gone by the time it commits. The checks
    (three an item: its digest, reader and paper looked up) were about a third of SQLite's
    work on the items. SQLite takes the setting only outside a transaction, so it is set
    before this one begins, and set back before the connection returns to the pool (or
    the connection is dropped when that fails)."""
    with transaction_under(engine, {"foreign_keys": 0}) as conn:
        yield conn


def release_cache(engine: Engine) -> None:
    """Hand back the page cache a pooled SQLite connection kept of what the plan read (up
    to the 64 MB of ``cache_size``): processes forked next (the senders, which open
    connections of their own) would each count it in their resident memory. Outside any
    transaction, on the driver's connection (no ``BEGIN IMMEDIATE``, no lock taken).
    PostgreSQL's connections keep their pages in the server."""
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        if raw is not None and not raw.in_transaction:
            raw.execute("PRAGMA shrink_memory")


def record(
    conn: Connection,
    planned: Sequence[Planned],
    *,
    period: date,
    now: datetime,
    run_id: int | None,
) -> None:
    """What ``outbox.record`` writes for a batch (the digests, their items and the readers'
    cut-offs), the same rows, written with the driver's ``executemany`` on SQLite."""
    if not planned:
        return
    defaults = _constant_defaults()
    if conn.dialect.paramstyle != "qmark" or defaults is None:
        outbox.record(conn, planned, period=period, now=now, run_id=run_id)
        return
    now = as_utc(now, naive="refuse")
    stamp, day, moment = (driver_form(conn.dialect, column) for column in _CONVERTED)
    names = (*_SET, *defaults)
    fixed = tuple(
        driver_form(conn.dialect, _DIGEST.c[name])(value) for name, value in defaults.items()
    )
    stored_period, created = day(period), stamp(now)
    rows: list[tuple[Any, ...]] = []
    for p in planned:
        carried = p.carried
        if carried is None:
            fresh = (p.subscriber_id, stored_period, p.status, p.message_id, created, run_id)
            rows.append((*fresh, 0, None, None, *fixed))
        else:
            head = (p.subscriber_id, stored_period, p.status, p.message_id, stamp(carried.since))
            first = stamp(carried.first_attempt_at)
            rows.append((*head, run_id, carried.attempts, first, carried.last_error, *fixed))
    outbox.insert_many(conn, _DIGEST, names, rows)
    outbox.record_items(conn, planned, period=period)
    touched = moment(now)
    conn.exec_driver_sql(
        f"UPDATE {_SUBSCRIBER.name} SET last_digest_at = ?, seen_upto = ? WHERE id = ?",
        [(touched, p.upto, p.subscriber_id) for p in planned],
    )


@cache
def _constant_defaults() -> dict[str, Any] | None:
    """The digest columns a planned digest leaves to their defaults, with their defaults;
    None when a column of a written table fills itself otherwise (a default
    made by a function, a value set on update), which only SQLAlchemy's own insert gives."""
    out: dict[str, Any] = {}
    for column in _DIGEST.columns:
        if column.primary_key or column.name in _SET:
            continue
        default = column.default
        if default is None:
            out[column.name] = None
        elif isinstance(default, sa.ColumnDefault) and default.is_scalar:
            out[column.name] = default.arg
        else:
            return None
    for table in (_DIGEST, _SUBSCRIBER):
        if any(column.onupdate is not None for column in table.columns):
            return None
    return out
