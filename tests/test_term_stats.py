"""The store's term statistics kept between runs: a run keeps its sample's counts, the next
counts only the papers that came into the sample or left it, and gets the counts of the
whole sample counted afresh."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from digest.deliver.transports import RecordingTransport
from digest.ingest.diff import upsert_entries
from digest.ingest.listing import Entry
from digest.rank import corpus
from digest.rank.types import TermCounts
from digest.service.cycle import run_cycle
from digest.settings import Settings
from digest.store import papers
from digest.store.engine import transaction
from tests.test_cycle import DAY, settings, store, ticking

__all__ = ["settings", "store"]  # the fixtures of tests/test_cycle.py

T0 = datetime(2026, 3, 11, 7, 0, tzinfo=UTC)
WORDS = [
    "graph",
    "diffusion",
    "speech",
    "protein",
    "robot",
    "sparse",
    "transformer",
    "(LLM)",
    "language",
    "model",
]


def entries(first: int, count: int) -> list[Entry]:
    """Papers of varied words (some defining an acronym), numbered from ``first``."""
    out = []
    for n in range(first, first + count):
        picked = [WORDS[(n * k) % len(WORDS)] for k in (1, 3, 7)]
        abstract = f"We study {' '.join(picked)} with large language models (LLMs), case {n}."
        out.append(Entry(f"Paper {n} on {picked[0]} {picked[1]}", abstract))
    return out


def add(engine: Engine, first: int, count: int, day: int) -> None:
    with transaction(engine) as conn:
        upsert_entries(conn, entries(first, count), T0 + timedelta(days=day))


def fresh(engine: Engine, sample: int) -> TermCounts:
    """The sample's counts, every paper of it analyzed now."""
    with engine.connect() as conn:
        return TermCounts.of(papers.stats_sample(conn, sample))


class Analyzed:
    """How many papers ``TermCounts.of`` analyzed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.papers = 0
        of = TermCounts.of.__func__  # type: ignore[attr-defined]

        def counting(cls: type[TermCounts], texts, analyzer=corpus.DEFAULT):  # type: ignore[no-untyped-def]
            texts = list(texts)
            self.papers += len(texts)
            return of(cls, texts, analyzer)

        monkeypatch.setattr(TermCounts, "of", classmethod(counting))


def test_counts_kept_are_brought_up_to_date_from_the_papers_that_changed(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    add(engine, 0, 200, day=0)
    with transaction(engine) as conn:
        first = corpus.sample_counts(conn, 50, keep=True)
    assert first == fresh(engine, 50) and first.documents == 50
    add(engine, 200, 20, day=1)  # a day's papers: some of them come into the sample
    analyzed = Analyzed(monkeypatch)
    with transaction(engine) as conn:
        second = corpus.sample_counts(conn, 50, keep=True)
    # Only the papers that came into the sample and those that left it, not all 50.
    changed = analyzed.papers
    assert 0 < changed < 25
    with engine.connect() as conn:
        assert corpus.store_stats(conn, 50) == second.stats()
    assert analyzed.papers == changed  # up to date: nothing more to count
    assert second == fresh(engine, 50) != first


def test_a_sampled_paper_whose_text_changed_is_counted_afresh(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    add(engine, 0, 200, day=0)
    with transaction(engine) as conn:
        corpus.sample_counts(conn, 50, keep=True)
        chosen = papers.stats_ids(conn, 50)[0]
        conn.execute(
            sa.text("UPDATE paper SET abstract = 'entirely new words' WHERE id = :i"), {"i": chosen}
        )
    analyzed = Analyzed(monkeypatch)
    with transaction(engine) as conn:
        counts = corpus.sample_counts(conn, 50, keep=True)
    assert analyzed.papers == 50  # not the kept counts, with the changed paper's old terms
    assert counts == fresh(engine, 50) and counts.frequencies["entirely"] == 1


def test_counts_of_another_analyzer_or_none_kept_are_not_used(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    add(engine, 0, 60, day=0)
    with engine.connect() as conn:
        corpus.sample_counts(conn, 50)  # keep=False: a preview, a search
        assert papers.kept_counts(conn) is None
    with transaction(engine) as conn:
        corpus.sample_counts(conn, 50, keep=True)
        kept = json.loads(papers.kept_counts(conn) or "{}")
        kept["analyzer"] = "another"
        kept["counts"]["frequencies"]["graph"] = 10_000
        papers.keep_counts(conn, json.dumps(kept))
    analyzed = Analyzed(monkeypatch)
    with engine.connect() as conn:
        counts = corpus.sample_counts(conn, 50)
    assert analyzed.papers == 50
    assert counts == fresh(engine, 50)


def test_the_sample_moves_little_as_papers_come(engine: Engine) -> None:
    add(engine, 0, 400, day=0)
    with engine.connect() as conn:
        before = set(papers.stats_ids(conn, 100))
    add(engine, 400, 40, day=1)
    with engine.connect() as conn:
        after = set(papers.stats_ids(conn, 100))
        ids = list(conn.execute(sa.text("SELECT id FROM paper")).scalars())
    assert len(before) == len(after) == 100
    # About one in eleven of the papers now in the store is new: as many of the sample.
    assert 2 <= len(after - before) <= 25
    newest = sorted(ids)[-40:]
    assert after - before <= set(newest)


def test_a_run_keeps_the_counts_and_a_dry_run_does_not(
    settings: Settings, store: Engine, tmp_path: Path
) -> None:
    clock = ticking(datetime(2026, 3, 12, 7, 0, tzinfo=UTC))
    run_cycle(settings, store, clock=clock, period=DAY, dry_run=True)
    with store.connect() as conn:
        assert papers.kept_counts(conn) is None
    run_cycle(settings, store, clock=clock, period=DAY, transport=RecordingTransport())
    with store.connect() as conn:
        kept = corpus.Kept.read(papers.kept_counts(conn))
        assert kept is not None
        assert kept.counts == TermCounts.of(papers.stats_sample(conn, corpus.STATS_SAMPLE))
