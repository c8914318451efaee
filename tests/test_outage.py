"""A mail server that answers every message with a temporary failure, for runs and days on
end: the real command line against a real SMTP server on loopback.

An answer every message gets is an outage, like a server that is down: it costs no digest
an attempt, loses no paper, and ends in one digest a reader (not one per missed period).
Only a failure of one recipient while others go through is charged, and a digest fails for
good only after attempts spread over days; its papers then go to the reader's next digest.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import digest.cli.context
import digest.ingest.dumps
from digest.deliver.send import FAIL_AFTER, MAX_ATTEMPTS
from tests.conftest import EXAMPLE_B as DUMP_B
from tests.conftest import Site
from tests.test_faults import one_error_line, pending_attempts
from tests.test_service import PEOPLE, SENT_TO

BUSY = "451 4.3.0 try again later"


class Shifted(datetime):
    """``datetime`` as the command line sees it, ``offset`` ahead of the real clock."""

    offset = timedelta(0)

    @classmethod
    def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
        return datetime.now(tz) + cls.offset  # type: ignore[arg-type]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> type[Shifted]:
    class Clock(Shifted):
        offset = timedelta(0)

    monkeypatch.setattr(digest.ingest.dumps, "datetime", Clock)
    monkeypatch.setattr(digest.cli.context, "datetime", Clock)
    return Clock


TOPICS = {  # reader -> words a title of theirs carries
    "ada@example.org": "federated learning",
    "cy@example.org": "speech recognition",
    "dee@example.org": "self-supervised pretraining",
    "eve@example.org": "video generation",
}


def day_dump(folder: Path, day: int) -> Path:
    """A snapshot listing of one day: one paper for each reader of ``TOPICS``."""
    path = folder / f"day{day}.jsonl"
    lines = []
    for n, (reader, words) in enumerate(TOPICS.items()):
        name = reader.split("@")[0]
        lines.append(
            json.dumps(
                {
                    "id": f"2603.{day:02d}{n:03d}",
                    "title": f"Study {day} of {words} for {name}",
                    "abstract": f"We report experiment {day} on {words} at scale.",
                    "authors": "A. Author",
                    "versions": [{"version": "v1", "created": "Mon, 2 Mar 2026 10:00:00 GMT"}],
                    "update_date": "2026-03-02",
                }
            )
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def titles_to(site: Site) -> dict[str, list[list[str]]]:
    """The paper titles of every message each reader received, message by message."""
    got: dict[str, list[list[str]]] = {}
    for rcpt, message in site.received():
        body = message.get_body(("plain",))
        assert body is not None
        text = body.get_content()
        lines = (line.strip().removeprefix("* ") for line in text.splitlines())
        got.setdefault(rcpt, []).append(sorted(line for line in lines if line.startswith("Study")))
    return got


@pytest.mark.parametrize("where", ["DATA", "RCPT"])
def test_a_server_wide_451_for_six_runs_costs_nothing_and_loses_nothing(
    site: Site, where: str
) -> None:
    site.subscribe(PEOPLE)
    site.drop_in_inbox(DUMP_B, "daily.txt")
    handler = site.server.handler
    if where == "DATA":
        handler.every_data = BUSY
    else:
        handler.every_rcpt = BUSY

    for _ in range(6):
        result = site.cli("run")
        assert result.code == 1, result.out + result.err
        line = one_error_line(result)
        assert line.startswith("digest: sending stopped: ") and BUSY in line, line
        assert f"{len(SENT_TO)} digest(s) still pending" in line
    outbox = pending_attempts(site)
    assert outbox.pop("nobody@example.org") == ("skipped", 0)
    assert set(outbox.values()) == {("pending", 0)}  # an outage costs no attempt
    assert handler.received == []
    status = site.cli("status")
    assert f"{len(SENT_TO)} digest(s) waiting to be sent" in status.out
    assert BUSY in status.out  # why, in plain text

    handler.every_data = handler.every_rcpt = None
    back = site.cli("run", "--json")

    assert back.code == 0, back.err
    assert back.json()["digests"]["sent"] == len(SENT_TO)
    assert sorted(rcpt for rcpt, _ in site.received()) == SENT_TO  # every reader, once
    assert {s for e, (s, _) in pending_attempts(site).items() if e in SENT_TO} == {"sent"}


def test_after_a_six_day_outage_a_reader_gets_one_digest_with_the_weeks_papers(
    site: Site, clock: type[Shifted]
) -> None:
    site.subscribe({reader: [words] for reader, words in TOPICS.items()})
    site.server.handler.every_data = BUSY
    for day in range(7):  # six days down, back on the seventh
        clock.offset = timedelta(days=day)
        site.drop_in_inbox(day_dump(site.root, day), f"day{day}.jsonl")
        if day == 6:
            site.server.handler.every_data = None
        result = site.cli("run")
        assert result.code == (0 if day == 6 else 1), result.err

    got = titles_to(site)
    assert sorted(got) == sorted(TOPICS)
    for reader, words in TOPICS.items():
        name = reader.split("@")[0]
        (only,) = got[reader]  # one digest, not seven
        assert only == sorted(f"Study {day} of {words} for {name}" for day in range(7))
    rows = [row for row in site.digests() if row.status not in ("skipped",)]
    assert Counter(row.status for row in rows) == {"sent": len(TOPICS)}


def test_a_digest_fails_for_good_only_after_days_of_tries_and_gives_its_papers_back(
    site: Site, clock: type[Shifted]
) -> None:
    site.subscribe({reader: [words] for reader, words in TOPICS.items()})
    handler = site.server.handler
    handler.rcpt_replies["ada@example.org"] = "452 4.2.2 <ada@example.org>: mailbox full"
    # periods of days gone by (a run refuses a day that has not begun), the last one today
    start = datetime.now(UTC).date() - timedelta(days=MAX_ATTEMPTS + 3)

    # More runs than a digest has attempts, in one afternoon; the others get theirs each time.
    for n in range(MAX_ATTEMPTS + 2):
        site.drop_in_inbox(day_dump(site.root, n), f"day{n}.jsonl")
        result = site.cli("run", "--period", (start + timedelta(days=n)).isoformat())
        assert result.code == 0, result.err  # one full mailbox is no failed run
    waiting = [row for row in site.digests() if row.email == "ada@example.org"]
    assert [(r.status, r.attempts) for r in waiting if r.status != "skipped"] == [
        ("pending", MAX_ATTEMPTS + 2)
    ]  # one digest, carrying the attempts of those it took in; not failed within a day
    assert "ada@example.org" not in {rcpt for rcpt, _ in site.received()}

    clock.offset = FAIL_AFTER + timedelta(hours=1)
    later = start + timedelta(days=MAX_ATTEMPTS + 2)
    site.drop_in_inbox(day_dump(site.root, MAX_ATTEMPTS + 2), "late.jsonl")
    failed = site.cli("run", "--period", later.isoformat())
    assert failed.code == 1
    assert one_error_line(failed) == "digest: 1 digest(s) failed for good; see digest status"
    (gone,) = [r for r in site.digests() if r.email == "ada@example.org" and r.status == "failed"]
    assert gone.attempts == MAX_ATTEMPTS + 3

    handler.rcpt_replies.clear()
    site.drop_in_inbox(day_dump(site.root, MAX_ATTEMPTS + 3), "after.jsonl")
    back = site.cli("run", "--period", (later + timedelta(days=1)).isoformat())
    assert back.code == 0, back.err
    (only,) = titles_to(site)["ada@example.org"]  # the failed digest's papers came back
    assert only == sorted(
        f"Study {day} of federated learning for ada" for day in range(MAX_ATTEMPTS + 4)
    )


def test_one_busy_mailbox_among_working_ones_costs_it_an_attempt(site: Site) -> None:
    site.subscribe(PEOPLE)
    site.drop_in_inbox(DUMP_B, "daily.txt")
    site.server.handler.rcpt_replies["ada@example.org"] = "451 4.2.0 mailbox busy"

    result = site.cli("run")

    assert result.code == 0, result.err
    outbox = pending_attempts(site)
    assert outbox["ada@example.org"] == ("pending", 1)
    assert {outbox[a] for a in SENT_TO if a != "ada@example.org"} == {("sent", 1)}
