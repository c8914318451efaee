"""What is news: a paper new to the store and recent by its own date.

A back-fill of the arXiv snapshot brings papers from 1999 on into the store. They are
searchable and have their pages, but no digest mails them as new and no feed shows them
as its newest entry; a recent paper of the same back-fill is news as any other.
"""

from __future__ import annotations

import calendar
import json
import re
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote

import feedparser
import pytest
from sqlalchemy.engine import Engine

from digest.ingest.diff import upsert_entries
from digest.ingest.listing import Entry
from digest.present.paper import day_text
from digest.store import papers
from digest.store.engine import ingest_sequence, reading, transaction
from tests.conftest import REPO, Site

SNAPSHOT = REPO / "tests" / "fixtures" / "arxiv_snapshot.jsonl"
OLD = {"hep-th/9901001": date(1999, 1, 1), "0704.0002": date(2008, 12, 13)}
OLD_2024 = {"2403.00017": date(2024, 2, 29)}


def _recent_record(day: date) -> str:
    """A snapshot line for a paper first posted on ``day``."""
    created = f"{calendar.day_abbr[day.weekday()]}, {day.day} {calendar.month_abbr[day.month]}"
    return json.dumps(
        {
            "id": "2601.04242",
            "authors": "Ada Lovelace, Alan Turing, Grace Hopper and Edsger Dijkstra",
            "title": "Graph Decompositions for Curved Backgrounds",
            "abstract": "We study sparsity and strings on curved backgrounds.",
            "versions": [{"version": "v1", "created": f"{created} {day.year} 09:00:00 GMT"}],
            "update_date": day.isoformat(),
        }
    )


@pytest.fixture
def backfill(tmp_path: Path) -> Path:
    """The snapshot fixture (papers of 1999, 2008 and 2024) and one paper posted yesterday."""
    path = tmp_path / "arxiv_snapshot.jsonl"
    shutil.copy(SNAPSHOT, path)
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    with path.open("a", encoding="utf-8") as out:
        out.write(_recent_record(yesterday) + "\n")
    return path


@pytest.fixture
def site(site: Site, monkeypatch: pytest.MonkeyPatch) -> Site:
    """A site with the default news window (14 days)."""
    monkeypatch.delenv("DIGEST_NEWS_DAYS")
    site.env.pop("DIGEST_NEWS_DAYS")
    return site


def _everything(site: Site) -> None:
    """A reader whose interests match every paper of the back-fill."""
    site.subscribe({"reader@example.org": ["strings OR sparsity OR quantized OR graph"]})


def test_a_backfill_mails_only_the_recent_paper(site: Site, backfill: Path) -> None:
    _everything(site)
    assert site.cli("ingest", "--defer-index", str(backfill)).code == 0
    result = site.cli("run", "--json")
    assert result.code == 0, result.err
    ((_, message),) = site.received()
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "1 new" in message["Subject"]
    assert "Graph Decompositions for Curved Backgrounds" in text
    for old in [*OLD, *OLD_2024]:
        assert old not in text
    assert "Strings on Curved Backgrounds" not in text
    # each item says when the paper was listed, and by whom
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    listed = day_text(datetime.now(UTC).date() - timedelta(days=1))
    for part in (" ".join(text.split()), re.sub(r"<[^>]+>", "", html)):
        assert "Ada Lovelace, Alan Turing, Grace Hopper, Edsger Dijkstra · arXiv:2601.04242" in part
        assert listed in part


def test_backfilled_papers_are_searchable_and_have_pages(site: Site, backfill: Path) -> None:
    _everything(site)
    assert site.cli("ingest", "--defer-index", str(backfill)).code == 0
    assert site.cli("run").code == 0
    found = site.cli("search", "strings", "--json")
    assert found.code == 0, found.err
    keys = {hit["key"] for hit in found.json()["papers"]}
    assert "arxiv:hep-th/9901001" in keys
    with site.web() as web:
        page = web.get("/papers/arxiv:hep-th/9901001")
    assert page.status_code == 200
    assert "Strings on Curved Backgrounds" in page.text
    assert "1999-01-01" in page.text
    # the paper's own date, under its title with its authors
    assert '<time datetime="1999-01-01">1 Jan 1999</time>' in page.text


def test_the_public_feed_is_ordered_by_the_papers_own_dates(site: Site, backfill: Path) -> None:
    _everything(site)
    assert site.cli("ingest", "--defer-index", str(backfill)).code == 0
    assert site.cli("run").code == 0
    for kind in ("atom", "rss"):
        feed = feedparser.parse((site.data / "feeds" / f"papers.{kind}").read_bytes())
        assert not feed.bozo, feed.bozo_exception
        ids = [unquote(entry.link.split("/papers/")[-1]) for entry in feed.entries]
        assert ids[0] == "arxiv:2601.04242"
        published = {
            key: date(*entry.published_parsed[:3])
            for key, entry in zip(ids, feed.entries, strict=True)
        }
        assert published["arxiv:hep-th/9901001"] == date(1999, 1, 1)
        assert published["arxiv:2403.00017"] == date(2024, 2, 29)
        dates = [date(*entry.published_parsed[:3]) for entry in feed.entries]
        assert dates == sorted(dates, reverse=True)
        # authors: Atom's <author>, RSS's dc:creator (its <author> must be an address)
        authors = {key: entry.get("author") for key, entry in zip(ids, feed.entries, strict=True)}
        assert (
            authors["arxiv:2601.04242"]
            == "Ada Lovelace, Alan Turing, Grace Hopper, Edsger Dijkstra"
        )
        assert authors["arxiv:hep-th/9901001"]
        if kind == "atom":  # updated: when the paper last changed (its snapshot update_date)
            updated = {
                key: date(*entry.updated_parsed[:3])
                for key, entry in zip(ids, feed.entries, strict=True)
            }
            assert updated["arxiv:2403.00017"] == date(2024, 3, 6)
            assert updated["arxiv:hep-th/9901001"] == date(2008, 2, 3)


def test_news_and_the_newest_by_date_on_every_store(engine: Engine) -> None:
    """The store's side of it, on SQLite and PostgreSQL: what is news, what is newest."""
    came = datetime(2026, 3, 20, 23, 30, tzinfo=UTC)
    entries = [
        Entry("Old", arxiv_id="hep-th/9901001", published=date(1999, 1, 1)),
        Entry("Edge", arxiv_id="2603.00001", published=date(2026, 3, 6)),  # 14 days before
        Entry("Too old", arxiv_id="2603.00002", published=date(2026, 3, 5)),
        Entry("Undated"),  # a text dump: dated by the day it came
        Entry("Recent", arxiv_id="2603.00003", published=date(2026, 3, 19)),
    ]
    with transaction(engine) as conn:
        upsert_entries(conn, entries, came)
    with reading(engine) as conn:
        news = papers.new_since(conn, 0, ingest_sequence(conn), news_days=14)
        every = papers.new_since(conn, 0, ingest_sequence(conn))
        newest = papers.newest(conn, 3, by="dated")
    assert [p.title for p in news] == ["Edge", "Undated", "Recent"]
    assert len(every) == len(entries)
    assert [(p.title, p.dated) for p in newest] == [
        ("Undated", date(2026, 3, 20)),
        ("Recent", date(2026, 3, 19)),
        ("Edge", date(2026, 3, 6)),
    ]
