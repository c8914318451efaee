"""The serve engine: when jobs fire, the catch-up policy, and a clean stop on SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.date import DateTrigger  # type: ignore[import-untyped]

from digest.cron import crontab_trigger
from digest.errors import ConfigError, DigestError
from digest.service.scheduler import (
    DIGEST_JOB,
    DIGEST_MISFIRE_GRACE,
    POLL_JOB,
    build_scheduler,
    needs_catch_up,
)

BERLIN = ZoneInfo("Europe/Berlin")


def nothing() -> None:
    pass


@pytest.fixture
def paused() -> Iterator[Any]:
    scheduler = build_scheduler(
        schedule="0 7 * * *",
        timezone="Europe/Berlin",
        poll_minutes=10,
        run_job=nothing,
        poll_job=nothing,
    )
    scheduler.start(paused=True)  # jobs get their defaults when the scheduler starts
    yield scheduler
    scheduler.shutdown(wait=False)


def test_digest_job_fires_at_the_configured_local_time(paused: Any) -> None:
    job = paused.get_job(DIGEST_JOB)
    now = datetime(2025, 3, 11, 5, 30, tzinfo=UTC)  # 06:30 in Berlin
    assert job.trigger.get_next_fire_time(None, now) == datetime(2025, 3, 11, 7, tzinfo=BERLIN)
    later = datetime(2025, 3, 11, 6, 1, tzinfo=UTC)  # 07:01 in Berlin: tomorrow
    assert job.trigger.get_next_fire_time(None, later) == datetime(2025, 3, 12, 7, tzinfo=BERLIN)


def test_jobs_coalesce_and_never_overlap(paused: Any) -> None:
    digest = paused.get_job(DIGEST_JOB)
    poll = paused.get_job(POLL_JOB)
    for job in (digest, poll):
        assert job.coalesce is True
        assert job.max_instances == 1
    assert digest.misfire_grace_time == DIGEST_MISFIRE_GRACE.total_seconds()
    assert poll.misfire_grace_time == 600
    assert poll.trigger.interval == timedelta(minutes=10)


@pytest.mark.parametrize(
    ("field", "first_fire"),
    [
        ("1", date(2025, 3, 10)),  # Monday, as in cron (APScheduler 3 alone says Tuesday)
        ("0", date(2025, 3, 16)),  # Sunday
        ("7", date(2025, 3, 16)),  # Sunday too
        ("1-5", date(2025, 3, 10)),
        ("sat,sun", date(2025, 3, 15)),
        ("5-7", date(2025, 3, 14)),
        ("*/3", date(2025, 3, 12)),  # Sun, Wed, Sat
    ],
)
def test_weekdays_follow_standard_cron(field: str, first_fire: date) -> None:
    sunday_night = datetime(2025, 3, 9, 23, 0, tzinfo=UTC)
    trigger = crontab_trigger(f"0 7 * * {field}", "UTC")
    assert trigger.get_next_fire_time(None, sunday_night).date() == first_fire


def test_a_bad_schedule_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="schedule"):
        crontab_trigger("61 7 * * *", "UTC")
    with pytest.raises(ConfigError, match="schedule"):
        crontab_trigger("0 7 * * 9", "UTC")


@pytest.mark.parametrize(
    ("last", "now", "expected"),
    [
        (None, datetime(2025, 3, 11, 8, 0, tzinfo=UTC), True),  # never ran, slot passed
        (None, datetime(2025, 3, 11, 6, 0, tzinfo=UTC), False),  # today's slot still to come
        (date(2025, 3, 11), datetime(2025, 3, 11, 8, 0, tzinfo=UTC), False),  # done today
        (date(2025, 3, 10), datetime(2025, 3, 11, 23, 0, tzinfo=UTC), True),  # down all day
        (date(2025, 3, 9), datetime(2025, 3, 11, 6, 59, tzinfo=UTC), False),  # 07:00 covers it
    ],
)
def test_catch_up_runs_only_a_missed_slot_of_today(
    last: date | None, now: datetime, expected: bool
) -> None:
    assert needs_catch_up(last, now, "UTC", "0 7 * * *") is expected


def test_catch_up_uses_the_configured_time_zone() -> None:
    # 22:30 UTC on the 11th is 07:30 on the 12th in Tokyo: the 12th is today there.
    now = datetime(2025, 3, 11, 22, 30, tzinfo=UTC)
    assert needs_catch_up(date(2025, 3, 11), now, "Asia/Tokyo", "0 7 * * *") is True
    assert needs_catch_up(date(2025, 3, 11), now, "UTC", "0 7 * * *") is False
    assert needs_catch_up(date(2025, 3, 12), now, "Asia/Tokyo", "0 7 * * *") is False


def test_catch_up_skips_days_without_a_slot() -> None:
    tuesday = datetime(2025, 3, 11, 12, 0, tzinfo=UTC)
    assert needs_catch_up(None, tuesday, "UTC", "0 7 * * 1") is False
    assert needs_catch_up(None, tuesday, "UTC", "0 7 * * 2") is True


def test_scheduler_runs_the_jobs_poll_first() -> None:
    order: list[str] = []
    done = threading.Event()

    def digest() -> None:
        order.append("digest")
        done.set()

    start = datetime.now(UTC)
    scheduler = build_scheduler(
        schedule="0 7 * * *",
        timezone="UTC",
        poll_minutes=10,
        run_job=digest,
        poll_job=lambda: order.append("poll"),
        digest_trigger=DateTrigger(start + timedelta(milliseconds=50)),
        now=start,
    )
    scheduler.start()
    try:
        assert done.wait(10), "the digest job never fired"
    finally:
        scheduler.shutdown(wait=True)
    assert order == ["poll", "digest"]


def test_catch_up_runs_the_digest_once_at_start(caplog: pytest.LogCaptureFixture) -> None:
    ran = threading.Event()

    def failing_digest() -> None:
        ran.set()
        raise DigestError("smtp said no")

    scheduler = build_scheduler(
        schedule="0 7 1 1 *",  # far away: only the catch-up can fire it
        timezone="UTC",
        poll_minutes=10,
        run_job=failing_digest,
        poll_job=nothing,
        catch_up=True,
        now=datetime.now(UTC) - timedelta(seconds=1),
    )
    with caplog.at_level(logging.INFO, logger="digest.scheduler"):
        scheduler.start()
        try:
            assert ran.wait(10), "the catch-up run never happened"
        finally:
            scheduler.shutdown(wait=True)
    # The failure is logged in one line and the scheduler kept going to a clean shutdown.
    assert "digest failed: smtp said no" in caplog.text


SERVE = """
import sys, threading, time
from digest.service.scheduler import serve

stop = threading.Event()

def run_job():
    print("job started", flush=True)
    for _ in range(1000):  # one "message" per step; stop between messages when asked
        if stop.is_set():
            break
        time.sleep(0.01)
    print(f"job finished early={stop.is_set()}", flush=True)

code = serve(
    schedule="* * * * *",
    timezone="UTC",
    poll_minutes=60,
    run_job=run_job,
    poll_job=lambda: None,
    stop_event=stop,
    last_period=lambda: None,
)
print("exit", code, flush=True)
sys.exit(code)
"""


def test_sigterm_lets_the_job_finish_and_exits_0() -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "job started"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out.splitlines() == ["job finished early=True", "exit 0"]
