"""Counters every process and host of the site shares: rate limits and the sending pace.

A counter is a row per name and window (fixed windows of a limit's length, from the Unix
epoch; starts and ends in milliseconds, the one unit of the table), raised by one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE count < cap RETURNING``:
atomic on SQLite and PostgreSQL alike, so N processes together let exactly ``cap`` events
through a window, and an event refused is not counted. Rows of ended windows are deleted
whenever a new window starts.
"""

from __future__ import annotations

import math

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from digest.store.engine import insert_or_skip, transaction
from digest.store.models import RateCounter

_COUNTER = RateCounter.__table__  # type: ignore[attr-defined]
# How far ahead a sender may book its turn: past this, the pace is hopeless anyway.
MAX_WINDOWS_AHEAD = 100_000


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


def send_turn(engine: Engine, rate: float, now: float, name: str = "send") -> float:
    """Book a turn to send one message so that every sender of the store together sends at
    most ``rate`` a second; the seconds to wait until the turn (0: send now).

    Time is cut into windows of one second (``1 / rate`` seconds when the rate is below one)
    holding ``rate`` sends each (at least one); a full window sends the caller to the next.
    """
    if rate <= 0:
        return 0.0
    length = max(1.0, 1.0 / rate)
    cap = max(1, math.floor(rate * length))
    step = round(length * 1000)
    moment = math.floor(now * 1000)
    window = moment // step
    with transaction(engine) as conn:
        for ahead in range(MAX_WINDOWS_AHEAD):
            start = (window + ahead) * step
            if count_if_under(conn, name, start, start + step, cap, moment):
                return max(0.0, start / 1000 - now)
    return MAX_WINDOWS_AHEAD * length
