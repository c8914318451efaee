"""Each reader's morning: one digest per local date, at their hour, whatever the clock does.

The schedule is simulated with an injected clock over a whole year (every run a call of the
pure ``due_period``, as the planner makes it), in any of the zones this machine knows, with
daylight saving both ways and a reader who moves between zones at random moments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from types import SimpleNamespace
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digest.deliver.due import (
    by_period,
    due_period,
    due_readers,
    local_period,
    reader_hour,
    reader_zone,
)

ZONES = sorted(available_timezones())
# Zones that make the rules work: half and three-quarter hours, a 30-minute daylight saving
# (Lord Howe), the date line both ways, an hour 23 that does not exist (Nuuk in March), and
# the plain European and American changes.
HARD = [
    "Europe/London",
    "America/New_York",
    "Australia/Lord_Howe",
    "Pacific/Apia",
    "Pacific/Chatham",
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
    "Etc/GMT+12",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "America/Nuuk",
    "America/Santiago",
    "Africa/Cairo",
    "America/St_Johns",
    "Antarctica/Troll",
]
zones = st.one_of(st.sampled_from(HARD), st.sampled_from(ZONES))
DAY = timedelta(days=1)


def at(zone: str, *args: int, fold: int = 0) -> datetime:
    """A wall-clock time in ``zone``, as the UTC moment it is."""
    return datetime(*args, tzinfo=ZoneInfo(zone), fold=fold).astimezone(UTC)  # type: ignore[misc]


@dataclass
class Reader:
    """A reader as the outbox sees them, served by the simulated schedule."""

    hour: int
    joined: datetime
    last: date | None = None
    last_at: datetime | None = None
    ran_before: datetime | None = None
    sent: list[tuple[date, datetime, str]] = field(default_factory=list)

    def run(self, now: datetime, zone: str) -> date | None:
        period = due_period(
            now,
            ZoneInfo(zone),
            self.hour,
            last=self.last,
            last_at=self.last_at,
            joined=self.joined,
            ran_before=self.ran_before,
        )
        self.ran_before = now
        if period is not None:
            self.sent.append((period, now, zone))
            self.last, self.last_at = period, now
        return period


def simulate(
    reader: Reader, runs: list[datetime], moves: list[tuple[datetime, str]], zone: str
) -> str:
    """Run the schedule at each of ``runs``; the reader moves to a zone at each of ``moves``.
    Returns the zone they end in."""
    moves = sorted(moves)
    for now in runs:
        while moves and moves[0][0] <= now:
            zone = moves.pop(0)[1]
        reader.run(now, zone)
    return zone


def assert_every_date_once(reader: Reader, end: datetime, zone: str) -> None:
    periods = [p for p, _, _ in reader.sent]
    assert periods, "no digest in a year"
    steps = {b - a for a, b in pairwise(periods)}
    assert steps <= {DAY}, f"a date doubled or skipped: {sorted(steps)} in {periods}"
    # the last date whose hour has come was served (or a later one, before a move west)
    assert periods[-1] >= local_period(end, ZoneInfo(zone), reader.hour)


def hourly(start: datetime, days: int, jitter: list[int] | None = None) -> list[datetime]:
    """A run at every full hour (UTC), each late by its ``jitter`` in minutes."""
    runs = []
    for k in range(days * 24):
        late = jitter[k % len(jitter)] if jitter else 0
        runs.append(start + timedelta(hours=k, minutes=late))
    return runs


starts = st.datetimes(
    min_value=datetime(2023, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC)
).map(lambda t: t.replace(minute=0, second=0, microsecond=0))
SLOW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SLOW
@given(zone=zones, hour=st.integers(0, 23), start=starts)
def test_a_year_on_the_hour_serves_every_local_date_once_on_its_own_date(
    zone: str, hour: int, start: datetime
) -> None:
    reader = Reader(hour, joined=start)
    runs = hourly(start, 366)
    simulate(reader, runs, [], zone)
    assert_every_date_once(reader, runs[-1], zone)
    first = reader.sent[0][0]
    assert first == local_period(start, ZoneInfo(zone), hour) + DAY  # the first hour after joining
    for period, sent_at, _ in reader.sent:
        # on time: the run at the reader's hour (or the next run, for a zone whose hours fall
        # between full UTC hours, or an hour the clock skipped)
        assert local_period(sent_at, ZoneInfo(zone), hour) == period
        assert local_period(sent_at - timedelta(hours=1), ZoneInfo(zone), hour) < period


@SLOW
@given(
    zone=zones,
    hour=st.integers(0, 23),
    start=starts,
    jitter=st.lists(st.integers(0, 59), min_size=1, max_size=50),
)
def test_a_year_of_late_runs_serves_every_local_date_once(
    zone: str, hour: int, start: datetime, jitter: list[int]
) -> None:
    reader = Reader(hour, joined=start)
    runs = hourly(start, 366, jitter)
    simulate(reader, runs, [], zone)
    assert_every_date_once(reader, runs[-1], zone)


@SLOW
@given(
    zone=zones,
    hour=st.integers(0, 23),
    start=starts,
    moves=st.lists(st.tuples(st.integers(0, 366 * 24 * 60 - 1), zones), min_size=1, max_size=12),
    jitter=st.lists(st.integers(0, 59), min_size=1, max_size=20),
)
def test_a_reader_who_moves_between_zones_never_gets_a_date_twice_nor_misses_one(
    zone: str,
    hour: int,
    start: datetime,
    moves: list[tuple[int, str]],
    jitter: list[int],
) -> None:
    reader = Reader(hour, joined=start)
    runs = hourly(start, 366, jitter)
    when = [(start + timedelta(minutes=m), z) for m, z in moves]
    end_zone = simulate(reader, runs, when, zone)
    assert_every_date_once(reader, runs[-1], end_zone)


@SLOW
@given(
    zone=zones,
    hour=st.integers(0, 23),
    start=starts,
    gaps=st.lists(st.integers(1, 60), min_size=1, max_size=40),
    moves=st.lists(st.tuples(st.integers(0, 60 * 24 * 60), zones), max_size=6),
)
def test_runs_at_random_moments_an_hour_apart_at_most(
    zone: str, hour: int, start: datetime, gaps: list[int], moves: list[tuple[int, str]]
) -> None:
    reader = Reader(hour, joined=start)
    runs, now = [], start
    while now < start + 60 * DAY:
        runs.append(now)
        now += timedelta(minutes=gaps[len(runs) % len(gaps)])
    when = [(start + timedelta(minutes=m), z) for m, z in moves]
    end_zone = simulate(reader, runs, when, zone)
    assert_every_date_once(reader, runs[-1], end_zone)


# The rules one at a time, at the moments they are about.


def test_an_hour_the_clock_skips_is_served_at_the_next_moment_that_exists() -> None:
    # New York, 9 March 2025: 02:00 EST is followed by 03:00 EDT
    reader = Reader(2, joined=at("America/New_York", 2025, 3, 1))
    reader.last, reader.last_at = date(2025, 3, 8), at("America/New_York", 2025, 3, 8, 2)
    assert reader.run(at("America/New_York", 2025, 3, 9, 1, 59), "America/New_York") is None
    assert reader.run(at("America/New_York", 2025, 3, 9, 3, 0), "America/New_York") == date(
        2025, 3, 9
    )
    # Lord Howe skips half an hour (02:00 to 02:30) on 6 October 2024
    zone = "Australia/Lord_Howe"
    reader = Reader(2, joined=at(zone, 2024, 10, 1))
    reader.last, reader.last_at = date(2024, 10, 5), at(zone, 2024, 10, 5, 2)
    assert reader.run(at(zone, 2024, 10, 6, 1, 59), zone) is None
    assert reader.run(at(zone, 2024, 10, 6, 2, 30), zone) == date(2024, 10, 6)


def test_an_hour_the_clock_shows_twice_is_served_once() -> None:
    # London, 27 October 2024: 01:00 to 02:00 comes twice
    zone = "Europe/London"
    reader = Reader(1, joined=at(zone, 2024, 10, 20))
    reader.last, reader.last_at = date(2024, 10, 26), at(zone, 2024, 10, 26, 1)
    assert reader.run(at(zone, 2024, 10, 27, 1, 0), zone) == date(2024, 10, 27)
    assert reader.run(at(zone, 2024, 10, 27, 1, 30, fold=1), zone) is None
    assert reader.run(at(zone, 2024, 10, 27, 1, 0, fold=1), zone) is None


def test_an_hour_past_midnight_the_clock_skips_serves_that_date_after_midnight() -> None:
    # Nuuk, 29 March 2025: 22:59:59 is followed by 00:00 on the 30th; hour 23 never comes
    zone = "America/Nuuk"
    reader = Reader(23, joined=at(zone, 2025, 3, 20))
    reader.last, reader.last_at = date(2025, 3, 28), at(zone, 2025, 3, 28, 23)
    assert reader.run(at(zone, 2025, 3, 29, 22, 59), zone) is None
    assert reader.run(at(zone, 2025, 3, 30, 0, 0), zone) == date(2025, 3, 29)
    assert reader.run(at(zone, 2025, 3, 30, 22, 0), zone) is None
    assert reader.run(at(zone, 2025, 3, 30, 23, 0), zone) == date(2025, 3, 30)


def test_a_move_east_across_midnight_waits_for_the_next_date() -> None:
    reader = Reader(8, joined=at("America/New_York", 2025, 5, 1))
    assert reader.run(at("America/New_York", 2025, 5, 6, 8), "America/New_York") == date(2025, 5, 6)
    # 11:00 in New York is 00:00 on the 7th in Tokyo: a new date, but not yet its hour
    moved = at("America/New_York", 2025, 5, 6, 11)
    assert moved.astimezone(ZoneInfo("Asia/Tokyo")).date() == date(2025, 5, 7)
    assert reader.run(moved, "Asia/Tokyo") is None
    assert reader.run(at("Asia/Tokyo", 2025, 5, 7, 7, 59), "Asia/Tokyo") is None
    assert reader.run(at("Asia/Tokyo", 2025, 5, 7, 8), "Asia/Tokyo") == date(2025, 5, 7)


def test_a_move_west_does_not_serve_a_date_again() -> None:
    reader = Reader(8, joined=at("Asia/Tokyo", 2025, 5, 1))
    assert reader.run(at("Asia/Tokyo", 2025, 5, 6, 8), "Asia/Tokyo") == date(2025, 5, 6)
    # 08:00 on the 6th comes again in New York, 13 hours later
    assert reader.run(at("America/New_York", 2025, 5, 6, 8), "America/New_York") is None
    assert reader.run(at("America/New_York", 2025, 5, 7, 8), "America/New_York") == date(2025, 5, 7)


def test_a_move_across_the_date_line_makes_up_the_date_it_jumped_over() -> None:
    # Pago Pago (UTC-11) to Kiritimati (UTC+14): the clock jumps 25 hours
    reader = Reader(9, joined=at("Pacific/Pago_Pago", 2025, 5, 1))
    assert reader.run(at("Pacific/Pago_Pago", 2025, 5, 6, 9), "Pacific/Pago_Pago") == date(
        2025, 5, 6
    )
    # at 08:30 on the 7th, half an hour before their hour, it is 09:30 on the 8th there
    moved = at("Pacific/Pago_Pago", 2025, 5, 7, 8, 30)
    assert moved.astimezone(ZoneInfo("Pacific/Kiritimati")).hour == 9
    assert reader.run(moved, "Pacific/Kiritimati") == date(2025, 5, 7)
    assert reader.run(moved + timedelta(hours=1), "Pacific/Kiritimati") == date(2025, 5, 8)
    assert reader.run(moved + timedelta(hours=2), "Pacific/Kiritimati") is None


def test_a_run_missed_is_made_up_until_the_next_hour_then_folds() -> None:
    zone = "Europe/Berlin"
    reader = Reader(8, joined=at(zone, 2025, 5, 1))
    reader.last, reader.last_at = date(2025, 5, 5), at(zone, 2025, 5, 5, 8)
    # the machine was off from 07:00 to 23:00: the day's digest still goes, late
    assert reader.run(at(zone, 2025, 5, 6, 23), zone) == date(2025, 5, 6)
    # off from before the 7th's hour until after the 8th's: one digest, for the 8th
    assert reader.run(at(zone, 2025, 5, 8, 9), zone) == date(2025, 5, 8)


def test_a_new_reader_starts_at_their_first_hour_after_joining() -> None:
    zone = "Europe/Berlin"
    late = Reader(8, joined=at(zone, 2025, 5, 6, 12))
    assert late.run(at(zone, 2025, 5, 6, 13), zone) is None
    assert late.run(at(zone, 2025, 5, 7, 8), zone) == date(2025, 5, 7)
    early = Reader(8, joined=at(zone, 2025, 5, 6, 6))
    assert early.run(at(zone, 2025, 5, 6, 8), zone) == date(2025, 5, 6)


def test_the_samoa_day_that_never_was_still_gets_its_digest() -> None:
    # Apia went from 29 December 2011 straight to the 31st (UTC-10 to UTC+14)
    zone = "Pacific/Apia"
    reader = Reader(8, joined=at(zone, 2011, 12, 20))
    runs = hourly(datetime(2011, 12, 25, tzinfo=UTC), 10)
    simulate(reader, runs, [], zone)
    assert_every_date_once(reader, runs[-1], zone)
    assert date(2011, 12, 30) in [p for p, _, _ in reader.sent]


def test_the_readers_with_an_hour_are_due_by_their_own_dates() -> None:
    now = datetime(2025, 5, 6, 23, 30, tzinfo=UTC)
    joined = datetime(2025, 1, 1, tzinfo=UTC)

    def sub(ident: int, zone: str | None, hour: int | None) -> SimpleNamespace:
        return SimpleNamespace(
            id=ident, timezone=zone, digest_hour=hour, last_digest_at=None, created_at=joined
        )

    berlin = ZoneInfo("Europe/Berlin")
    readers = [
        (sub(1, "Asia/Tokyo", 8), date(2025, 5, 6)),  # 08:30 on the 7th in Tokyo
        (sub(2, "Asia/Tokyo", 9), date(2025, 5, 6)),  # 08:30: not yet
        (sub(3, None, 1), date(2025, 5, 5)),  # the site's zone: 01:30 on the 7th in Berlin
        (sub(4, "America/New_York", 19), date(2025, 5, 5)),  # 19:30 on the 6th
        (sub(5, "Asia/Tokyo", None), None),  # no hour: the site's schedule
        (sub(6, "Nowhere/Gone", 1), date(2025, 5, 5)),  # a zone no longer known: the site's
    ]
    due = due_readers(readers, now, berlin)
    assert due == {
        1: date(2025, 5, 7),
        3: date(2025, 5, 7),
        4: date(2025, 5, 6),
        6: date(2025, 5, 7),
    }
    assert by_period(due) == {date(2025, 5, 6): [4], date(2025, 5, 7): [1, 3, 6]}
    assert reader_zone(sub(7, "Nowhere/Gone", 1), berlin) is berlin


@pytest.mark.parametrize("hour", [None, -1, 24, "8", 7.5])
def test_only_a_whole_hour_of_the_day_counts_as_a_chosen_hour(hour: object) -> None:
    assert reader_hour(SimpleNamespace(digest_hour=hour)) is None
    assert reader_hour(SimpleNamespace(digest_hour=7)) == 7
    assert reader_hour(SimpleNamespace(digest_hour=None)) is None


DATE_LINE = [
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
    "Etc/GMT+12",
    "Pacific/Apia",
    "Pacific/Chatham",
    "Pacific/Tongatapu",
    "Pacific/Niue",
    "Pacific/Honolulu",
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    hour=st.integers(0, 23),
    start=starts,
    moves=st.lists(
        st.tuples(st.integers(0, 60 * 24 * 60), st.sampled_from(DATE_LINE)),
        min_size=5,
        max_size=40,
    ),
    jitter=st.lists(st.integers(0, 59), min_size=1, max_size=10),
)
def test_a_reader_hopping_across_the_date_line_gets_every_date_once(
    hour: int, start: datetime, moves: list[tuple[int, str]], jitter: list[int]
) -> None:
    reader = Reader(hour, joined=start)
    runs = hourly(start, 61, jitter)
    when = [(start + timedelta(minutes=m), z) for m, z in moves]
    end_zone = simulate(reader, runs, when, "Pacific/Kiritimati")
    assert_every_date_once(reader, runs[-1], end_zone)
