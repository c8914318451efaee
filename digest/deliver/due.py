"""When a reader's digest is due: at their own hour, in their own time zone.

A reader who chose an hour gets one digest per local date, keyed by that date. The date a
moment belongs to is read off the reader's wall clock set back by their hour: at 08:00 with
an hour of 8 the clock set back reads midnight, and the reader's date turns. Reading the
wall clock (not adding 24 hours to the last digest) is what keeps daylight saving and a
move of time zone honest:

* an hour the clock skips (spring forward) is passed at the next moment that exists, so
  that day still turns, once;
* an hour the clock shows twice (fall back) turns the day the first time; the second time
  finds the date already served;
* a move west sets the clock back: the date already served comes round again and is not
  served twice; a move east sets it forward: the date turns at once if the reader's hour
  has passed in the new zone (a move across the whole date line can pass two hours at
  once: the date in between is sent first, then the next);
* a run that is late, or a machine that was off, still sends the day's digest at the next
  run, until the reader's next hour; past that, the missed date folds into the next one,
  as every digest carries everything since the reader's previous one.

Pure: the caller passes ``now`` and what the outbox knows of the reader.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from digest.clock import as_utc

DAY = timedelta(days=1)
# The schedule runs at least every hour (``digest serve``: every quarter hour), so a run
# less than this long before the current one means it was running all along.
RUNNING = timedelta(hours=2)


def reader_hour(subscriber: Any) -> int | None:
    """The hour (0-23, the reader's own clock) they want their digest at; None: the site's
    schedule."""
    # the one place the preference is read (a Subscriber, or a plain row of its columns)
    hour = subscriber.digest_hour
    return hour if isinstance(hour, int) and 0 <= hour <= 23 else None


@lru_cache(maxsize=1024)
def _zone(name: str) -> tzinfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def reader_zone(subscriber: Any, site_zone: tzinfo) -> tzinfo:
    """The zone the reader lives in: theirs, or the site's when they set none (or one this
    machine does not know any more)."""
    name = getattr(subscriber, "timezone", None)
    zone = _zone(name) if name else None
    return zone or site_zone


def local_period(now: datetime, zone: tzinfo, hour: int) -> date:
    """The reader's date whose hour has most recently come at ``now``.

    The wall clock set back by ``hour``: naive arithmetic on purpose, as the wall clock is
    what the reader means by "08:00" (a skipped hour is passed as the clock jumps over it).
    """
    wall = as_utc(now).astimezone(zone).replace(tzinfo=None)
    return (wall - timedelta(hours=hour)).date()


def due_period(
    now: datetime,
    zone: tzinfo,
    hour: int,
    *,
    last: date | None,
    last_at: datetime | None,
    joined: datetime | None = None,
    ran_before: datetime | None = None,
) -> date | None:
    """The period (the reader's local date) a digest is due for at ``now``, or None.

    ``last``: the period of the reader's newest digest; ``last_at``: when it was planned;
    ``joined``: when they subscribed (a reader with no digest yet starts with the first
    hour after joining, as a new subscriber waits for the next scheduled run);
    ``ran_before``: when the schedule last ran before ``now``, if known.
    """
    period = local_period(now, zone, hour)
    if last is None:
        if joined is not None and local_period(joined, zone, hour) >= period:
            return None
        return period
    if period <= last:
        return None
    if period - last == 2 * DAY and _jumped(now, zone, hour, last, last_at, ran_before):
        return last + DAY  # jumped over, not missed: that date first, then this one
    return period


def _jumped(
    now: datetime,
    zone: tzinfo,
    hour: int,
    last: date,
    last_at: datetime | None,
    ran_before: datetime | None,
) -> bool:
    """Whether the date after ``last`` was jumped over by the reader's clock (a move across
    the date line) rather than missed while the schedule was not running.

    After an outage the missed date folds into today's. But a schedule that kept running
    (a run less than ``RUNNING`` ago) saw every hour of a reader whose clock went on as
    clocks do, so two dates at once mean a jump. So does a last digest that went out,
    by the reader's clock as it reads now, after the next date's hour had come.
    """
    if ran_before is not None and as_utc(now) - as_utc(ran_before) < RUNNING:
        return True
    return last_at is not None and local_period(last_at, zone, hour) > last


def due_readers(
    readers: Iterable[tuple[Any, date | None]],
    now: datetime,
    site_zone: tzinfo,
    *,
    ran_before: datetime | None = None,
) -> dict[int, date]:
    """The readers with an hour of their own who are due at ``now``, by id, with the period
    each is due for. ``readers``: (subscriber, the period of their newest digest)."""
    due: dict[int, date] = {}
    for sub, last in readers:
        hour = reader_hour(sub)
        if hour is None:
            continue
        period = due_period(
            now,
            reader_zone(sub, site_zone),
            hour,
            last=last,
            last_at=getattr(sub, "last_digest_at", None),
            joined=getattr(sub, "created_at", None),
            ran_before=ran_before,
        )
        if period is not None:
            due[int(sub.id or 0)] = period
    return due


def by_period(periods: Mapping[int, date]) -> dict[date, list[int]]:
    """Reader ids grouped by the period they are due for, oldest period first."""
    groups: dict[date, list[int]] = {}
    for sid, period in sorted(periods.items(), key=lambda item: (item[1], item[0])):
        groups.setdefault(period, []).append(sid)
    return groups
