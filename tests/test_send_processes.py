"""Sending from forked processes: each a sender of its own, what they did folded together,
a stop reaching every one of them, and a whole run sending each digest once."""

from __future__ import annotations

import gc
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from digest import forks
from digest.deliver import processes, send
from digest.deliver.message import MessageBuilder, Sender
from digest.deliver.processes import in_processes, senders_for
from digest.deliver.send import Delivered
from digest.deliver.transports import RecordingTransport
from digest.errors import DeliveryError
from digest.present.views import Links
from digest.service import cycle
from digest.settings import Settings
from digest.store import claims, outbox
from tests.conftest import Site
from tests.test_cycle import DAY, settings, store, ticking
from tests.test_plan_rows import NOW, waiting
from tests.test_service import PEOPLE, SENT_TO

__all__ = ["settings", "store", "waiting"]  # the fixtures, shared with other tests

pytestmark = pytest.mark.skipif(not forks.available(), reason="needs fork")


def test_each_process_sends_and_the_outcomes_are_folded_together() -> None:
    def one(stop: threading.Event) -> Delivered:
        return Delivered(sent=3, sent_to={os.getpid()})

    total = in_processes(2, one, None)
    assert total.sent == 6
    assert len(total.sent_to) == 2  # two processes
    assert os.getpid() not in total.sent_to  # neither of them this one


def test_a_stop_reaches_every_process() -> None:
    def one(stop: threading.Event) -> Delivered:
        return Delivered(stopped=stop.wait(20))

    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    total = in_processes(2, one, stop)
    assert total.stopped


def test_a_process_failing_fails_the_pass() -> None:
    def one(stop: threading.Event) -> Delivered:
        raise DeliveryError("the store went away")

    with pytest.raises(DeliveryError, match="the store went away"):
        in_processes(2, one, None)


def test_a_small_outbox_goes_from_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forks, "cores", lambda: 2)
    assert senders_for(processes.SENDERS_FROM - 1) == 1
    assert senders_for(processes.SENDERS_FROM) == 2


def test_a_run_sending_from_processes_sends_each_digest_once(
    site: Site, dump_b: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(processes, "SENDERS_FROM", 1)
    monkeypatch.setattr(forks, "cores", lambda: 2)
    monkeypatch.setattr(cycle, "OUTBOX_BATCH", 2)  # the first two from here, the rest forked
    site.subscribe(PEOPLE)
    site.drop_in_inbox(dump_b, "daily.txt")

    result = site.cli("run", "--json")

    assert result.code == 0, result.err
    assert result.json()["digests"]["sent"] == len(SENT_TO)
    assert sorted(rcpt for rcpt, _ in site.received()) == SENT_TO  # each once
    assert {row.status for row in site.digests() if row.email in SENT_TO} == {"sent"}
    engine = sa.create_engine(f"sqlite:///{site.data / 'digest.db'}")
    try:
        with engine.connect() as conn:
            senders = conn.execute(
                sa.text("SELECT DISTINCT claimed_by FROM digest WHERE status = 'sent'")
            ).scalars()
            pids = {int(name.split(":")[1]) for name in senders}
    finally:
        engine.dispose()
    assert os.getpid() in pids  # the first batch, from the run's own process
    assert len(pids) >= 2  # the rest from forked senders
    again = site.cli("run", "--json")
    assert again.json()["digests"]["sent"] == 0
    assert len(site.received()) == len(SENT_TO)


def test_the_senders_inherit_what_this_process_holds_set_apart_from_the_collector() -> None:
    def one(stop: threading.Event) -> Delivered:
        return Delivered(sent=gc.get_freeze_count())  # what this child has set apart

    before = gc.get_freeze_count()
    total = in_processes(2, one, None)
    assert total.sent >= 2 * 10_000  # each child: every object its parent held at the fork
    assert gc.get_freeze_count() == before  # and this process has it all back


class _Watching(RecordingTransport):
    """Notes how many objects are set apart from the collector as each message goes."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen: list[int] = []

    async def send(self, sender_addr: str, recipient: str, message: bytes, message_id: str) -> None:
        self.frozen.append(gc.get_freeze_count())
        await super().send(sender_addr, recipient, message, message_id)


def test_a_pass_sets_what_it_holds_apart_from_the_collector_until_it_ends(
    settings: Settings, store: Engine
) -> None:
    transport = _Watching()
    clock = ticking(datetime(2026, 3, 12, 7, 0, tzinfo=UTC))
    report = cycle.run_cycle(settings, store, clock=clock, period=DAY, transport=transport)
    assert report.delivered.sent == len(transport.sent) > 0
    assert min(transport.frozen) > 0  # set apart as the batch started
    assert gc.get_freeze_count() == 0  # all given back when the pass ended


def test_a_pass_sets_apart_what_each_few_messages_made(
    settings: Settings, store: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(send, "SPARE_EVERY", 1)
    transport = _Watching()
    clock = ticking(datetime(2026, 3, 12, 7, 0, tzinfo=UTC))
    report = cycle.run_cycle(
        settings.model_copy(update={"smtp_connections": 1}),
        store,
        clock=clock,
        period=DAY,
        transport=transport,
    )
    assert report.delivered.sent == len(transport.sent) >= 3
    # each message's making set apart before the next: more each time, within one batch
    assert all(b > a for a, b in zip(transport.frozen, transport.frozen[1:], strict=False))
    assert gc.get_freeze_count() == 0


def test_the_outboxs_papers_worked_out_ahead_are_those_its_digests_show(waiting: Engine) -> None:
    """Before its senders fork, a run's process works out what each waiting paper shows
    every reader: building every waiting digest afterwards works none out again, and makes
    the same bytes as a builder that worked out nothing ahead."""
    links = Links("https://papers.example.org", b"k" * 32, "d@x.org")
    sender = Sender("d@x.org", "Papers", "papers.example.org", links.base_url)
    ahead = MessageBuilder(sender)
    made = send.prepare_papers(waiting, ahead, links.base_url)
    rows = claims.claim(waiting, "s", now=NOW, lease=timedelta(minutes=5), limit=100)
    outgoing = send.outgoing_of(waiting, links, rows)
    shown = {paper.key for item in outgoing for paper in item.view.papers}
    assert made == len(shown) > 3 and len(rows) > 1
    for item in outgoing:
        assert ahead.build(item.view, NOW) == MessageBuilder(sender).build(item.view, NOW)
    assert len(ahead._skeletons) == made  # none worked out again
    assert send.prepare_papers(waiting, ahead, links.base_url) == 0  # nor ahead, twice
    with waiting.begin() as conn:  # the papers of digests sent are not the outbox's
        conn.execute(sa.text("UPDATE digest SET status = 'sent'"))
        assert outbox.waiting_papers(conn) == []
