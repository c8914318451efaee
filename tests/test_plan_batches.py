"""Planning a batch of readers at a time: the same digests as all at once, each batch
written before the next is ranked, the day's matching done once, and a run that dies
while planning leaves no period half planned."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from digest.deliver import plan
from digest.deliver.transports import RecordingTransport
from digest.ingest.dumps import ingest_inbox
from digest.rank import ranker
from digest.rank.corpus import store_stats
from digest.rank.text import DEFAULT
from digest.rank.types import CorpusStats, Profile, TermCounts
from digest.service.cycle import run_cycle
from digest.service.subscriptions import operator_patch, upsert_subscriber
from digest.settings import Settings
from digest.store import plan_rows
from digest.store.models import Subscriber
from digest.store.subscription import Subscription
from tests.test_cycle import DAY, JOINED, PEOPLE, Crash, settings, store, ticking

__all__ = ["settings", "store"]  # the fixtures, shared with tests/test_cycle.py

MORE = {f"reader{n}@example.org": ["diffus*", "speech"][n % 2 :] for n in range(6)}


@pytest.fixture
def readers(store: Engine) -> Iterator[Engine]:
    """The store of tests/test_cycle.py with six more readers: eleven in all."""
    for address, interests in MORE.items():
        upsert_subscriber(store, operator_patch(address, interests), now=JOINED)
    yield store


def outbox_rows(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                sa.text(
                    "SELECT s.email, d.period, d.status, i.paper_id, i.rank, i.score, i.matched"
                    " FROM digest d JOIN subscriber s ON s.id = d.subscriber_id"
                    " LEFT JOIN digestitem i ON i.digest_id = d.id"
                    " ORDER BY d.id, i.rank"
                )
            )
        ]


def test_plans_made_in_batches_are_those_made_all_at_once(
    settings: Settings, readers: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[int] = []  # the readers each day's matching was made for
    start = ranker.Ranking.__init__

    def counting(self: ranker.Ranking, papers: Any, profiles: Any, *args: Any, **kw: Any) -> None:
        profiles = list(profiles)
        built.append(len(profiles))
        start(self, papers, profiles, *args, **kw)

    monkeypatch.setattr(ranker.Ranking, "__init__", counting)
    ingest_inbox(readers, settings.inbox, clock=ticking(datetime(2026, 3, 12, 6, 0, tzinfo=UTC)))
    with readers.connect() as conn:
        whole = list(plan.owed_plans(conn, period=DAY, batch=100))
        parts = list(plan.owed_plans(conn, period=DAY, batch=3))
        conn.rollback()
    assert built == [11, 11]  # once for every batch of a run

    def shown(plans: list[plan.Plan]) -> list[tuple[Any, ...]]:
        return [(p.subscriber.email, p.upto, p.period, tuple(p.ranked)) for p in plans]

    assert shown(parts) == shown(whole)
    assert sum(len(p.ranked) for p in whole) > 20  # something to compare


def test_a_run_records_each_batch_before_it_ranks_the_next(
    settings: Settings, readers: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps: list[tuple[str, int]] = []
    rank, record = ranker.Ranking.rank, plan_rows.record

    def ranking(self: ranker.Ranking, profiles: Any, **kw: Any) -> Any:
        steps.append(("rank", len(profiles)))
        return rank(self, profiles, **kw)

    def recording(conn: Any, planned: Any, **kw: Any) -> None:
        steps.append(("record", len(planned)))
        record(conn, planned, **kw)

    monkeypatch.setattr(ranker.Ranking, "rank", ranking)
    monkeypatch.setattr(plan_rows, "record", recording)
    monkeypatch.setattr(plan, "PLAN_BATCH", 4)
    clock = ticking(datetime(2026, 3, 12, 7, 0, tzinfo=UTC))
    report = run_cycle(settings, readers, clock=clock, period=DAY, transport=RecordingTransport())
    batches = [("rank", 4), ("record", 4), ("rank", 4), ("record", 4), ("rank", 3)]
    assert steps == [*batches, ("record", 3)]
    assert sum(report.composed.values()) == 11


def test_a_run_that_dies_while_planning_leaves_no_period_half_planned(
    settings: Settings, readers: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = plan_rows.record
    calls: list[int] = []

    def dying(conn: Any, planned: Any, **kw: Any) -> None:
        calls.append(len(planned))
        if len(calls) == 2:  # the first batch written, the second not
            raise Crash("killed while planning")
        record(conn, planned, **kw)

    monkeypatch.setattr(plan_rows, "record", dying)
    monkeypatch.setattr(plan, "PLAN_BATCH", 4)
    clock = ticking(datetime(2026, 3, 12, 7, 0, tzinfo=UTC))
    with pytest.raises(Crash):
        run_cycle(settings, readers, clock=clock, period=DAY, transport=RecordingTransport())
    assert calls == [4, 4]
    assert outbox_rows(readers) == []  # not the first batch alone: nothing
    monkeypatch.setattr(plan_rows, "record", record)
    sent = RecordingTransport()
    report = run_cycle(settings, readers, clock=clock, period=DAY, transport=sent)
    assert sum(report.composed.values()) == 11  # every reader planned by the next run
    assert len({row[0] for row in outbox_rows(readers)}) == 11
    assert len(sent.sent) == report.composed["pending"] >= len(PEOPLE) - 1
    assert "nobody@example.org" not in {m.recipient for m in sent.sent}


def test_the_outbox_a_run_writes_in_batches_is_the_one_it_wrote_at_once(
    settings: Settings, readers: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest_inbox(readers, settings.inbox, clock=ticking(datetime(2026, 3, 12, 6, 0, tzinfo=UTC)))
    now = datetime(2026, 3, 12, 7, 0, tzinfo=UTC)
    written = []
    for size in (100, 2):
        with readers.connect() as conn:
            plans = plan.owed_plans(conn, period=DAY, batch=size)
            counts = plan.record_plans(
                conn, plans, period=DAY, now=now, key=b"k" * 32, mail_from="d@x.org", run_id=None
            )
            written.append((counts, outbox_rows_in(conn)))
            conn.rollback()
    assert written[0] == written[1]
    assert len(written[0][1]) > 20


def test_readers_who_share_an_interest_are_planned_side_by_side() -> None:
    profiles = {
        1: Profile(1, ("speech", "graphs")),
        2: Profile(2, ("diffusion", "mine alone")),
        3: Profile(3, ("speech",)),
        4: Profile(4, ("graphs", "diffusion", "speech")),
        5: Profile(5, ("diffusion", "graphs")),
        6: Profile(6, ("also mine alone",)),
    }
    alike = plan.readers_alike(profiles)
    # "graphs" is held by three readers, "diffusion" by three, "speech" by three; an
    # interest held by one reader alone does not place them
    assert alike(2) == (("diffusion",), 2)
    assert alike(6) == ((), 6)
    assert alike(4) == (("diffusion", "graphs", "speech"), 4)
    order = sorted(profiles, key=alike)
    assert order == [6, 2, 5, 4, 1, 3]
    # the readers of the rarest shared interest first, next to each other
    rare = {7: Profile(7, ("speech", "cells")), 8: Profile(8, ("cells", "graphs"))}
    order = sorted({**profiles, **rare}, key=plan.readers_alike({**profiles, **rare}))
    assert abs(order.index(8) - order.index(7)) == 1


def test_the_outbox_is_written_readers_alike_first(
    settings: Settings, readers: Engine, tmp_path: Path
) -> None:
    ingest_inbox(readers, settings.inbox, clock=ticking(datetime(2026, 3, 12, 6, 0, tzinfo=UTC)))
    now = datetime(2026, 3, 12, 7, 0, tzinfo=UTC)
    with readers.connect() as conn:
        plans = plan.owed_plans(conn, period=DAY, batch=3)
        plan.record_plans(
            conn, plans, period=DAY, now=now, key=b"k" * 32, mail_from="d@x.org", run_id=None
        )
        ids = [r[0] for r in conn.execute(sa.text("SELECT subscriber_id FROM digest ORDER BY id"))]
        interests = {
            int(row.id): tuple(json.loads(row.interests))
            for row in conn.execute(sa.text("SELECT id, interests FROM subscriber"))
        }
        conn.rollback()
    profiles = {sid: Profile(sid, interests[sid]) for sid in ids}
    assert ids == sorted(ids, key=plan.readers_alike(profiles))
    assert ids != sorted(ids)  # the order is not the readers' own


def outbox_rows_in(conn: Any) -> list[tuple[Any, ...]]:
    return [
        tuple(row)
        for row in conn.execute(
            sa.text(
                "SELECT d.subscriber_id, d.status, d.message_id, i.paper_id, i.rank, i.score,"
                " i.matched FROM digest d LEFT JOIN digestitem i ON i.digest_id = d.id"
                " ORDER BY d.id, i.rank"
            )
        )
    ]


# --- what planning reads, made cheaper: the same results -----------------------------------


def test_a_profile_read_off_a_stored_row_is_the_one_its_subscription_gives(
    readers: Engine,
) -> None:
    with readers.connect() as conn:
        rows = conn.execute(sa.select(Subscriber.__table__)).all()  # type: ignore[attr-defined]
    decoded: dict[str, tuple[str, ...]] = {}
    assert len(rows) == 11
    for row in rows:
        assert Profile.stored(row, decoded) == Profile.of(Subscription.of(row))
    assert len(decoded) < len(rows)  # readers with the same interests share one decoding


TEXTS = [
    ("Self-Supervised State-of-the-Art", "end-to-end speech-to-text -- a - b- -c x--y (ASR)"),
    ("Ünïcode façade‐tests", "naïve approaches to large language models (LLMs); ｆｕｌｌ width"),
    ("", ""),
    ("Plural networks", "studies of losses, buses and analyses: mixture-of-experts (MoE)"),
]


def test_counts_of_parts_add_up_to_the_counts_of_the_whole() -> None:
    whole = TermCounts.of(TEXTS * 3)
    assert TermCounts.of(TEXTS[:1]) + TermCounts.of(TEXTS[1:] + TEXTS * 2) == whole
    stats = whole.stats()
    assert stats == CorpusStats.from_texts(TEXTS * 3, DEFAULT)
    assert stats.doc_freq("selfsupervised") == 3 and stats.doc_freq("network") == 3
    assert stats.acronyms.get("moe") == (("mixture", "of", "expert"),)


def test_statistics_counted_in_processes_are_those_counted_in_one(
    settings: Settings, readers: Engine, dump_a: Path
) -> None:
    clock = ticking(datetime(2026, 3, 12, 6, 0, tzinfo=UTC))
    ingest_inbox(readers, settings.inbox, clock=clock)
    (settings.inbox / "a.txt").write_bytes(dump_a.read_bytes())
    ingest_inbox(readers, settings.inbox, clock=clock)
    with readers.connect() as conn:
        one = store_stats(conn, processes=1)
        two = store_stats(conn, processes=2)
        sampled = store_stats(conn, 5, processes=3)
        conn.rollback()
    assert one.documents > 10
    assert two == one
    assert sampled.documents == 5 and sampled != one
    assert json.dumps(sorted(two.frequencies.items())) == json.dumps(
        sorted(one.frequencies.items())
    )
