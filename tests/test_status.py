"""``digest status``: a fresh store, the store after a run, and a run in progress in another process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from digest.cli import main
from tests.conftest import Site
from tests.test_service import PEOPLE, SENT_TO

HOLD_LOCK = """
import sys
from digest.service.runlock import hold_run_lock
with hold_run_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_status_of_a_fresh_store(site: Site) -> None:
    result = site.cli("status", "--json")

    assert result.code == 0, result.err
    data = result.json()
    assert data["papers"]["total"] == 0
    assert data["subscribers"] == {
        "pending": 0,
        "active": 0,
        "paused": 0,
        "unsubscribed": 0,
        "bounced": 0,
    }
    assert set(data["digests"].values()) == {0}
    assert data["runs"] == [] and data["failed_digests"] == [] and data["sources"] == []
    assert data["running"] is None
    assert data["warnings"] == []
    next_run = datetime.fromisoformat(data["schedule"]["next_run"])
    assert next_run > datetime.now(UTC)
    assert (next_run.hour, next_run.minute) == (7, 0)  # the default schedule, in UTC

    text = site.cli("status")
    assert text.code == 0, text.err
    assert "Traceback" not in text.out + text.err
    assert text.out.startswith("papers: 0 ")
    assert "warning" not in text.out


def test_status_after_a_run_with_a_bounce_and_a_deferral(
    site: Site, monkeypatch: pytest.MonkeyPatch, dump_a: Path, dump_b: Path
) -> None:
    source = site.root / "listing.txt"
    shutil.copy(dump_a, source)
    monkeypatch.setenv("DIGEST_SOURCES", str(source))
    site.server.handler.rcpt_replies.update(
        {
            "bob@example.org": "550 5.1.1 no such user",
            "cy@example.org": "451 4.3.0 try again later",
        }
    )
    site.subscribe(PEOPLE)
    site.drop_in_inbox(dump_b, "daily.txt")
    run = site.cli("run", "--json")
    assert run.code == 0, run.err  # a bounce and a deferral are no failed run
    papers_new = run.json()["papers_new"]
    assert papers_new > 0

    result = site.cli("status", "--json")

    assert result.code == 0, result.err
    data = result.json()
    assert data["papers"]["total"] == papers_new
    assert data["papers"]["new_last_24h"] == papers_new
    assert data["subscribers"] == {
        "pending": 0,
        "active": len(PEOPLE) - 1,
        "paused": 0,
        "unsubscribed": 0,
        "bounced": 1,
    }
    sent = len(SENT_TO) - 2
    assert data["digests"] == {"pending": 1, "sending": 0, "sent": sent, "skipped": 1, "failed": 1}
    (failed,) = data["failed_digests"]
    assert failed["email"] == "bob@example.org" and "550" in failed["error"]
    (last,) = data["runs"]
    assert last["status"] == "ok" and last["finished_at"]
    figures = last["figures"]
    assert figures["digests"]["sent"] == sent
    assert figures["digests"]["failed"] == 1
    assert figures["digests"]["pending"] == 1
    assert figures["bounced"] == ["bob@example.org"]
    (fetched,) = data["sources"]
    assert fetched["url"] == str(source)
    assert fetched["status"] == "ok"
    assert fetched["last_fetch_at"] is not None
    assert data["schedule"]["next_run"]
    warnings = " | ".join(data["warnings"])
    assert "1 subscriber(s) bounced" in warnings
    assert "1 digest(s) failed" in warnings
    assert "1 digest(s) waiting to be sent" in warnings

    text = site.cli("status")
    assert text.code == 0, text.err
    assert "Traceback" not in text.out + text.err
    assert f"run {last['id']} " in text.out and f"{sent} sent" in text.out
    assert f"source {source}: ok" in text.out
    assert "warning: 1 subscriber(s) bounced" in text.out


def test_status_shows_a_run_held_by_another_process(site: Site) -> None:
    site.data.mkdir()  # the folder the lock lives in (status itself creates nothing)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(site.data)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"

        data = site.cli("status", "--json").json()
        text = site.cli("status")
    finally:
        holder.communicate("\n", timeout=10)
    assert data["running"]["pid"] == holder.pid
    assert data["running"]["started_at"]
    assert f"running now: pid {holder.pid}" in text.out
    assert site.cli("status", "--json").json()["running"] is None


def test_read_only_commands_create_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("DIGEST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    assert main(["status"]) == 0
    assert "store: not made yet" in capsys.readouterr().out
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["store_exists"] is False
    assert main(["subscribers"]) == 0
    assert main(["subscribers", "--json"]) == 0
    assert main(["search", "graphs"]) == 0
    assert main(["preview", "ada@example.org"]) == 2
    assert "no subscriber" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_placeholder_base_url_is_a_warning_when_mail_goes_out_over_smtp(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    def warnings() -> list[str]:
        result = site.cli("status", "--json")
        assert result.code == 0, result.err
        found: list[str] = result.json()["warnings"]
        return found

    monkeypatch.setenv("DIGEST_BASE_URL", "http://localhost:8000")
    (warning,) = warnings()
    assert warning.startswith("base_url http://localhost:8000 points at this machine")
    assert f"warning: {warning}" in site.cli("status").out
    monkeypatch.setenv("DIGEST_BASE_URL", "http://127.0.0.1")
    assert "points at this machine" in warnings()[0]
    monkeypatch.setenv("DIGEST_BASE_URL", "http://papers.example.org")
    (warning,) = warnings()
    assert "plain http" in warning and "RFC 8058" in warning
    monkeypatch.setenv("DIGEST_BASE_URL", "https://papers.example.org")
    assert warnings() == []
    # the file:// transport is the demo: nobody follows those links
    monkeypatch.setenv("DIGEST_BASE_URL", "http://localhost:8000")
    monkeypatch.setenv("DIGEST_MAIL_TRANSPORT", f"file://{site.root / 'outbox'}")
    assert warnings() == []

    monkeypatch.setenv("DIGEST_MAIL_TRANSPORT", site.server.url())
    run = site.cli("run", "--json")
    assert run.code == 0, run.err
    (warning,) = run.json()["warnings"]
    assert "points at this machine" in warning
    assert "base_url http://localhost:8000" in run.err  # logged: cron mails it, journald keeps it
