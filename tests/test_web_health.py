"""``/healthz`` and ``/metrics`` on a real installation."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from digest.settings import load_settings
from digest.store import runs
from digest.store.engine import open_store
from digest.web.app import create_app
from digest.web.health import schedule_period
from tests.conftest import EXAMPLE_A, Site, store_rows
from tests.test_outage import TOPICS, day_dump


def client_at(site: Site, now: datetime, engine: sa.engine.Engine | None = None) -> TestClient:
    app = create_app(load_settings(None), engine, now=lambda: now)
    return TestClient(app, base_url=site.env["DIGEST_BASE_URL"], raise_server_exceptions=False)


def test_a_new_site_waits_for_its_first_run(site: Site) -> None:
    response = site.web().get("/healthz")
    assert response.status_code == 200
    data = response.json()
    assert data["status"] == "waiting for the first run"
    assert data["database"] == "ok" and data["last_ok_run"] is None
    assert data["stale_after_seconds"] == 2 * 24 * 3600  # two periods of the daily schedule


def test_healthy_after_a_run_and_stale_two_periods_later(site: Site) -> None:
    site.drop_in_inbox(EXAMPLE_A, "a.txt")
    assert site.cli("run").code == 0
    ((finished,),) = store_rows(site.data, "SELECT finished_at FROM run")
    ended = datetime.fromisoformat(str(finished)).replace(tzinfo=UTC)
    fresh = client_at(site, ended + timedelta(hours=47)).get("/healthz")
    assert fresh.status_code == 200
    assert fresh.json()["status"] == "ok"
    assert fresh.json()["last_ok_run_age_seconds"] == 47 * 3600
    stale = client_at(site, ended + timedelta(hours=49)).get("/healthz")
    assert stale.status_code == 503
    assert stale.json()["status"] == "stale"
    assert stale.headers["content-type"].startswith("application/json")


def test_runs_that_all_failed_are_unhealthy(site: Site) -> None:
    engine = open_store(load_settings(None).database_url)
    now = datetime(2026, 3, 12, 7, 0, tzinfo=UTC)
    run_id = runs.start(engine, period=now.date(), now=now)
    runs.finish(engine, run_id, status="failed", figures="{}", error="boom", now=now)
    response = client_at(site, now + timedelta(minutes=5), engine).get("/healthz")
    assert response.status_code == 503
    assert response.json()["status"] == "no successful run"
    assert response.json()["last_run_status"] == "failed"


def test_an_unreachable_database_is_a_503(site: Site) -> None:
    broken = sa.create_engine(f"sqlite:///{site.root / 'no' / 'such' / 'folder' / 'x.db'}")
    response = client_at(site, datetime.now(UTC), broken).get("/healthz")
    assert response.status_code == 503
    data = response.json()
    assert data["status"] == "database unreachable"
    assert data["database"].startswith("error: ")
    assert "Traceback" not in response.text


def test_the_period_of_a_weekday_schedule_is_its_longest_gap() -> None:
    friday = datetime(2026, 3, 13, 12, 0, tzinfo=UTC)
    assert schedule_period("0 7 * * 1-5", "UTC", friday) == timedelta(days=3)
    assert schedule_period("*/30 * * * *", "UTC", friday) == timedelta(minutes=30)


def metric(text: str, name: str, labels: str = "") -> float:
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    assert found, f"{name}{labels} missing"
    return float(found.group(1))


def test_metrics_in_prometheus_text_format(site: Site) -> None:
    site.subscribe({"ada@example.org": ["federated"], "bob@example.org": ["lattice qcd"]})
    assert site.cli("unsubscribe", "bob@example.org").code == 0
    site.drop_in_inbox(EXAMPLE_A, "a.txt")
    assert site.cli("run").code == 0
    response = loopback_client(site).get("/metrics")  # not open to the world
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    ((papers,),) = store_rows(site.data, "SELECT count(*) FROM paper")
    assert metric(text, "digest_papers") == papers
    assert metric(text, "digest_subscribers", '{status="active"}') == 1
    assert metric(text, "digest_subscribers", '{status="unsubscribed"}') == 1
    assert metric(text, "digest_outbox_digests", '{status="sent"}') == 1
    assert metric(text, "digest_sends_total", '{result="sent"}') == len(site.received()) == 1
    assert metric(text, "digest_sends_total", '{result="failed"}') == 0
    assert metric(text, "digest_last_run_ok") == 1
    ((finished,),) = store_rows(site.data, "SELECT finished_at FROM run")
    ended = datetime.fromisoformat(str(finished)).replace(tzinfo=UTC)
    assert metric(text, "digest_last_run_timestamp_seconds") == round(ended.timestamp())
    for line in text.splitlines():  # every line a comment or "name{labels} value"
        assert line.startswith("# ") or re.fullmatch(
            r"[a-z_]+(\{[a-z_]+=\"[a-z0-9_]+\"\})? \S+", line
        )
    names = {m.group(1) for m in re.finditer(r"^# TYPE (\S+) (gauge|counter)$", text, re.M)}
    assert {"digest_papers", "digest_subscribers", "digest_sends_total"} <= names


def loopback_client(site: Site, now: datetime | None = None, **options: object) -> TestClient:
    clock = (lambda: now) if now is not None else (lambda: datetime.now(UTC))
    app = create_app(load_settings(None), None, now=clock)
    return TestClient(
        app,
        base_url=site.env["DIGEST_BASE_URL"],
        raise_server_exceptions=False,
        client=("127.0.0.1", 50000),
        **options,  # type: ignore[arg-type]
    )


BUSY = "451 4.3.0 try again later"


def test_a_run_that_could_not_send_is_unhealthy_and_says_why(site: Site) -> None:
    site.subscribe({reader: [words] for reader, words in TOPICS.items()})
    site.drop_in_inbox(day_dump(site.root, 0), "day0.jsonl")
    site.server.handler.every_data = BUSY
    assert site.cli("run").code == 1

    response = loopback_client(site).get("/healthz")

    assert response.status_code == 503
    data = response.json()
    assert data["status"] == "last run could not send"
    assert BUSY in data["reason"]
    assert data["last_run_status"] == "failed"
    text = loopback_client(site).get("/metrics").text
    assert metric(text, "digest_last_run_ok") == 0
    status = site.cli("status")
    assert "could not send" in status.out and BUSY in status.out  # plain text, not only --json

    site.server.handler.every_data = None
    assert site.cli("run").code == 0
    assert loopback_client(site).get("/healthz").status_code == 200


def test_digests_waiting_longer_than_max_pending_hours_are_unhealthy(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIGEST_MAX_PENDING_HOURS", "12")
    site.subscribe({"ada@example.org": ["federated"], "cy@example.org": ["speech"]})
    site.drop_in_inbox(EXAMPLE_A, "a.txt")
    site.server.handler.rcpt_replies["ada@example.org"] = "452 4.2.2 mailbox full"
    assert site.cli("run").code == 0  # one full mailbox is no failed run
    ((created,),) = store_rows(site.data, "SELECT created_at FROM digest WHERE status = 'pending'")
    made = datetime.fromisoformat(str(created)).replace(tzinfo=UTC)

    soon = loopback_client(site, made + timedelta(hours=11)).get("/healthz")
    assert soon.status_code == 200, soon.json()
    late = loopback_client(site, made + timedelta(hours=13))
    response = late.get("/healthz")
    assert response.status_code == 503
    data = response.json()
    assert data["status"] == "digests waiting too long"
    assert "1 digest(s) waiting longer than 12 h" in data["reason"]
    assert data["oldest_pending_age_seconds"] == 13 * 3600
    text = late.get("/metrics").text
    assert metric(text, "digest_pending_oldest_age_seconds") == 13 * 3600
    assert metric(text, "digest_pending_digests", '{age="12h_to_1d"}') == 1
    assert metric(text, "digest_pending_digests", '{age="under_1h"}') == 0


def test_metrics_are_for_loopback_or_a_bearer_token(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = ("203.0.113.7", 41000)
    base = site.env["DIGEST_BASE_URL"]
    app = create_app(load_settings(None))
    far = TestClient(app, base_url=base, raise_server_exceptions=False, client=outside)
    assert far.get("/metrics").status_code == 403
    assert far.get("/healthz").status_code == 200  # load balancers ask from anywhere

    monkeypatch.setenv("DIGEST_METRICS_TOKEN", "a-long-scrape-token-0123456789")
    app = create_app(load_settings(None))
    far = TestClient(app, base_url=base, raise_server_exceptions=False, client=outside)
    refused = far.get("/metrics")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    wrong = far.get("/metrics", headers={"authorization": "Bearer not-it"})
    assert wrong.status_code == 401
    right = far.get("/metrics", headers={"authorization": "Bearer a-long-scrape-token-0123456789"})
    assert right.status_code == 200 and "digest_papers" in right.text
    assert loopback_client(site).get("/metrics").status_code == 200
