"""A builder renders each paper once and reuses the block: the cache key is the whole of
what the block shows, so two papers that differ in anything shown never share a block."""

from __future__ import annotations

import binascii
import dataclasses
import re
import textwrap
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import digest.deliver.message as emails
from digest.deliver import qp, wire, wrap
from digest.deliver.message import MessageBuilder, Sender
from digest.present.paper import DigestView, PaperView, TokenLinks
from digest.present.views import paper_links, paper_view
from digest.store.papers import PaperRow

NOW = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
SENDER = Sender("Digest <d@example.org>", "Paper Digest", "papers.example.org", "https://x.org")
BASE = "https://papers.example.org"
ROW = PaperRow(
    id=1,
    key="arxiv:2411.00001",
    title="Speech models for low-resource languages",
    abstract="We study speech recognition. Code: https://github.com/lab/speech. " * 12,
    url="https://example.org/paper",
    arxiv_id="2411.00001",
    times_seen=2,
    first_seen=datetime(2026, 11, 20, 6, 0, tzinfo=UTC),
    authors="A. Author, B. Author",
    seq=3,
    first_key="title:speech models",
    listing_date=date(2026, 11, 19),
    revised=date(2026, 11, 18),
)
HITS = [{"interest": "speech", "terms": ["speech"]}, {"liked": "An older paper"}]


def _other(value: Any) -> Any:
    """A different value of the same kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, str):
        return "New " + value  # at the start: a long abstract shows its beginning
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, datetime | date):
        return value - timedelta(days=3)
    if isinstance(value, tuple):
        return (*value, "recognition")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(
            value, **{f.name: _other(getattr(value, f.name)) for f in dataclasses.fields(value)}
        )
    pytest.fail(f"no other value for {value!r}: teach _other its kind")


def _digest(papers: list[PaperView], tokens: bool) -> DigestView:
    return DigestView(
        to="reader@example.org",
        period=date(2026, 11, 22),
        papers=papers,
        message_id="<d-1@papers.example.org>",
        unsubscribe_url="https://x.org/unsubscribe/t",
        unsubscribe_mailto="mailto:d@example.org?subject=unsubscribe",
        feed_url="https://x.org/feeds/private/f.atom",
        tokens=["7.abc"] * len(papers) if tokens else (),
    )


def _cached_then_fresh(first: PaperView, second: PaperView, tokens: bool) -> tuple[bytes, bytes]:
    """``second``'s message from a builder that already rendered ``first``, and from a new one."""
    shared = MessageBuilder(SENDER)
    shared.build(_digest([first], tokens), NOW)
    return (
        shared.build(_digest([second], tokens), NOW),
        MessageBuilder(SENDER).build(_digest([second], tokens), NOW),
    )


@pytest.mark.parametrize("tokens", [False, True], ids=["plain", "reader links"])
@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(PaperRow)])
def test_rows_differing_in_any_field_never_share_a_block(name: str, tokens: bool) -> None:
    changed = dataclasses.replace(ROW, **{name: _other(getattr(ROW, name))})
    first = paper_view(ROW, 1.0, HITS, BASE)
    second = paper_view(changed, 1.0, HITS, BASE)
    cached, fresh = _cached_then_fresh(first, second, tokens)
    assert cached == fresh


def test_the_fields_a_block_shows_do_change_it() -> None:
    """The check above is not empty: these fields of a row show in its block."""
    before = MessageBuilder(SENDER).build(_digest([paper_view(ROW, 1.0, HITS, BASE)], True), NOW)
    shown = ["key", "title", "abstract", "arxiv_id", "authors", "listing_date"]
    for name in shown:
        changed = dataclasses.replace(ROW, **{name: _other(getattr(ROW, name))})
        view = paper_view(changed, 1.0, HITS, BASE)
        assert MessageBuilder(SENDER).build(_digest([view], True), NOW) != before, name


@pytest.mark.parametrize("tokens", [False, True], ids=["plain", "reader links"])
@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(PaperView)])
def test_views_differing_in_any_field_never_share_a_block(name: str, tokens: bool) -> None:
    page, links = f"{BASE}/papers/x", TokenLinks(f"{BASE}/p?r=\x01token\x01", "m", "l")
    view = dataclasses.replace(paper_view(ROW, 1.0, HITS, None), page_url=page, token_links=links)
    if name == "evidence":  # marks recorded for each interest: "speech" marked once
        changed = dataclasses.replace(view, evidence=((((1, 9, 15),), "speech"),))
    else:
        changed = dataclasses.replace(view, **{name: _other(getattr(view, name))})
    cached, fresh = _cached_then_fresh(view, changed, tokens)
    assert cached == fresh


