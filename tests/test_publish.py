"""Published feeds: a paper keeps its GUID when it adopts an arXiv id and when the site moves."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import feedparser
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from digest.deliver.transports import RecordingTransport
from digest.ingest.diff import upsert_entries
from digest.ingest.listing import Entry
from digest.service.cycle import run_cycle
from digest.service.subscriptions import operator_patch, upsert_subscriber
from digest.settings import Settings, load_settings
from digest.store.engine import open_store, transaction
from digest.store.migrations import MIGRATIONS
from tests.test_cycle import ticking

JOINED = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)
TITLE = "Sparse Attention for Very Long Documents"
ABSTRACT = "We make attention sparse, so long documents fit."


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    env = {
        "DIGEST_DATA_DIR": str(tmp_path / "data"),
        "DIGEST_DATABASE_URL": database_url,
        "DIGEST_BASE_URL": "https://papers.example.org",
    }
    return load_settings(environ=env, cwd=tmp_path)


@pytest.fixture
def store(settings: Settings) -> Iterator[Engine]:
    engine = open_store(settings.database_url)
    upsert_subscriber(engine, operator_patch("ada@example.org", ["attention"]), now=JOINED)
    yield engine
    engine.dispose()


def ingest(engine: Engine, entries: list[Entry], when: datetime) -> None:
    with transaction(engine) as conn:
        upsert_entries(conn, entries, when)


def run(settings: Settings, engine: Engine, day: date) -> RecordingTransport:
    sent = RecordingTransport()
    clock = ticking(datetime(day.year, day.month, day.day, 7, 0, tzinfo=UTC))
    run_cycle(settings, engine, clock=clock, period=day, transport=sent, fetch=False)
    return sent


def guids(settings: Settings) -> dict[str, list[str]]:
    """Every feed file's GUIDs, by file name."""
    found: dict[str, list[str]] = {}
    for path in sorted(settings.feeds_dir.rglob("*.*")):
        found[path.name] = [entry.id for entry in feedparser.parse(path.read_bytes()).entries]
    return found


def test_a_paper_keeps_its_guid_when_it_adopts_an_arxiv_id(
    settings: Settings, store: Engine
) -> None:
    ingest(store, [Entry(TITLE, ABSTRACT)], JOINED + timedelta(hours=1))
    assert len(run(settings, store, date(2026, 3, 12)).sent) == 1
    before = guids(settings)
    # the global and the private feed, Atom and RSS (a PostgreSQL store: the global alone,
    # the private one is served live)
    assert len(before) == (4 if settings.private_feed_files else 2)
    (guid,) = set(before["papers.atom"])
    assert (
        guid
        == "tag:papers.example.org,2024:title:sparse%20attention%20for%20very%20long%20documents"
    )
    assert all(ids == [guid] for ids in before.values())

    ingest(store, [Entry(TITLE, ABSTRACT, arxiv_id="2403.01234")], JOINED + timedelta(days=1))
    with store.connect() as conn:
        key, first_key = conn.execute(sa.text("SELECT key, first_key FROM paper")).one()
    assert (key, first_key) == (
        "arxiv:2403.01234",
        "title:sparse attention for very long documents",
    )
    assert run(settings, store, date(2026, 3, 13)).sent == []  # nothing new, nothing sent twice
    after = guids(settings)
    assert after == before
    atom = feedparser.parse((settings.feeds_dir / "papers.atom").read_bytes())
    # the id shows (the entry links to the paper's page under its new key), the GUID holds
    assert atom.entries[0].link == "https://papers.example.org/papers/arxiv%3A2403.01234"
    assert "https://arxiv.org/abs/2403.01234" in atom.entries[0].summary


def test_a_paper_first_seen_with_its_id_keeps_that(settings: Settings, store: Engine) -> None:
    ingest(store, [Entry(TITLE, ABSTRACT, arxiv_id="2403.01234")], JOINED + timedelta(hours=1))
    ingest(store, [Entry(TITLE, ABSTRACT + " More.")], JOINED + timedelta(hours=2))
    run(settings, store, date(2026, 3, 12))
    assert guids(settings)["papers.atom"] == ["tag:papers.example.org,2024:arxiv:2403.01234"]


def test_a_new_base_url_announces_nothing_again(settings: Settings, store: Engine) -> None:
    ingest(store, [Entry(TITLE, ABSTRACT)], JOINED + timedelta(hours=1))
    ingest(store, [Entry("Another Paper", "On attention.", arxiv_id="2403.05555")], JOINED)
    run(settings, store, date(2026, 3, 12))
    before = guids(settings)
    moved = settings.model_copy(update={"base_url": "https://digest.example.net/papers"})
    run(moved, store, date(2026, 3, 13))
    after = guids(moved)
    assert set(after) == set(before) and after == before
    assert all(g.startswith("tag:papers.example.org,2024:") for ids in after.values() for g in ids)
    feed = (moved.feeds_dir / "papers.atom").read_text(encoding="utf-8")
    assert "https://digest.example.net/papers/feeds/papers.atom" in feed  # links do follow


def test_an_existing_store_keeps_the_guids_it_had(tmp_path: Path) -> None:
    """A store made before GUIDs were kept: its papers' GUIDs come out as they were."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = sa.create_engine(url)
    with old.begin() as conn:
        conn.execute(sa.text("CREATE TABLE schema_version (version INTEGER NOT NULL)"))
        for number, migration in enumerate(MIGRATIONS[:2], 1):
            migration(conn)
            conn.execute(sa.text("INSERT INTO schema_version VALUES (:v)"), {"v": number})
        conn.execute(
            sa.text(
                "INSERT INTO paper (key, title_key, arxiv_id, title, first_seen, last_seen)"
                " VALUES ('arxiv:2403.01234', 't', '2403.01234', 'T', :t, :t),"
                " ('title:u', 'u', NULL, 'U', :t, :t)"
            ),
            {"t": JOINED},
        )
    old.dispose()
    env = {"DIGEST_DATA_DIR": str(tmp_path / "data"), "DIGEST_DATABASE_URL": url}
    settings = load_settings(
        environ={**env, "DIGEST_BASE_URL": "https://old.example.org"}, cwd=tmp_path
    )
    engine = open_store(url)
    run(settings, engine, date(2026, 3, 12))
    engine.dispose()
    assert sorted(guids(settings)["papers.rss"]) == [
        "tag:old.example.org,2024:arxiv:2403.01234",  # what publish made of them before
        "tag:old.example.org,2024:title:u",
    ]
