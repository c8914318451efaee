"""The service end to end: the real command line, a real SMTP server on loopback, real processes.

Each test runs ``digest`` as an operator would (in-process through ``main`` where
that is enough, as a separate process where processes are the point: the run
lock, SIGTERM) against an aiosmtpd server, and then looks at what the server
received and what the store recorded.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr, parsedate_to_datetime
from pathlib import Path

import pytest

from tests.conftest import SENDER, SITE_HOST, Site

PEOPLE = {
    "ada@example.org": ["federated"],
    "bob@example.org": ["diffusion -survey"],
    "cy@example.org": ["speech"],
    "dee@example.org": ["self-supervised"],
    "eve@example.org": ["video"],
    "fay@example.org": ["diffus*"],
    "nobody@example.org": ['"quantum chromodynamics lattice"'],  # matches nothing: skipped
}
SENT_TO = sorted(address for address in PEOPLE if address != "nobody@example.org")


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _angle_url(header: str, scheme: str) -> str:
    match = re.search(rf"<({scheme}:[^>]+)>", header)
    assert match, f"no {scheme} link in {header!r}"
    return match.group(1)


# --- 1. a full run over real SMTP ----------------------------------------------------


def test_run_over_smtp_sends_well_formed_mail_once_per_period(site: Site, dump_b: Path) -> None:
    site.subscribe(PEOPLE)
    site.drop_in_inbox(dump_b, "daily.txt")
    started = datetime.now(UTC)

    result = site.cli("run", "--json")

    assert result.code == 0, result.err
    report = result.json()
    assert report["digests"]["sent"] == len(SENT_TO)
    assert report["digests"]["skipped"] == 1
    assert report["digests"]["failed"] == 0
    received = site.received()
    assert sorted(rcpt for rcpt, _ in received) == SENT_TO
    assert {item.mail_from for item in site.server.handler.received} == {SENDER}
    outbox = {row.email: row for row in site.digests()}
    assert outbox["nobody@example.org"].status == "skipped"
    for rcpt, message in received:
        assert parseaddr(str(message["From"]))[1] == SENDER
        assert parseaddr(str(message["To"]))[1] == rcpt
        assert str(message["Subject"]).strip()
        sent_at = parsedate_to_datetime(str(message["Date"]))
        assert sent_at.tzinfo is not None
        assert started - timedelta(seconds=5) <= sent_at <= datetime.now(UTC) + timedelta(seconds=5)
        assert message["Message-ID"] == outbox[rcpt].message_id
        assert outbox[rcpt].status == "sent"
        assert message["List-Id"] == f"Paper digest <digest.{SITE_HOST}>"
        unsubscribe = str(message["List-Unsubscribe"])
        assert _angle_url(unsubscribe, "https").startswith(f"https://{SITE_HOST}/")
        assert "@" in _angle_url(unsubscribe, "mailto")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message.get_content_type() == "multipart/alternative"
        parts = list(message.iter_parts())
        assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
        text = parts[0].get_content()
        html = parts[1].get_content()
        assert isinstance(text, str) and isinstance(html, str)
        assert "<html" in html.lower()
        assert _angle_url(unsubscribe, "https") in text
    assert len({str(m["Message-ID"]) for _, m in received}) == len(received)

    # Feeds are readable by the web server in front of them, not only by us.
    feeds = sorted((site.data / "feeds").rglob("*.atom"))
    assert feeds
    assert {oct(path.stat().st_mode & 0o777) for path in feeds} == {oct(0o644)}

    again = site.cli("run", "--json")
    assert again.code == 0, again.err
    assert again.json()["digests"]["sent"] == 0
    assert len(site.server.handler.received) == len(SENT_TO)
    assert site.server.handler.data_commands == len(SENT_TO)


def test_a_5xx_bounces_the_subscriber_and_status_warns(
    site: Site, dump_a: Path, dump_b: Path
) -> None:
    site.server.handler.rcpt_replies["bob@example.org"] = (
        "550 5.1.1 <bob@example.org>: no such user"
    )
    site.subscribe(PEOPLE)
    site.drop_in_inbox(dump_b, "daily.txt")

    result = site.cli("run", "--json")

    report = result.json()
    assert report["digests"]["failed"] == 1
    assert report["digests"]["sent"] == len(SENT_TO) - 1
    assert report["bounced"] == ["bob@example.org"]
    assert "bob@example.org" not in {rcpt for rcpt, _ in site.received()}
    # A bounce is a fact about one address, not a failed run: exit 0, and no error line.
    assert result.code == 0, result.err
    assert not [line for line in result.err.splitlines() if line.startswith("digest:")]

    listed = site.cli("subscribers", "--json").json()["subscribers"]
    statuses = {item["email"]: item["status"] for item in listed}
    assert statuses["bob@example.org"] == "bounced"
    assert {statuses[a] for a in PEOPLE if a != "bob@example.org"} == {"active"}

    status = site.cli("status", "--json")
    assert status.code == 0, status.err
    data = status.json()
    assert data["subscribers"]["bounced"] == 1
    assert any("bounced" in warning for warning in data["warnings"]), data["warnings"]
    (failed,) = data["failed_digests"]
    assert failed["email"] == "bob@example.org"
    assert "550" in failed["error"]

    # The next period sends nothing to the bounced address.
    site.drop_in_inbox(dump_a, "trending.txt")
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    later = site.cli("run", "--json", "--period", tomorrow)
    assert later.code == 0, later.err
    assert "bob@example.org" not in {rcpt for rcpt, _ in site.received()}


# --- 2. one run at a time across processes ------------------------------------------


def test_a_second_run_while_one_is_sending_exits_75_and_sends_nothing(
    site: Site, dump_b: Path
) -> None:
    site.subscribe(PEOPLE)
    site.drop_in_inbox(dump_b, "daily.txt")
    handler = site.server.handler
    gate = threading.Event()
    handler.data_gate = gate  # the first run's first message waits at DATA, lock held
    first = site.spawn("run", "--json", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: handler.data_commands >= 1, "the first run to start sending")

        second = site.process("run", "--json")

        assert first.poll() is None, "the first run ended before the second one tried"
        assert second.code == 75, second.err
        lines = second.err.strip().splitlines()
        assert len(lines) == 1, second.err
        assert "already running" in lines[0]
        assert f"pid {first.pid}" in lines[0]
        assert handler.received == []
        assert handler.data_commands <= 2  # only the first run's (two connections)
        status = site.cli("status", "--json").json()
        assert status["running"]["pid"] == first.pid
        assert status["runs"][0]["status"] == "running"
    finally:
        gate.set()
        out, err = first.communicate(timeout=30)
    assert first.returncode == 0, err
    assert json.loads(out)["digests"]["sent"] == len(SENT_TO)
    recipients = Counter(rcpt for rcpt, _ in site.received())
    assert sorted(recipients) == SENT_TO
    assert set(recipients.values()) == {1}
    (run,) = site.cli("status", "--json").json()["runs"]  # the refused run left no trace
    assert run["status"] == "ok"


# --- 3. SIGTERM while sending --------------------------------------------------------


@pytest.mark.parametrize("command", ["serve", "run"])
def test_sigterm_during_sending_stops_cleanly_and_the_next_run_sends_the_rest(
    site: Site, command: str, dump_b: Path
) -> None:
    site.subscribe(PEOPLE)
    site.drop_in_inbox(dump_b, "daily.txt")
    handler = site.server.handler
    handler.data_delay = 0.3
    # Midnight has always passed and no run has happened: serve catches up at start.
    # One connection: the stop has five messages' time to land before the outbox is empty.
    site.env.update(
        DIGEST_SCHEDULE="0 0 * * *", DIGEST_POLL_MINUTES="60", DIGEST_SMTP_CONNECTIONS="1"
    )
    log_file = site.root / f"{command}.log"
    with log_file.open("w") as log:
        serving = site.spawn(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: len(handler.received) >= 1, "the first message", timeout=25)
            serving.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            code = serving.wait(timeout=15)
            took = time.monotonic() - signalled
        finally:
            if serving.poll() is None:
                serving.kill()
                serving.wait()
    logs = log_file.read_text()
    assert code == 0, logs
    assert took < 5, f"took {took:.1f}s to stop"
    assert "Traceback" not in logs

    rows = {row.email: row for row in site.digests()}
    assert sorted(rows) == sorted(PEOPLE)  # none lost: every subscriber has its digest row
    assert rows.pop("nobody@example.org").status == "skipped"
    statuses = Counter(row.status for row in rows.values())
    assert set(statuses) <= {"sent", "pending"}, statuses
    assert statuses["pending"] >= 1, "the stop came too late to leave anything pending"
    accepted = {(rcpt, str(message["Message-ID"])) for rcpt, message in site.received()}
    assert accepted == {(r.email, r.message_id) for r in rows.values() if r.status == "sent"}
    assert len(site.received()) == statuses["sent"]
    status = site.cli("status", "--json").json()
    assert status["runs"][0]["status"] == "stopped"
    assert status["runs"][0]["figures"]["digests"]["pending"] == statuses["pending"]
    assert status["running"] is None

    handler.data_delay = 0.0
    period = next(iter(rows.values())).period
    result = site.cli("run", "--json", "--period", period)

    assert result.code == 0, result.err
    assert result.json()["digests"]["sent"] == statuses["pending"]
    received = site.received()
    assert Counter(rcpt for rcpt, _ in received) == Counter(SENT_TO)
    for rcpt, message in received:
        assert message["Message-ID"] == rows[rcpt].message_id  # the same id on every attempt
    assert {row.status for row in site.digests() if row.email in SENT_TO} == {"sent"}
