"""Counters every process and host of the site shares: rate limits and the sending pace.

A counter is a row per name and window (fixed windows of a limit's length, from the Unix
epoch; starts and ends in milliseconds, the one unit of the table), raised by one ``INSERT
... ON CONFLICT DO UPDATE ... WHERE count < cap RETURNING``: atomic on SQLite and PostgreSQL
alike, so N processes together let exactly ``cap`` events through a window, and an event
refused is not counted. Rows of ended windows are deleted whenever a new window starts.

The sending pace is a row of the same table whose ``expires`` is the end of the turns booked
so far (``book_turns``); ``deliver.pace`` books them in blocks. Moments are each host's own
clock, as the senders' leases are: the hosts' clocks are kept in step (NTP).
"""

from __future__ import annotations

import math

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from digest.store.engine import insert_or_skip, transaction
from digest.store.models import RateCounter

_COUNTER = RateCounter.__table__  # type: ignore[attr-defined]


def count_if_under(
    conn: Connection, name: str, window_start: int, expires: int, cap: int, now: int
) -> int:
    """Count one event of ``name`` in the window ``window_start`` when fewer than ``cap``
    are counted there; the count after it, or 0 when the window is full (nothing counted).
    ``now`` (ms): windows that ended by then are deleted when this one is new."""
    if cap < 1:
        return 0
    insert = insert_or_skip(conn, _COUNTER).values(
        name=name, window_start=window_start, count=1, expires=expires
    )
    counted = conn.execute(
        insert.on_conflict_do_update(
            index_elements=[_COUNTER.c.name, _COUNTER.c.window_start],
            set_={"count": _COUNTER.c.count + 1},
            where=_COUNTER.c.count < cap,
        ).returning(_COUNTER.c.count)
    ).scalar()
    count = int(counted or 0)
    if count == 1:  # a new window: whatever has ended can go
        conn.execute(sa.delete(_COUNTER).where(_COUNTER.c.expires <= now))
    return count


def counted(conn: Connection, name: str, window_start: int) -> int:
    """The events counted for ``name`` in the window ``window_start``."""
    query = sa.select(_COUNTER.c.count).where(
        _COUNTER.c.name == name, _COUNTER.c.window_start == window_start
    )
    return int(conn.execute(query).scalar() or 0)


class SharedLimit:
    """At most ``limit`` events per window of ``seconds`` for each key (a client address,
    an email address), counted in the store: the same limit in every process and host."""

    def __init__(self, engine: Engine, name: str, limit: int, seconds: float) -> None:
        self.engine = engine
        self.name = name
        self.limit = limit
        self.seconds = max(1, math.ceil(seconds))

    def allow(self, key: str, now: float) -> bool:
        """Count one event for ``key`` at ``now`` (Unix seconds); False (and not counted)
        when the window already holds ``limit``."""
        step = self.seconds * 1000
        moment = math.floor(now * 1000)
        start = moment // step * step
        with transaction(self.engine) as conn:
            count = count_if_under(
                conn, f"{self.name}:{key}", start, start + step, self.limit, moment
            )
        return count > 0


def book_turns(
    engine: Engine, rate: float, count: int, now: float, name: str = "send"
) -> tuple[float, float]:
    """Book ``count`` turns to send at ``rate`` a second, after every turn any sender of the
    store booked before (and none before ``now``, Unix seconds); returns when the booked turns
    start and end (Unix seconds), to be spread evenly over that span.

    The pace is one row (``window_start`` 0) whose ``expires`` is the moment (ms) the turns
    booked so far end, moved on by one atomic ``INSERT ... ON CONFLICT DO UPDATE ...
    RETURNING``: from ``now`` when the pace was idle, from where the last booking ended
    otherwise. So turns never overlap whoever booked them, and N senders together send no
    faster than ``rate``. The span is rounded up to whole milliseconds: never faster. A row
    whose turns have all passed is worth nothing, and goes when a limit's window is new.
    """
    if rate <= 0 or count < 1:
        return now, now
    span = math.ceil(count * 1000 / rate)
    moment = math.floor(now * 1000)
    with transaction(engine) as conn:
        insert = insert_or_skip(conn, _COUNTER).values(
            name=name, window_start=0, count=count, expires=moment + span
        )
        free = sa.case((_COUNTER.c.expires < moment, moment), else_=_COUNTER.c.expires)
        end = conn.execute(
            insert.on_conflict_do_update(
                index_elements=[_COUNTER.c.name, _COUNTER.c.window_start],
                set_={"expires": free + span, "count": count},  # count: the last booking's
            ).returning(_COUNTER.c.expires)
        ).scalar_one()
    return (int(end) - span) / 1000, int(end) / 1000
