"""Feeds: valid RSS and Atom, stable guids, escaping, limits, and no needless rewrites."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import feedparser
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from digest.feeds.render import (
    READER,
    FeedItem,
    FeedKind,
    FeedMeta,
    item_for_paper,
    make_feed,
    paper_guid,
    render_feed,
    select_items,
    stored_hash,
    write_feed_if_changed,
)
from digest.feeds.xml import document, escape_attribute, escape_text, fresh_entries, xml_text
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
KINDS: tuple[FeedKind, ...] = ("atom", "rss")
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
    edited[0] = replace(edited[0], summary="<p>corrected</p>")
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
                token=links.signer(7, "salt").token(view.key),
            )
        )
    return found


@pytest.mark.parametrize("kind", ["atom", "rss"])
def test_a_private_feed_matches_the_expected_file(kind: FeedKind, regen_expected: bool) -> None:
    meta = FeedMeta(**{**META.__dict__, "description": "The papers of your digests."})
    actual = render_feed(meta, private_items(2), kind=kind).decode("utf-8")
    assert "?r=7." in actual and "/feedback/7." in actual  # the reader's own links
    check_expected(f"private.{kind}", actual, regen_expected)


# --- feeds joined from shared entries say what feedgen says of the whole feed -------------

ANY_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("<>&\"'\r\n\t ]]>;#x\x00\x01\x0b\x1f\ufffe\uffff")),
        st.characters(codec="utf-8"),
    ),
    max_size=40,
)
URL_PART = st.text(alphabet=st.sampled_from(list("ab/:%?=&<>\"'#é ")), max_size=12)
WHEN = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
)


@st.composite
def feed_items(draw: st.DrawFn) -> FeedItem:
    private = draw(st.booleans())
    hole = READER if private else ""
    return FeedItem(
        guid=draw(st.sampled_from(["tag:a,2024:1", "tag:a,2024:2", "tag:a,2024:<&>"])),
        title=draw(ANY_TEXT.filter(lambda t: xml_text(t) != "")),
        link=f"https://x.org/p/{draw(URL_PART)}?r={hole}",
        summary=draw(ANY_TEXT) + (f'<a href="/f/{hole}?v=up">more</a>' if private else ""),
        published=draw(WHEN),
        terms=tuple(draw(st.lists(ANY_TEXT, max_size=3))),
        summary_is_html=draw(st.booleans()),
        authors=draw(ANY_TEXT),
        updated=draw(st.none() | WHEN),
        token=draw(st.from_regex(r"[0-9]{1,4}\.[0-9a-f]{32}", fullmatch=True)) if private else "",
    )


@st.composite
def feed_metas(draw: st.DrawFn) -> FeedMeta:
    return FeedMeta(
        title=draw(ANY_TEXT.filter(lambda t: xml_text(t) != "")),
        self_url=f"https://x.org/{draw(URL_PART)}",
        site_url=f"https://x.org/{draw(URL_PART)}",
        updated=draw(WHEN),
        # now and then empty (feedgen then refuses the feed, or leaves the field out)
        description=draw(ANY_TEXT.filter(lambda t: xml_text(t).strip() != "") | st.just("")),
        author=draw(ANY_TEXT),
        feed_id=draw(st.none() | ANY_TEXT),
    )


@settings(max_examples=300, deadline=None)
@given(meta=feed_metas(), chosen=st.lists(feed_items(), max_size=5), kind=st.sampled_from(KINDS))
def test_a_feed_joined_from_shared_entries_is_the_one_feedgen_makes(
    meta: FeedMeta, chosen: list[FeedItem], kind: FeedKind
) -> None:
    """Byte for byte, for any text: the entries, shapes and heads are feedgen's own output
    cut apart, and what fills their holes is escaped as lxml escapes it."""
    try:
        whole = document(meta, select_items(chosen, 100), kind)
    except ValueError:  # feedgen refuses the feed (no title, no id): so does the joined one
        with pytest.raises(ValueError):
            render_feed(meta, chosen, kind=kind)
        return
    joined = render_feed(meta, chosen, kind=kind)
    declaration, _, rest = joined.partition(b"\n")
    comment, _, rest = rest.partition(b"\n")
    assert comment.startswith(b"<!-- digest-content: ")
    assert declaration + b"\n" + rest == whole
    # and again, every piece now made before
    assert render_feed(meta, chosen, kind=kind) == joined


@settings(max_examples=500, deadline=None)
@given(value=ANY_TEXT.map(xml_text).filter(bool))
def test_text_and_attributes_are_escaped_as_lxml_escapes_them(value: str) -> None:
    element = etree.Element("e", a=value)
    element.text = value
    expected = f'<e a="{escape_attribute(value)}">{escape_text(value)}</e>'
    assert etree.tostring(element, encoding="UTF-8") == expected.encode()


def test_a_reader_token_fills_every_link_of_a_shared_entry() -> None:
    (first,) = private_items(1)
    other = first.for_reader("8.0123456789abcdef0123456789abcdef", None)
    mine = render_feed(META, [first], kind="atom").decode()
    theirs = render_feed(META, [other], kind="atom").decode()
    assert READER not in mine and READER not in theirs
    assert mine.count(first.token) == 3 and theirs.count(other.token) == 3  # page, up, down
    assert mine.replace(first.token, other.token).splitlines()[2:] == theirs.splitlines()[2:]


def test_a_papers_entries_share_the_pieces_they_have_in_common() -> None:
    """A day holds each paper under several explanations, in both kinds of feed: what the
    entries have in common is held once."""
    first = private_items(2)[1]
    other = replace(first, summary=first.summary + "<p>Matched: other</p>", terms=("other",))
    for kind in KINDS:
        one, two = fresh_entries([first, other], kind)
        assert one.filled(b"T") != two.filled(b"T")
        both = {id(piece) for piece in one.pieces} & {id(piece) for piece in two.pieces}
        shared = sum(len(piece) for piece in one.pieces if id(piece) in both)
        assert shared > len(first.title) + len(first.guid)  # the paper's own pieces
    atom, rss = fresh_entries([first], "atom")[0], fresh_entries([first], "rss")[0]
    summary = max(atom.pieces, key=len)
    assert any(piece is summary for piece in rss.pieces)  # the summary once for both kinds


def test_the_content_hash_is_the_same_in_another_process() -> None:
    """A feed's hash (a file's change check, a live feed's ETag) is made of its entries'
    hashes, which never see the process's own stand-ins."""
    code = (
        "from tests.test_feeds import META, private_items\n"
        "from digest.feeds.render import make_feed\n"
        "print(make_feed(META, private_items(3), kind='rss').hash)\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[1],
    )
    assert other.stdout.strip() == make_feed(META, private_items(3), kind="rss").hash


