"""Each reader's morning, through a real store: the runs plan the readers whose own hour has
come, each for their own date, and the site's readers keep the site's schedule."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from digest.deliver.transports import RecordingTransport
from digest.ingest.dumps import Clock
from digest.rank import ranker
from digest.service import cycle
from digest.service.cycle import last_run_period, readers_due, run_cycle
from digest.service.scheduler import HOURS_JOB, build_scheduler, needs_catch_up
from digest.service.subscriptions import operator_patch, upsert_subscriber
from digest.service.worker import plan_if_due
from digest.settings import Settings, load_settings
from digest.store.engine import open_store

JOINED = datetime(2026, 3, 11, 22, 0, tzinfo=UTC)  # 07:00 on the 12th in Tokyo
# Who wants their digest when: (time zone, hour); None: the site's schedule.
READERS: dict[str, tuple[str | None, int | None]] = {
    "site@example.org": (None, None),
    "tokyo@example.org": ("Asia/Tokyo", 8),
    "osaka@example.org": ("Asia/Tokyo", 8),
    "york@example.org": ("America/New_York", 8),
    "delhi@example.org": ("Asia/Kolkata", 8),
}
INTERESTS = ["diffusion", "language model", "speech"]


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    env = {
        "DIGEST_DATA_DIR": str(tmp_path / "data"),
        "DIGEST_SMTP_CONNECTIONS": "1",
        "DIGEST_DATABASE_URL": database_url,
        "DIGEST_TIMEZONE": "Europe/Berlin",
        "DIGEST_SEND_EMPTY": "true",
    }
    return load_settings(environ=env, cwd=tmp_path)


@pytest.fixture
def store(settings: Settings, dump_b: Path) -> Iterator[Engine]:
    engine = open_store(settings.database_url)
    for address, (zone, hour) in READERS.items():
        patch = operator_patch(address, INTERESTS, send_empty=True, digest_hour=hour)
        upsert_subscriber(engine, patch, now=JOINED)
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE subscriber SET timezone = :zone WHERE email = :email"),
                {"zone": zone, "email": address},
            )
    settings.inbox.mkdir(parents=True, exist_ok=True)
    shutil.copy(dump_b, settings.inbox / "daily.txt")
    yield engine
    engine.dispose()


def clock_at(moment: datetime) -> Clock:
    moments = iter(moment + timedelta(milliseconds=i) for i in range(1_000_000))
    return Clock(lambda: next(moments))


def periods(engine: Engine) -> dict[str, list[date]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT s.email, d.period FROM digest d JOIN subscriber s"
                " ON s.id = d.subscriber_id ORDER BY s.email, d.period"
            )
        ).all()
    found: dict[str, list[date]] = {}
    for address, period in rows:
        found.setdefault(address, []).append(
            period if isinstance(period, date) else date.fromisoformat(period)
        )
    return found


def hours_run(settings: Settings, engine: Engine, moment: datetime) -> RecordingTransport:
    transport = RecordingTransport()
    run_cycle(settings, engine, clock=clock_at(moment), transport=transport, hours_only=True)
    return transport


def test_each_reader_gets_the_digest_of_their_own_date_at_their_own_hour(
    settings: Settings, store: Engine
) -> None:
    # 23:00 UTC on the 11th is 08:00 on the 12th in Tokyo: the two Tokyo readers' hour
    tokyo = hours_run(settings, store, datetime(2026, 3, 11, 23, 0, tzinfo=UTC))
    assert sorted(m.recipient for m in tokyo.sent) == ["osaka@example.org", "tokyo@example.org"]
    assert periods(store) == {
        "osaka@example.org": [date(2026, 3, 12)],
        "tokyo@example.org": [date(2026, 3, 12)],
    }
    # an hour later nobody else is due, and nobody gets a second one
    assert hours_run(settings, store, datetime(2026, 3, 12, 0, 0, tzinfo=UTC)).sent == []
    # 02:30 UTC is 08:00 in Delhi; 12:00 UTC is 08:00 in New York (daylight saving since
    # the 8th); the site's reader waits for the site's run
    delhi = hours_run(settings, store, datetime(2026, 3, 12, 2, 30, tzinfo=UTC))
    assert [m.recipient for m in delhi.sent] == ["delhi@example.org"]
    assert hours_run(settings, store, datetime(2026, 3, 12, 11, 45, tzinfo=UTC)).sent == []
    york = hours_run(settings, store, datetime(2026, 3, 12, 12, 0, tzinfo=UTC))
    assert [m.recipient for m in york.sent] == ["york@example.org"]
    assert "site@example.org" not in periods(store)
    # the site's run (07:00 in Berlin on the 13th) plans the site's reader for the site's
    # date, and the readers whose 13th has begun: Tokyo's at 08:00, Delhi's (11:30 there)
    site = RecordingTransport()
    report = run_cycle(
        settings, store, clock=clock_at(datetime(2026, 3, 13, 6, 0, tzinfo=UTC)), transport=site
    )
    assert report.period == date(2026, 3, 13)
    assert sorted(m.recipient for m in site.sent) == [
        "delhi@example.org",
        "osaka@example.org",
        "site@example.org",
        "tokyo@example.org",
    ]
    assert periods(store)["site@example.org"] == [date(2026, 3, 13)]
    assert periods(store)["tokyo@example.org"] == [date(2026, 3, 12), date(2026, 3, 13)]


def test_readers_of_many_zones_due_at_once_are_ranked_together(
    settings: Settings, store: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []  # readers whose interests each day's matching was made for
    start = ranker.Ranking.__init__

    def counting(self: ranker.Ranking, papers: Any, profiles: Any, *args: Any, **kw: Any) -> None:
        profiles = list(profiles)
        calls.append(len(profiles))
        start(self, papers, profiles, *args, **kw)

    monkeypatch.setattr(ranker.Ranking, "__init__", counting)
    # the machine was off all day: at 23:30 UTC on the 12th Tokyo (08:30 on the 13th),
    # Delhi (05:00 on the 13th, its 12th still unserved) and New York (19:30 on the 12th)
    # are all due, for two different dates: one ranking for the four of them
    sent = hours_run(settings, store, datetime(2026, 3, 12, 23, 30, tzinfo=UTC))
    assert len(sent.sent) == 4
    assert calls == [4]
    assert periods(store) == {
        "tokyo@example.org": [date(2026, 3, 13)],
        "osaka@example.org": [date(2026, 3, 13)],
        "delhi@example.org": [date(2026, 3, 12)],
        "york@example.org": [date(2026, 3, 12)],
    }
    # and each message names its own reader's date in its Message-ID's period
    ids = {m.recipient: m.message_id for m in sent.sent}
    assert len(set(ids.values())) == 4


def test_a_move_east_across_midnight_waits_for_the_next_date(
    settings: Settings, store: Engine
) -> None:
    hours_run(settings, store, datetime(2026, 3, 12, 12, 0, tzinfo=UTC))  # 08:00 New York
    assert periods(store)["york@example.org"] == [date(2026, 3, 12)]
    with store.begin() as conn:  # 16:00 UTC: 01:00 on the 13th in Tokyo
        conn.execute(
            sa.text(
                "UPDATE subscriber SET timezone = 'Asia/Tokyo' WHERE email = 'york@example.org'"
            )
        )
    hours_run(settings, store, datetime(2026, 3, 12, 16, 0, tzinfo=UTC))
    assert periods(store)["york@example.org"] == [date(2026, 3, 12)]
    hours_run(settings, store, datetime(2026, 3, 12, 23, 0, tzinfo=UTC))  # 08:00 on the 13th
    assert periods(store)["york@example.org"] == [date(2026, 3, 12), date(2026, 3, 13)]


def test_an_explicit_period_plans_everybody_for_that_date(
    settings: Settings, store: Engine
) -> None:
    transport = RecordingTransport()
    run_cycle(
        settings,
        store,
        clock=clock_at(datetime(2026, 3, 12, 6, 0, tzinfo=UTC)),
        period=date(2026, 3, 12),
        transport=transport,
    )
    assert len(transport.sent) == len(READERS)
    assert all(p == [date(2026, 3, 12)] for p in periods(store).values())
    # the Tokyo readers' 12th is served: their next hour gives them the 13th, not the 12th
    again = hours_run(settings, store, datetime(2026, 3, 12, 23, 0, tzinfo=UTC))
    assert sorted(m.recipient for m in again.sent) == ["osaka@example.org", "tokyo@example.org"]
    assert periods(store)["tokyo@example.org"] == [date(2026, 3, 12), date(2026, 3, 13)]


def test_a_quarter_hour_with_nobody_due_starts_no_run(settings: Settings, store: Engine) -> None:
    moment = datetime(2026, 3, 11, 22, 30, tzinfo=UTC)  # nobody's 08:00 since they joined
    assert readers_due(settings, store, now=moment) == 0
    assert readers_due(settings, store, now=datetime(2026, 3, 11, 23, 0, tzinfo=UTC)) == 2


def test_a_run_for_the_readers_hours_does_not_stand_for_the_sites_run(
    settings: Settings, store: Engine
) -> None:
    hours_run(settings, store, datetime(2026, 3, 12, 12, 0, tzinfo=UTC))  # 13:00 in Berlin
    assert last_run_period(store) is None
    # so a restart after the site's 07:00 still makes the site's run up
    assert needs_catch_up(
        last_run_period(store),
        datetime(2026, 3, 12, 12, 5, tzinfo=UTC),
        ZoneInfo("Europe/Berlin"),
        "0 7 * * *",
    )


def test_a_worker_plans_at_the_sites_schedule_only_so_the_readers_hours_need_their_own_runs(
    settings: Settings, store: Engine
) -> None:
    # 23:00 UTC on the 11th: the Tokyo readers' 08:00, the small hours of the 12th in Berlin
    tokyo = datetime(2026, 3, 11, 23, 0, tzinfo=UTC)
    assert readers_due(settings, store, now=tokyo) == 2
    assert plan_if_due(settings, store, clock=clock_at(tokyo)) is False
    assert periods(store) == {}
    # hence deploy/digest-hours.timer beside the workers: `digest run --hours` serves them
    hours_run(settings, store, tokyo)
    assert sorted(periods(store)) == ["osaka@example.org", "tokyo@example.org"]


def test_a_dry_run_shows_the_readers_due_for_their_own_dates(
    settings: Settings, store: Engine
) -> None:
    report = run_cycle(
        settings,
        store,
        clock=clock_at(datetime(2026, 3, 11, 23, 0, tzinfo=UTC)),
        dry_run=True,
        hours_only=True,
    )
    assert sorted(p["email"] for p in report.previews) == [
        "osaka@example.org",
        "tokyo@example.org",
    ]
    assert periods(store) == {}


def nothing() -> None:
    pass


def test_serve_looks_at_the_readers_hours_every_quarter_hour() -> None:
    scheduler = build_scheduler(
        schedule="0 7 * * *",
        timezone="Europe/Berlin",
        poll_minutes=10,
        run_job=nothing,
        poll_job=nothing,
        hours_job=nothing,
    )
    scheduler.start(paused=True)
    try:
        job = scheduler.get_job(HOURS_JOB)
        now = datetime(2026, 3, 12, 2, 20, tzinfo=UTC)
        fire = job.trigger.get_next_fire_time(None, now)
        assert fire == datetime(2026, 3, 12, 2, 30, tzinfo=UTC)
    finally:
        scheduler.shutdown(wait=False)
    without = build_scheduler(
        schedule="0 7 * * *",
        timezone="Europe/Berlin",
        poll_minutes=10,
        run_job=nothing,
        poll_job=nothing,
    )
    without.start(paused=True)
    try:
        assert without.get_job(HOURS_JOB) is None
    finally:
        without.shutdown(wait=False)


def test_the_hours_run_is_part_of_the_cycle_module() -> None:
    # the function serve's quarter-hour job calls before it takes the run lock
    assert cycle.readers_due is readers_due
