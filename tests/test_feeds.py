"""Feeds: valid RSS and Atom, stable guids, escaping, limits, and no needless rewrites."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import pytest

from digest.feeds.render import (
    FeedItem,
    FeedKind,
    FeedMeta,
    item_for_paper,
    paper_guid,
    render_feed,
    select_items,
    stored_hash,
    write_feed_if_changed,
)
from digest.present.paper import PaperView
from digest.present.views import Links, paper_view
from digest.store.papers import PaperRow

EXPECTED = Path(__file__).parent / "expected"
RUN = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
META = FeedMeta(
    title="Paper Digest: new papers",
    self_url="https://example.org/feeds/all.atom",
    site_url="https://example.org/",
    updated=RUN,
    author="Paper Digest",
)
HOSTILE = "<script>alert('x')</script> & ]]> \"quoted\""


def paper(n: int, **changes: str) -> PaperView:
    fields = {
        "title": f"Paper number {n} on diffusion",
        "abstract": f"Diffusion models, part {n}. Code: https://github.com/lab/p{n}.",
    }
    fields.update(changes)
    return PaperView(
        f"arxiv:2411.{n:05d}",
        fields["title"],
        fields["abstract"],
        None,
        f"2411.{n:05d}",
        1.0,
        ("diffus*",),
        "Ada Lovelace, Grace Hopper",
    )


def items(count: int, start: int = 0) -> list[FeedItem]:
    return [
        item_for_paper(
            paper(n),
            guid=paper_guid(f"arxiv:2411.{n:05d}", "example.org"),
            published=RUN - timedelta(hours=n),
        )
        for n in range(start, start + count)
    ]


@pytest.mark.parametrize("kind", ["rss", "atom"])
def test_feeds_parse_cleanly(kind: FeedKind) -> None:
    parsed = feedparser.parse(render_feed(META, items(3), kind=kind))
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert parsed.feed.title == "Paper Digest: new papers"
    assert [e.id for e in parsed.entries] == [
        paper_guid(f"arxiv:2411.{n:05d}", "example.org") for n in range(3)
    ]
    assert parsed.entries[0].link == "https://arxiv.org/abs/2411.00000"
    assert "<strong>Diffusion</strong>" in parsed.entries[0].summary
    self_links = [link.href for link in parsed.feed.links if link.rel == "self"]
    assert self_links == ["https://example.org/feeds/all.atom"]


def test_entries_name_the_authors_and_the_arxiv_id() -> None:
    parsed = feedparser.parse(render_feed(META, items(1), kind="atom"))
    entry = parsed.entries[0]
    assert entry.author == "Ada Lovelace, Grace Hopper"
    assert "Ada Lovelace, Grace Hopper · " in entry.summary
    assert '<a href="https://arxiv.org/abs/2411.00000">arXiv:2411.00000</a>' in entry.summary
    rss = feedparser.parse(render_feed(META, items(1), kind="rss")).entries[0]
    assert "Ada Lovelace, Grace Hopper" in rss.summary  # RSS names authors only with an address


def test_rss_dates_and_guids_are_in_the_right_form() -> None:
    raw = render_feed(META, items(1), kind="rss").decode()
    assert "<lastBuildDate>Sun, 22 Nov 2026 07:00:00 +0000</lastBuildDate>" in raw
    assert "<pubDate>Sun, 22 Nov 2026 07:00:00 +0000</pubDate>" in raw
    assert '<guid isPermaLink="false">tag:example.org,2024:arxiv:2411.00000</guid>' in raw


def test_build_time_comes_from_the_run_not_the_clock() -> None:
    first = render_feed(META, items(2), kind="atom")
    assert first == render_feed(META, items(2), kind="atom")
    assert b"<updated>2026-11-22T07:00:00+00:00</updated>" in first


@pytest.mark.parametrize("kind", ["rss", "atom"])
def test_guids_are_stable_across_regeneration(kind: FeedKind) -> None:
    before = feedparser.parse(render_feed(META, items(3), kind=kind))
    later = FeedMeta(**{**META.__dict__, "updated": RUN + timedelta(days=1)})
    after = feedparser.parse(render_feed(later, items(3) + items(2, start=3), kind=kind))
    assert {e.id for e in before.entries} <= {e.id for e in after.entries}


def test_items_are_deduplicated_newest_first_and_capped() -> None:
    doubled = items(5) + items(5)
    chosen = select_items(doubled, 3)
    assert [i.guid for i in chosen] == [i.guid for i in items(3)]
    parsed = feedparser.parse(render_feed(META, doubled, kind="rss", limit=4))
    assert len(parsed.entries) == 4
    assert len({e.id for e in parsed.entries}) == 4


@pytest.mark.parametrize("kind", ["rss", "atom"])
def test_untrusted_text_is_escaped_in_the_feed(kind: FeedKind) -> None:
    hostile = item_for_paper(
        paper(1, title="Title " + HOSTILE, abstract="Abstract " + HOSTILE + "\x0b"),
        guid="tag:example.org,2024:x",
        published=RUN,
    )
    raw = render_feed(META, [hostile], kind=kind)
    assert b"<script>" not in raw
    assert b"]]>" not in raw
    parsed = feedparser.parse(raw)
    assert parsed.bozo == 0
    assert parsed.entries[0].title == "Title " + HOSTILE
    # The summary is HTML: the abstract's text sits in it escaped, never as markup.
    assert "&lt;script&gt;" in parsed.entries[0].summary


def test_an_unchanged_feed_is_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "feeds" / "all.atom"
    assert write_feed_if_changed(path, META, items(3), kind="atom") is True
    before = os.stat(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns - 10_000_000_000))
    older = os.stat(path)
    later = FeedMeta(**{**META.__dict__, "updated": RUN + timedelta(days=1)})
    assert write_feed_if_changed(path, later, items(3), kind="atom") is False
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (older.st_ino, older.st_mtime_ns)
    assert write_feed_if_changed(path, later, items(4), kind="atom") is True
    assert os.stat(path).st_mtime_ns != older.st_mtime_ns
    assert stored_hash(path) is not None
    assert [p.name for p in path.parent.iterdir()] == ["all.atom"]  # no temp files left


def test_a_changed_summary_rewrites_the_feed(tmp_path: Path) -> None:
    path = tmp_path / "all.rss"
    write_feed_if_changed(path, META, items(2), kind="rss")
    edited = items(2)
    edited[0] = FeedItem(**{**edited[0].__dict__, "summary": "<p>corrected</p>"})
    assert write_feed_if_changed(path, META, edited, kind="rss") is True


def check_expected(name: str, actual: str, regen: bool) -> None:
    path = EXPECTED / name
    if regen:
        path.write_text(actual, encoding="utf-8")
    assert actual == path.read_text(encoding="utf-8"), f"{name} changed; --regen-expected"


@pytest.mark.parametrize("kind", ["atom", "rss"])
def test_rendered_feed_matches_the_expected_file(kind: FeedKind, regen_expected: bool) -> None:
    actual = render_feed(META, items(2), kind=kind).decode("utf-8")
    check_expected(f"feed.{kind}", actual, regen_expected)


READER_KEY = b"k" * 32


def private_items(count: int) -> list[FeedItem]:
    """Entries of a private feed: each with its reader's links, one abstract cut short."""
    links = Links("https://example.org", READER_KEY, "")
    found = []
    for n in range(count):
        view = paper_view(
            PaperRow(
                id=n + 1,
                key=f"arxiv:2411.{n:05d}",
                title=f"Paper number {n} on diffusion",
                abstract=f"Diffusion models, part {n}. " + "More words follow here. " * 30 * n,
                url=None,
                arxiv_id=f"2411.{n:05d}",
                times_seen=1,
                first_seen=RUN,
                authors="Ada Lovelace and Grace Hopper",
            ),
            1.0,
            [{"interest": "diffus*"}, {"liked": "An <earlier> paper"}] if n else [],
            "https://example.org",
        )
        found.append(
            item_for_paper(
                view,
                guid=paper_guid(view.key, "example.org"),
                published=RUN - timedelta(hours=n),
                reader=links.reader_links(7, "salt", view.key),
            )
        )
    return found


@pytest.mark.parametrize("kind", ["atom", "rss"])
def test_a_private_feed_matches_the_expected_file(kind: FeedKind, regen_expected: bool) -> None:
    meta = FeedMeta(**{**META.__dict__, "description": "The papers of your digests."})
    actual = render_feed(meta, private_items(2), kind=kind).decode("utf-8")
    assert "?r=7." in actual and "/feedback/7." in actual  # the reader's own links
    check_expected(f"private.{kind}", actual, regen_expected)
