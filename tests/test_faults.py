"""Faults nobody is to blame for, against the real command line and a real SMTP server.

Each test asserts what an operator and a subscriber would see: the exit code, one
line on stderr and no traceback, what the server accepted, and what the store
still holds.
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

import digest.cli.context
import digest.deliver.transports
import digest.ingest.dumps
from digest.deliver.send import MAX_ATTEMPTS
from digest.service.status import collect_status
from digest.settings import load_settings
from digest.store.engine import open_store
from tests.conftest import EXAMPLE_A as DUMP_A
from tests.conftest import EXAMPLE_B as DUMP_B
from tests.conftest import Result, Site, store_rows
from tests.smtp_server import DROP, free_port, start_server
from tests.test_service import PEOPLE, SENT_TO, wait_until


def one_error_line(result: Result) -> str:
    """The single ``digest:`` line a failed command prints, with no traceback anywhere."""
    assert "Traceback" not in result.out + result.err
    lines = [line for line in result.err.splitlines() if line.startswith("digest:")]
    assert len(lines) == 1, result.err
    return lines[0]


# --- a clock that goes backwards --------------------------------------------------------


class _TwoHoursBehind(datetime):
    @classmethod
    def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
        return datetime.now(tz) - timedelta(hours=2)  # type: ignore[arg-type]


def test_papers_ingested_with_the_clock_behind_still_reach_the_next_digest(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    site.subscribe(PEOPLE)
    site.drop_in_inbox(DUMP_B, "daily.txt")
    first = site.cli("run", "--json")
    assert first.code == 0, first.err
    assert first.json()["digests"]["sent"] == len(SENT_TO)

    # The next listing comes in while the clock is two hours behind the last run.
    with monkeypatch.context() as skewed:
        skewed.setattr(digest.ingest.dumps, "datetime", _TwoHoursBehind)
        skewed.setattr(digest.cli.context, "datetime", _TwoHoursBehind)
        site.drop_in_inbox(DUMP_A, "trending.txt")
        ingested = site.cli("ingest", "--inbox", "--json")
    assert ingested.code == 0, ingested.err
    new = ingested.json()["new"]
    assert new > 0
    (behind,) = store_rows(
        site.data,
        "SELECT count(*) FROM paper p, subscriber s WHERE p.first_seen < s.last_digest_at"
        " AND p.seq > s.seen_upto AND s.email = 'ada@example.org'",
    )
    assert behind == (new,)  # first seen "before" the last digest by the wall clock

    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    second = site.cli("run", "--json", "--period", tomorrow)

    assert second.code == 0, second.err
    sent = second.json()["digests"]["sent"]
    assert sent > 0
    assert len(site.received()) == len(SENT_TO) + sent
    (undelivered,) = store_rows(
        site.data,
        "SELECT count(*) FROM paper p WHERE p.seq > (SELECT min(seen_upto) FROM subscriber"
        " WHERE status = 'active')",
    )
    assert undelivered == (0,)  # every reader's cut-off has moved past the skewed ingest
    (items,) = store_rows(
        site.data,
        f"SELECT count(*) FROM digestitem i JOIN digest d ON d.id = i.digest_id"
        f" WHERE d.period = '{tomorrow}'",
    )
    assert items[0] > 0  # type: ignore[operator]


# --- the mail server is down, refuses the login, or the disk is full --------------------


def pending_attempts(site: Site) -> dict[str, tuple[str, int]]:
    return {row.email: (row.status, row.attempts) for row in site.digests()}


def test_a_mail_server_that_is_down_costs_no_attempt_and_says_why(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    site.subscribe(PEOPLE)
    site.drop_in_inbox(DUMP_B, "daily.txt")
    down = free_port()
    monkeypatch.setenv("DIGEST_MAIL_TRANSPORT", f"smtp://127.0.0.1:{down}")
    reason = f"mail server 127.0.0.1:{down} refused the connection"

    for n in range(MAX_ATTEMPTS + 1):  # more runs than a digest has attempts
        result = site.cli("run", "--verbose")
        assert result.code == 1, result.err
        line = one_error_line(result)
        assert line == (
            f"digest: sending stopped: {reason}; {len(SENT_TO)} digest(s) still pending;"
            " see digest status"
        )
        assert f"{len(SENT_TO)} still pending ({reason})" in result.out
        if n == 0:
            first = site.cli("status", "--json").json()["transport"]
    assert site.server.handler.connections == 0
    outbox = pending_attempts(site)
    assert outbox.pop("nobody@example.org") == ("skipped", 0)
    assert set(outbox.values()) == {("pending", 0)}  # nobody's fault: no attempt spent

    status = site.cli("status", "--json").json()
    assert status["transport"]["last_error"] == reason
    assert status["transport"]["failing_since"] == first["failing_since"]  # since the first
    assert status["transport"]["last_failure_at"] > first["last_failure_at"]
    assert any(reason in w and "since" in w for w in status["warnings"]), status["warnings"]
    assert any(
        f"{len(SENT_TO)} digest(s) waiting to be sent ({reason})" in w for w in status["warnings"]
    )
    assert reason in site.cli("status").out

    monkeypatch.setenv("DIGEST_MAIL_TRANSPORT", site.server.url())
    back = site.cli("run", "--json")

    assert back.code == 0, back.err
    assert back.json()["digests"]["sent"] == len(SENT_TO)
    assert sorted(rcpt for rcpt, _ in site.received()) == SENT_TO  # each once
    assert {s for e, (s, _) in pending_attempts(site).items() if e in SENT_TO} == {"sent"}
    healed = site.cli("status", "--json").json()
    assert healed["transport"]["last_error"] is None
    assert healed["transport"]["failing_since"] is None
    assert not [w for w in healed["warnings"] if "mail transport" in w]


def test_a_refused_login_costs_no_attempt(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    guarded = start_server(logins={"digest": "right"})
    try:
        site.subscribe(PEOPLE)
        site.drop_in_inbox(DUMP_B, "daily.txt")
        monkeypatch.setenv("DIGEST_MAIL_TRANSPORT", guarded.url("digest", "wrong"))

        result = site.cli("run")

        assert result.code == 1
        line = one_error_line(result)
        assert f"mail server 127.0.0.1:{guarded.port} refused the login: 535" in line
        assert "wrong" not in result.out + result.err
        assert guarded.handler.received == []
        outbox = pending_attempts(site)
        assert {outbox[a] for a in SENT_TO} == {("pending", 0)}
    finally:
        guarded.controller.stop()


class _FullDisk:
    """The ``os`` module as the file transport sees it on a full disk."""

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)

    @staticmethod
    def replace(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_costs_no_attempt(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    site.subscribe(PEOPLE)
    site.drop_in_inbox(DUMP_B, "daily.txt")
    outbox_dir = site.root / "outbox"
    monkeypatch.setenv("DIGEST_MAIL_TRANSPORT", f"file://{outbox_dir}")
    with monkeypatch.context() as full:
        full.setattr(digest.deliver.transports, "os", _FullDisk())
        result = site.cli("run")

    assert result.code == 1
    line = one_error_line(result)
    assert f"cannot write to the outbox folder {outbox_dir}: No space left on device" in line
    assert [p.name for p in outbox_dir.iterdir()] == []  # no temp file left behind
    assert {pending_attempts(site)[a] for a in SENT_TO} == {("pending", 0)}

    again = site.cli("run", "--json")
    assert again.code == 0, again.err
    assert len(list(outbox_dir.glob("*.eml"))) == len(SENT_TO)


def test_only_answers_about_the_recipient_cost_attempts(site: Site) -> None:
    site.server.handler.rcpt_replies["ada@example.org"] = "451 4.2.0 mailbox busy"
    site.subscribe(PEOPLE)
    # a reader mailed every period, so each run has mail the server takes besides ada's
    joined = site.cli("subscribe", "zed@example.org", "--interest", "lattice", "--send-empty")
    assert joined.code == 0, joined.err
    site.drop_in_inbox(DUMP_B, "daily.txt")
    # periods of days gone by: a run refuses a day that has not begun
    today = datetime.now(UTC).date() - timedelta(days=MAX_ATTEMPTS)

    for n in range(1, MAX_ATTEMPTS):
        result = site.cli("run", "--period", (today + timedelta(days=n)).isoformat())
        assert result.code == 0, result.err  # a deferral is no failed run
        assert pending_attempts(site)["ada@example.org"] == ("pending", n)
        assert "1 still pending (<" in result.out and "451 4.2.0 mailbox busy" in result.out
    # a dropped connection is no answer about ada: it costs nothing
    site.server.handler.rcpt_replies.clear()
    site.server.handler.data_replies = [DROP]
    dropped = site.cli("run", "--period", (today + timedelta(days=MAX_ATTEMPTS - 1)).isoformat())
    assert dropped.code == 0, dropped.err
    assert pending_attempts(site)["ada@example.org"] == ("pending", MAX_ATTEMPTS - 1)

    site.server.handler.rcpt_replies["ada@example.org"] = "451 4.2.0 mailbox busy"
    last = site.cli("run", "--period", (today + timedelta(days=MAX_ATTEMPTS)).isoformat())
    # out of attempts, but all of them within minutes: not failed for good (see test_outage)
    assert last.code == 0, last.err
    assert pending_attempts(site)["ada@example.org"] == ("pending", MAX_ATTEMPTS)
    assert "ada@example.org" not in {rcpt for rcpt, _ in site.received()}
    assert sorted({rcpt for rcpt, _ in site.received()} - {"zed@example.org"}) == [
        a for a in SENT_TO if a != "ada@example.org"
    ]


# --- one address never breaks a run --------------------------------------------------------


def test_an_address_the_server_cannot_take_is_set_aside_and_the_run_goes_on(site: Site) -> None:
    site.subscribe(PEOPLE)
    # subscribe refuses the first and stores the second in its IDNA form today; a store
    # written by an older version may hold both as they were typed
    with sqlite3.connect(site.data / "digest.db") as raw:
        raw.executemany(
            "INSERT INTO subscriber (email, interests, token_salt, created_at)"
            " VALUES (?, '[\"video\"]', ?, '2026-01-01 00:00:00')",
            [("üser@example.org", "salt1"), ("user@bücher.example", "salt2")],
        )
    site.drop_in_inbox(DUMP_B, "daily.txt")

    result = site.cli("run")

    assert result.code == 0, result.err
    assert "Traceback" not in result.out + result.err
    assert "set aside: üser@example.org: address needs SMTPUTF8" in result.out
    received = sorted(rcpt for rcpt, _ in site.received())
    assert received == sorted([*SENT_TO, "user@xn--bcher-kva.example"])  # IDNA on the wire
    outbox = pending_attempts(site)
    assert outbox["üser@example.org"] == ("failed", 0)
    assert outbox["user@bücher.example"] == ("sent", 1)
    report = site.cli("run", "--json", "--dry-run")
    assert report.code == 0
    status = site.cli("status", "--json").json()
    (failed,) = status["failed_digests"]
    assert failed["email"] == "üser@example.org" and "SMTPUTF8" in failed["error"]
    listed = {
        s["email"]: s["status"] for s in site.cli("subscribers", "--json").json()["subscribers"]
    }
    assert listed["üser@example.org"] == "active"  # not bounced: the server never refused it


# --- a run killed with -9 -------------------------------------------------------------------


@pytest.mark.parametrize("next_step", ["status", "run"])
def test_a_run_killed_with_9_shows_as_interrupted_and_the_next_run_sends_the_rest(
    site: Site, next_step: str
) -> None:
    site.subscribe(PEOPLE)
    site.drop_in_inbox(DUMP_B, "daily.txt")
    handler = site.server.handler
    handler.data_gate = threading.Event()
    killed = site.spawn("run", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: handler.data_commands >= 1, "the run to start sending")
        assert site.cli("status", "--json").json()["runs"][0]["status"] == "running"
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=10)
    finally:
        handler.data_gate.set()
        if killed.poll() is None:
            killed.kill()
    time.sleep(0.5)  # the server finishes (or drops) what was in flight when the run died
    in_flight = {rcpt for rcpt, _ in site.received()}

    if next_step == "status":
        status = site.cli("status", "--json")
        assert status.code == 0, status.err
        data = status.json()
        assert data["running"] is None
        assert data["runs"][0]["status"] == "interrupted"
        assert store_rows(site.data, "SELECT status FROM run") == [("interrupted",)]
    result = site.cli("run", "--json")

    assert result.code == 0, result.err
    runs = site.cli("status", "--json").json()["runs"]
    assert [r["status"] for r in runs] == ["ok", "interrupted"]
    received = site.received()
    counts = Counter(rcpt for rcpt, _ in received)
    assert sorted(counts) == SENT_TO
    # the documented crash window: a message the server took before the kill may come again,
    # under the same Message-ID
    assert {a for a, n in counts.items() if n > 1} <= in_flight
    ids = {row.email: row.message_id for row in site.digests()}
    assert all(str(m["Message-ID"]) == ids[rcpt] for rcpt, m in received)
    assert {row.status for row in site.digests() if row.email in SENT_TO} == {"sent"}


def test_status_never_waits_on_a_writer_to_mark_a_dead_run(site: Site) -> None:
    settings = load_settings()
    engine = open_store(settings.database_url)
    db = site.data / "digest.db"
    with sqlite3.connect(db) as raw:
        raw.execute(
            "INSERT INTO run (kind, started_at, status)"
            " VALUES ('run', '2026-01-01 07:00:00', 'running')"
        )
    writer = sqlite3.connect(db, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # a long ingest holding the write lock
        started = time.monotonic()
        data = collect_status(settings, engine, datetime.now(UTC))
        assert time.monotonic() - started < 5
        assert data["runs"][0]["status"] == "interrupted"  # shown, not yet written
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        engine.dispose()
    assert store_rows(site.data, "SELECT status FROM run") == [("running",)]
    assert site.cli("status", "--json").json()["runs"][0]["status"] == "interrupted"
    assert store_rows(site.data, "SELECT status FROM run") == [("interrupted",)]


# --- feeds written by several processes, under serve -----------------------------------------


def test_serve_writes_many_feeds_in_worker_processes(site: Site) -> None:
    from digest.feeds.publish import PARALLEL_FROM

    readers = PARALLEL_FROM // 2  # two feeds each: enough for the feeds to go to processes
    assert site.cli("ingest", "--inbox").code == 0  # makes the store
    with sqlite3.connect(site.data / "digest.db") as raw:
        # interests that match nothing: no mail to wait for, yet every reader gets private feeds
        raw.executemany(
            "INSERT INTO subscriber (email, interests, token_salt, created_at)"
            " VALUES (?, '[\"lattice chromodynamics\"]', ?, '2026-01-01 00:00:00')",
            [(f"reader{n}@example.org", f"salt{n}") for n in range(readers)],
        )
    site.drop_in_inbox(DUMP_B, "daily.txt")
    # Midnight has always passed and no run has happened: serve catches up at start.
    # feed_files=all: the private feeds are written as files even with the web front on
    site.env.update(DIGEST_SCHEDULE="0 0 * * *", DIGEST_POLL_MINUTES="60", DIGEST_FEED_FILES="all")
    log_file = site.root / "serve.log"
    with log_file.open("w") as log:
        serving = site.spawn("serve", stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(
                lambda: (
                    store_rows(site.data, "SELECT count(*) FROM run WHERE status != 'running'")
                    == [(1,)]
                ),
                "the catch-up run to finish",
                timeout=120,
            )
            serving.send_signal(signal.SIGTERM)
            code = serving.wait(timeout=30)
        finally:
            if serving.poll() is None:
                serving.kill()
                serving.wait()
    logs = log_file.read_text()
    assert code == 0, logs
    assert "Traceback" not in logs and "worker died" not in logs
    (run,) = site.cli("status", "--json").json()["runs"]
    assert run["status"] == "ok", run["error"]
    assert run["figures"]["feeds"]["written"] == 2 * (readers + 1)
    assert run["figures"]["digests"]["skipped"] == readers
    assert len(list((site.data / "feeds" / "private").glob("*.atom"))) == readers


# --- a source that drips --------------------------------------------------------------------


def test_a_dripping_source_does_not_hold_the_run_past_its_deadline(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_fetch import Reply, Server

    http = Server()
    http.thread.start()
    try:
        http.route("/daily.json", Reply(body=b"[" + b" " * 10_000 + b"]", drip=0.05))
        monkeypatch.setenv("DIGEST_SOURCES", http.url("/daily.json"))
        monkeypatch.setenv("DIGEST_FETCH_TIMEOUT", "2")
        site.subscribe(PEOPLE)
        site.drop_in_inbox(DUMP_B, "daily.txt")
        started = time.monotonic()
        result = site.cli("run", "--json")
        took = time.monotonic() - started
    finally:
        http.httpd.shutdown()
        http.httpd.server_close()

    assert result.code == 0, result.err  # a source that failed is reported, not a failed run
    assert 2 <= took < 8, took
    report = result.json()
    assert report["sources"] == {http.url("/daily.json"): "error"}
    assert report["digests"]["sent"] == len(SENT_TO) == len(site.received())
    inbox = site.data / "inbox"
    assert [p.name for p in inbox.iterdir() if p.is_file()] == []  # no .part file left
    (source,) = site.cli("status", "--json").json()["sources"]
    assert source["error"] == "timed out after 2s"