WORDS = ["speech", "models", "Speech", ".dots", "a=b", "café", "x" * 70, "LLMs", "<b>", "&"]


@st.composite
def _views(draw: st.DrawFn) -> PaperView:
    def words(low: int, high: int) -> str:
        return " ".join(draw(st.lists(st.sampled_from(WORDS), min_size=low, max_size=high)))

    links = draw(st.booleans())
    page, token_links = paper_links(BASE, "arxiv:2411.00001") if links else (None, None)
    return PaperView(
        key="arxiv:2411.00001",
        title=words(1, 12),
        abstract=words(0, 120),
        url=None,
        arxiv_id=draw(st.sampled_from([None, "2411.00001"])),
        score=1.0,
        interests=tuple(draw(st.lists(st.sampled_from(["speech", "model*", "llm", "café"])))),
        authors=words(0, 3),
        because=words(0, 4) if links else "",
        page_url=page,
        token_links=token_links,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_views())
def test_a_block_composed_of_shared_parts_is_the_block_rendered_whole(paper: PaperView) -> None:
    """Each part (the paper's skeleton, its marked title and abstract, the reasons, the
    reader's votes) is encoded once and joined: decoded, that is the template's rendering of
    the whole block, and every encoded line stays within 76 characters, none with a dot first."""
    builder = MessageBuilder(SENDER)
    composed = builder._block(paper, paper.token_links)
    whole = builder._render_block(paper, paper.token_links)
    token = b"12.0123456789abcdef0123456789abcdef"
    for ours, rendered in ((composed.html, whole.html), (composed.text, whole.text)):
        assert b"\x00" not in token  # where the token goes: nothing else is a NUL
        joined = ours.replace(b"\x00", token)
        assert binascii.a2b_qp(joined) == binascii.a2b_qp(rendered.replace(b"\x00", token))
        lines = joined.split(b"\r\n")
        assert max(len(line) for line in lines) <= 76
        assert not any(line.startswith(b".") for line in lines)


@settings(max_examples=300, deadline=None)
def textwrap_filled(text: str) -> str:
    """What textwrap makes of ``text`` as the plain part's abstract: the reference."""
    return textwrap.fill(
        text,
        wrap.TEXT_WIDTH,
        initial_indent="  ",
        subsequent_indent="  ",
        break_on_hyphens=False,
        break_long_words=False,
    )


@given(
    st.lists(
        st.sampled_from(["a", "speech", "x" * 69, "y" * 70, "z" * 71, "w" * 90, "a\u00a0b", "—"]),
        max_size=40,
    )
)
def test_the_plain_parts_wrapping_is_textwraps(words: list[str]) -> None:
    """Text as shown (words one space apart) is filled word by word: the same lines."""
    text = " ".join(words)
    expected = textwrap_filled(text)
    assert wrap.indented(text) == expected


@given(
    st.lists(
        st.sampled_from(["a", "é", " ", "  ", "\t", "\n", "\r", "\x0b", "\x0c", "\u00a0", "b"]),
        max_size=12,
    ).map("".join)
)
def test_words_one_space_apart_are_told_as_the_pattern_tells_them(text: str) -> None:
    """Text with textwrap's spaces other than one between words goes to textwrap itself."""
    one_spaced = re.fullmatch(r"[^\t\n\x0b\x0c\r ]+(?: [^\t\n\x0b\x0c\r ]+)*", text)
    assert wrap.one_spaced(text) == (one_spaced is not None)
    expected = textwrap_filled(text)
    if text.strip():
        assert wrap.indented(text) == expected


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["", "https://x.org/u/1", "https://x.org/u?a=1&b=<2>", "é" * 80]),
            st.booleans(),
            st.sampled_from(['A "quoted" <title> & more', "Plain title", "." + "x" * 90]),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_a_shell_shared_between_readers_is_its_template_rendered_for_each(
    readers: list[tuple[str, bool, str]],
) -> None:
    """The shell around the papers is rendered once and each reader's own values (their
    preheader, unsubscribe, manage and feed links) put in: for every reader, the template
    rendered with their values, escaped as it escapes them."""
    builder = MessageBuilder(SENDER)
    templates = emails._templates()
    for url, manage, title in readers:
        view = dataclasses.replace(
            _digest([paper_view(dataclasses.replace(ROW, title=title), 1.0, HITS, BASE)], True),
            unsubscribe_url=url,
            feed_url=url + "/feed",
            manage_url=url + "/manage" if manage else None,
        )
        context = builder._shell(view)
        html_blocks, text_blocks = builder._blocks(view)
        for template, blocks, ours in (
            (templates.html, html_blocks, builder.render_html(view)),
            (templates.text, text_blocks, builder.render_text(view)),
        ):
            head, _, tail = template.render(context).partition(emails._SLOT)
            papers = qp.decode(b"".join(blocks))
            assert ours == emails._ends_line(head) + papers + emails._ends_line(tail)