@pytest.mark.parametrize("kind", KINDS)
def test_the_hash_follows_each_entry_and_each_token(kind: FeedKind) -> None:
    shared = private_items(3)
    before = make_feed(META, shared, kind=kind).hash
    assert make_feed(META, private_items(3), kind=kind).hash == before
    retoken = [shared[0].for_reader("9." + "0" * 32, None), *shared[1:]]
    assert make_feed(META, retoken, kind=kind).hash != before
    edited = [replace(shared[0], summary=shared[0].summary + "."), *shared[1:]]
    assert make_feed(META, edited, kind=kind).hash != before
    recategorized = [replace(shared[1], terms=("other",)), shared[0], *shared[2:]]
    assert make_feed(META, recategorized, kind=kind).hash != before
    later = FeedMeta(**{**META.__dict__, "updated": RUN + timedelta(days=1)})
    assert make_feed(later, shared, kind=kind).hash == before  # the build time is left out


RFC_3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
ATOM = "{http://www.w3.org/2005/Atom}"


def test_an_atom_feed_keeps_the_rules_of_atom() -> None:
    """RFC 4287: one id, title and updated a feed and an entry, dates in RFC 3339, one
    self link, each entry's summary escaped text that reads back as the HTML given."""
    shared = private_items(3) + items(2, start=5)
    root = etree.fromstring(render_feed(META, shared, kind="atom"))
    assert root.tag == f"{ATOM}feed"
    for element in [root, *root.findall(f"{ATOM}entry")]:
        for child in ("id", "title", "updated"):
            assert len(element.findall(f"{ATOM}{child}")) == 1, (element.tag, child)
        for date in element.findall(f"{ATOM}updated") + element.findall(f"{ATOM}published"):
            assert RFC_3339.fullmatch(date.text or ""), date.text
    assert [link.get("href") for link in root.findall(f"{ATOM}link[@rel='self']")] == [
        META.self_url
    ]
    entries = root.findall(f"{ATOM}entry")
    assert len(entries) == 5 and len({e.findtext(f"{ATOM}id") for e in entries}) == 5
    by_guid = {item.guid: item for item in shared}
    for entry in entries:
        item = by_guid[entry.findtext(f"{ATOM}id") or ""]
        (summary,) = entry.findall(f"{ATOM}summary")
        assert summary.get("type") == "html" and len(summary) == 0  # text, not markup
        assert summary.text == item.summary.replace(READER, item.token)
        assert [c.get("term") for c in entry.findall(f"{ATOM}category")] == list(item.terms)


def test_an_rss_feed_keeps_the_rules_of_rss() -> None:
    """RSS 2.0: a channel with title, link and description, RFC 822 dates, each item's
    guid once (not a permalink), its description escaped text."""
    shared = private_items(3) + items(2, start=5)
    root = etree.fromstring(render_feed(META, shared, kind="rss"))
    assert root.tag == "rss" and root.get("version") == "2.0"
    (channel,) = root.findall("channel")
    for child in ("title", "link", "description", "lastBuildDate"):
        assert len(channel.findall(child)) == 1, child
    dates = [channel.findtext("lastBuildDate")] + [
        item.findtext("pubDate") for item in channel.findall("item")
    ]
    for date in dates:
        assert parsedate_to_datetime(date or "").tzinfo is not None, date
        assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}", date or "")
    by_guid = {item.guid: item for item in shared}
    rendered = channel.findall("item")
    assert len(rendered) == 5
    for element in rendered:
        (guid,) = element.findall("guid")
        assert guid.get("isPermaLink") == "false"
        item = by_guid[guid.text or ""]
        (description,) = element.findall("description")
        assert len(description) == 0
        assert description.text == item.summary.replace(READER, item.token)
        assert [c.text for c in element.findall("category")] == list(item.terms)