def _many_papers(count: int) -> list[PaperView]:
    """Papers that differ (title, abstract, marks), each with a reader's links."""
    views = []
    for n in range(count):
        row = dataclasses.replace(
            ROW,
            id=n + 1,
            key=f"arxiv:2411.{n:05d}",
            title=f"Speech models number {n} for low-resource languages",
            abstract=f"Paper {n} studies speech recognition in depth. " * (8 + n % 5),
        )
        interest = ["speech", "recognition", "languages"][n % 3]
        views.append(paper_view(row, 1.0, [{"interest": interest, "terms": [interest]}], BASE))
    return views


def test_what_a_builder_keeps_stays_within_its_budget_and_changes_no_byte() -> None:
    """A run's builder holds at most ``cache_bytes`` of shared parts however many readers it
    builds for; a part it let go is made again the same."""
    papers = _many_papers(400)
    digests = [_digest(papers[i : i + 12], tokens=True) for i in range(0, 400, 4)]
    budget = 256 * 1024
    small = MessageBuilder(SENDER, cache_bytes=budget)
    roomy = MessageBuilder(SENDER)
    for _ in range(2):  # the second time round, what was let go is made again
        for view in digests:
            assert small.build(view, NOW) == roomy.build(view, NOW)
            small.next_batch()
    kept = [small._cache, small._pieces]  # what differs between a paper's readers
    assert sum(cache.held for cache in kept) <= budget
    assert sum(cache.held for cache in kept) > budget // 2  # the budget is used, not just met
    roomy_kept = [roomy._cache, roomy._pieces]
    assert sum(cache.held for cache in roomy_kept) > 4 * budget  # the test builds enough


def test_a_new_batch_lets_the_views_of_the_last_go() -> None:
    builder = MessageBuilder(SENDER)
    builder.build(_digest(_many_papers(5), tokens=True), NOW)
    assert len(builder._by_view) == 5
    builder.next_batch()
    assert not builder._by_view


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_views(), min_size=1, max_size=4), st.sampled_from(["r@example.org", ".r@x.org"]))
def test_a_built_message_is_in_wire_form_as_built(papers: list[PaperView], to: str) -> None:
    """The SMTP transport sends a built message (``wire.Wire``) without scanning it: it must
    already be what the scan would make of it (CRLF lines, no line with a dot first)."""
    view = dataclasses.replace(
        _digest(papers, tokens=all(p.token_links for p in papers)),
        to=to,
        unsubscribe_url="https://x.org/unsubscribe/.t\n.x",
        feed_url=".feed\r\n.atom",
    )
    raw = MessageBuilder(SENDER).build(view, NOW)
    assert isinstance(raw, wire.Wire)
    assert wire.wire_form(bytes(raw)) == raw  # the scan, on a plain copy, changes nothing


def test_a_builder_dates_each_message_as_a_new_builder_would() -> None:
    """The Date header is made once a second and kept: messages built one after another, a
    second apart, within one second, or in another time zone, are dated as a builder that
    built nothing before dates them."""
    view = _digest(_many_papers(2), tokens=True)
    builder = MessageBuilder(SENDER)
    moments = [
        NOW,
        NOW + timedelta(seconds=1),
        NOW + timedelta(seconds=1, microseconds=999_999),
        NOW.astimezone(timezone(timedelta(hours=-5))),
        NOW + timedelta(days=1),
    ]
    built = [builder.build(view, moment) for moment in moments]
    assert built == [MessageBuilder(SENDER).build(view, moment) for moment in moments]
    dates = [
        next(line for line in raw.split(b"\r\n") if line.startswith(b"Date:")) for raw in built
    ]
    assert len(set(dates)) == 3  # the same second twice, the same moment in another zone
