"""Building digest emails: structure, headers, escaping, highlighting, size, expected output."""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import replace
from datetime import UTC, date, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import digest.deliver.message as emails
from digest.deliver.message import MessageBuilder, Sender, build_message, preheader_for
from digest.present.paper import (
    DigestView,
    PaperView,
    authors_line,
    clean_header,
    find_links,
    is_code_link,
    paper_link,
    shorten,
)
from digest.present.views import paper_view
from digest.rank.highlight import find_marks, mark
from digest.store.papers import PaperRow

EXPECTED = Path(__file__).parent / "expected"
NOW = datetime(2026, 11, 22, 7, 30, tzinfo=UTC)
SENDER = Sender(
    "Paper Digest <digest@example.org>", "Paper Digest", "papers.example.org", "https://example.org"
)
HOSTILE = "<script>alert('x')</script> & ]]> \"quoted\""

PAPERS = [
    PaperView(
        key="arxiv:2411.01234",
        title="Federated Learning of Diffusion Models at Scale",
        abstract=(
            "We study federated learning for diffusion models trained on private data. "
            "Our method, FedDiff, cuts communication by 10x while matching centralized "
            "quality on three image benchmarks. Diffusion-based generators are known to "
            "memorize; we show that federated training with secure aggregation reduces "
            "memorization. We further analyse self-supervised pretraining and LLMs as text "
            "encoders, and release everything. Code: https://github.com/example/feddiff. "
            "Project page: https://feddiff.example.org/."
        ),
        url=None,
        arxiv_id="2411.01234",
        score=7.25,
        interests=("federated learning", "diffus*"),
        authors="Ada Lovelace, Grace Hopper and Alan Turing",
        listed=date(2026, 11, 20),
    ),
    PaperView(
        key="title:a survey of schrodinger bridges",
        title="Schrödinger Bridges — a Survey",
        abstract="Schrödinger bridges connect two distributions; we survey δ-methods.",
        url=None,
        arxiv_id=None,
        score=3.0,
        interests=("bridge",),
    ),
]


def view(papers: list[PaperView] | None = None, **changes: str) -> DigestView:
    values = {
        "to": "reader@example.net",
        "message_id": "<digest-2026-11-22-42@example.org>",
        "unsubscribe_url": "https://example.org/unsubscribe/abc.def",
        "unsubscribe_mailto": "unsubscribe@example.org",
        "feed_url": "https://example.org/feeds/k3y.atom",
    }
    values.update(changes)
    return DigestView(
        to=values["to"],
        period=date(2026, 11, 22),
        papers=PAPERS if papers is None else papers,
        message_id=values["message_id"],
        unsubscribe_url=values["unsubscribe_url"],
        unsubscribe_mailto=values["unsubscribe_mailto"],
        feed_url=values["feed_url"],
        manage_url="https://example.org/manage/abc.def",
    )


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def parts(raw: bytes) -> tuple[str, str]:
    message = parse(raw)
    html = message.get_body(preferencelist=("html",))
    text = message.get_body(preferencelist=("plain",))
    assert html is not None and text is not None
    return html.get_content(), text.get_content()


def check_expected(name: str, actual: str, regen: bool) -> None:
    path = EXPECTED / name
    if regen:
        path.parent.mkdir(exist_ok=True)
        path.write_text(actual, encoding="utf-8")
    assert actual == path.read_text(encoding="utf-8"), f"{name} changed; --regen-expected if meant"


# --- the message as a whole ----------------------------------------------------------


def test_message_parses_with_every_header() -> None:
    raw = build_message(view(), SENDER, NOW)
    message = parse(raw)
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["From"] == "Paper Digest <digest@example.org>"
    assert message["To"] == "reader@example.net"
    assert message["Subject"] == "Your papers for 2026-11-22: 2 new"
    assert message["Date"].datetime == NOW
    assert message["Message-ID"] == "<digest-2026-11-22-42@example.org>"
    assert message["MIME-Version"] == "1.0"
    assert message["List-Id"] == "Paper Digest <papers.example.org>"
    assert message["List-Unsubscribe"] == (
        "<https://example.org/unsubscribe/abc.def>, "
        "<mailto:unsubscribe@example.org?subject=unsubscribe>"
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert not message.defects
    assert all(not part.defects for part in message.walk())


def test_message_is_7bit_with_crlf_lines_shorter_than_998() -> None:
    raw = build_message(view(), SENDER, NOW)
    assert raw.isascii()
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_output_is_deterministic_and_dated_by_now() -> None:
    first = build_message(view(), SENDER, NOW)
    assert first == build_message(view(), SENDER, NOW)
    naive = build_message(view(), SENDER, NOW.replace(tzinfo=None))
    assert parse(naive)["Date"].datetime == NOW


def test_non_ascii_headers_are_encoded_words() -> None:
    sender = Sender("Dïgest Bøt <digest@example.org>", "Papiers Dïgest", "papers.example.org", "")
    raw = build_message(view(to="Zoë Ünal <zoe@exämple.org>"), sender, NOW)
    headers = raw.split(b"\r\n\r\n", 1)[0]
    assert b"=?utf-8?" in headers
    message = parse(raw)
    assert message["From"] == "Dïgest Bøt <digest@example.org>"
    assert message["To"].addresses[0].display_name == "Zoë Ünal"
    assert message["To"].addresses[0].domain == "xn--exmple-cua.org"
    assert message["List-Id"] == "Papiers Dïgest <papers.example.org>"


def test_line_breaks_in_header_values_cannot_add_headers() -> None:
    sender = Sender(
        "Evil\r\nBcc: spy@evil.example <digest@example.org>",
        "Site\nBcc: spy@evil.example",
        "papers.example.org",
        "",
    )
    hostile = view(
        to="reader@example.net\r\nBcc: spy@evil.example",
        message_id="<id@example.org>\r\nBcc: spy@evil.example",
        unsubscribe_url="https://example.org/u?t=1\r\nBcc: spy@evil.example",
        unsubscribe_mailto="u@example.org\nBcc: spy@evil.example",
    )
    raw = build_message(hostile, sender, NOW)
    headers = raw.split(b"\r\n\r\n", 1)[0]
    assert not re.search(rb"\r\nBcc:", headers, re.IGNORECASE)
    message = parse(raw)
    assert message["Bcc"] is None
    assert len(message.get_all("To") or []) == 1


def test_a_bad_recipient_address_is_refused() -> None:
    with pytest.raises(ValueError):
        build_message(view(to="not an address"), SENDER, NOW)


# --- the parts ---------------------------------------------------------------------------


def test_untrusted_text_is_escaped_in_html_and_plain_in_text() -> None:
    paper = PaperView("k", "Title " + HOSTILE, "Abstract " + HOSTILE, None, None, 1.0, ("alert",))
    html, text = parts(build_message(view([paper]), SENDER, NOW))
    assert "<script" not in html
    assert "&lt;script&gt;" in html
    assert "&amp; ]]&gt;" in html
    assert "Title " + HOSTILE in text


def test_text_part_carries_the_papers_and_the_unsubscribe_link() -> None:
    _, text = parts(build_message(view(), SENDER, NOW))
    assert "Unsubscribe: https://example.org/unsubscribe/abc.def" in text
    assert "* Federated Learning of Diffusion Models at Scale" in text
    assert "Code: https://github.com/example/feddiff" in text
    assert "Schrödinger bridges connect two distributions; we survey δ-methods." in text
    prose = [line for line in text.splitlines() if "://" not in line]
    assert max(len(line) for line in prose) <= 76


def test_each_paper_shows_its_authors_and_arxiv_id() -> None:
    html, text = parts(build_message(view(), SENDER, NOW))
    byline = "\n  Ada Lovelace, Grace Hopper, Alan Turing · arXiv:2411.01234 ·\r\n  20 Nov 2026\r\n"
    assert byline in text  # wrapped, the date whole
    assert re.search(
        r'class="byline"[^>]*>Ada Lovelace, Grace Hopper, Alan Turing · '
        r'<a class="link" href="https://arxiv.org/abs/2411.01234"[^>]*>arXiv:2411.01234</a>'
        r" · 20 Nov 2026</p>",
        html,
    )
    bridges = text.split("* Schrödinger Bridges — a Survey\r\n", 1)[1]
    assert bridges.startswith("  Schrödinger bridges connect")  # nothing known, no line


def test_each_paper_shows_its_own_date_and_authors_from_the_store() -> None:
    row = PaperRow(
        id=7,
        key="arxiv:2411.05555",
        title="Sparse Mixtures of Many Experts",
        abstract="We route tokens to experts.",
        url=None,
        arxiv_id="2411.05555",
        times_seen=1,
        first_seen=NOW,
        authors="A. One, B. Two, C. Three, D. Four, E. Five and F. Six",
        listing_date=date(2026, 11, 19),
    )
    undated = replace(row, id=8, key="title:undated", arxiv_id=None, listing_date=None, authors="")
    papers = [paper_view(row, 1.0, []), paper_view(undated, 1.0, [])]
    html, text = parts(build_message(view(papers), SENDER, NOW))
    assert "\n  A. One, B. Two, C. Three et al. · arXiv:2411.05555 · 19 Nov 2026\r\n" in text
    assert re.search(r'class="byline"[^>]*>A. One, B. Two, C. Three et al. · <a [^>]*>arXiv:'
                     r"2411.05555</a> · 19 Nov 2026</p>", html)  # fmt: skip
    # no date of its own: dated by the day it was first seen
    assert "\n  22 Nov 2026\r\n" in text


def test_a_long_author_list_is_cut_to_its_first_names() -> None:
    assert authors_line("A. One, B. Two, C. Three, D. Four and E. Five") == (
        "A. One, B. Two, C. Three, D. Four, E. Five"
    )
    many = ", ".join(f"Author {n}" for n in range(1, 40))
    assert authors_line(many) == "Author 1, Author 2, Author 3 et al."
    assert authors_line("  ") == ""


def test_the_preheader_names_the_first_papers_and_stays_hidden() -> None:
    html, _ = parts(build_message(view(), SENDER, NOW))
    body = html.split("<body", 1)[1]
    first = re.search(r'<div class="preheader" style="([^"]*)">([^<]*)</div>', body)
    assert first is not None and body.index(first.group(0)) < body.index('class="paper"')
    assert "display:none" in first.group(1)
    preview = first.group(2)
    assert preview.startswith(
        "Federated Learning of Diffusion Models at Scale · Schrödinger Bridges — a Survey"
    )
    three = view([*PAPERS, PAPERS[0]])
    assert preheader_for(three).endswith(", and 1 more")
    assert preheader_for(view([])) == "Nothing new matched your interests this time."


def test_the_footer_names_the_site() -> None:
    html, text = parts(build_message(view(), SENDER, NOW))
    assert "because you subscribed to Paper Digest (https://example.org)." in text
    assert re.search(
        r'subscribed to <a class="link" href="https://example.org"[^>]*>Paper Digest', html
    )
    assert "subscribed at" not in text + html


def test_html_is_inlined_dark_mode_ready_and_fluid() -> None:
    html, _ = parts(build_message(view(), SENDER, NOW))
    assert '<meta name="color-scheme" content="light dark">' in html
    assert "prefers-color-scheme: dark" in html
    assert "max-width:640px" in html
    assert 'class="paper" style="' in html
    assert "<link" not in html
    assert "https://example.org/unsubscribe/abc.def" in html


def test_matched_words_are_marked_in_html() -> None:
    html, _ = parts(build_message(view(), SENDER, NOW))
    marks = re.findall(r"<mark[^>]*>(.*?)</mark>", html)
    assert "federated learning" in marks
    assert "Federated Learning" in marks
    assert "Diffusion" in marks and "diffusion" in marks


def test_fifty_papers_fit_under_gmails_clipping_size() -> None:
    words = [
        "model",
        "diffusion",
        "training",
        "data",
        "attention",
        "transformer",
        "robust",
        "sparse",
    ]
    abstract = " ".join(words[i % len(words)] for i in range(220))  # ~1,500 characters
    papers = [
        PaperView(f"arxiv:2411.{n:05d}", f"Paper {n} on diffusion models", abstract + " Code: "
                  f"https://github.com/lab/repo{n}", None, f"2411.{n:05d}", 1.0,
                  ("diffusion",))
        for n in range(50)
    ]  # fmt: skip
    html, _ = parts(build_message(view(papers), SENDER, NOW))
    assert len(html.encode("utf-8")) < 100_000


def test_each_paper_is_rendered_once_per_builder(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = emails.mark

    def counting(text: str, *args: object, **kwargs: object) -> object:
        calls.append(text)
        return real(text, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(emails, "mark", counting)
    builder = MessageBuilder(SENDER)
    for n in range(5):
        builder.build(view(to=f"reader{n}@example.net"), NOW)
    assert len(calls) == 2 * len(PAPERS)  # title and abstract, once per paper


def test_rendered_email_matches_the_expected_files(regen_expected: bool) -> None:
    builder = MessageBuilder(SENDER)
    check_expected("digest.html", builder.render_html(view()), regen_expected)
    check_expected("digest.txt", builder.render_text(view()), regen_expected)


# --- the pieces ----------------------------------------------------------------------------


def highlight(text: str, interests: list[str]) -> str:
    """``text`` marked as a title for ``interests``."""
    return str(mark(text, find_marks(text, "", tuple(interests)).title, "<mark>", "</mark>"))


def test_highlight_is_case_insensitive_and_whole_word() -> None:
    out = str(highlight("Attention and attentional ATTENTIONS", ["attention"]))
    assert out == "<mark>Attention</mark> and attentional <mark>ATTENTIONS</mark>"


def test_highlight_prefers_the_longer_term_and_never_nests() -> None:
    out = str(highlight("federated learning helps learning", ["learning", "federated learning"]))
    assert out == "<mark>federated learning</mark> helps <mark>learning</mark>"


def test_highlight_treats_hyphen_and_space_alike_and_prefixes() -> None:
    out = str(highlight("self-supervised diffusers", ["self supervised", "diffus*"]))
    assert out == "<mark>self-supervised</mark> <mark>diffusers</mark>"


def test_highlight_escapes_around_matches_and_never_inside_entities() -> None:
    out = str(highlight("a & b <amp> C++ lt", ["amp", "c++", "lt"]))
    # "c++" is the word "c" to the analyzer, so that is what is marked.
    assert out == "a &amp; b &lt;<mark>amp</mark>&gt; <mark>C</mark>++ <mark>lt</mark>"


def test_shorten_cuts_at_a_word_and_says_so() -> None:
    text = "word " * 200
    short, cut = shorten(text, 50)
    assert cut and short.endswith("word…") and len(short) <= 51
    assert shorten("brief  text", 50) == ("brief text", False)


def test_links_in_abstracts_are_found_and_sorted_into_code() -> None:
    text = "Code at https://github.com/a/b. See (https://x.example.org/page), github.com/c/d."
    links = find_links(text)
    assert links == (
        "https://github.com/a/b",
        "https://x.example.org/page",
        "https://github.com/c/d",
    )
    assert [is_code_link(u) for u in links] == [True, False, True]


def test_paper_link_prefers_url_then_arxiv_then_search() -> None:
    base = PAPERS[1]
    assert paper_link(base) == (
        "https://arxiv.org/search/?query=Schr%C3%B6dinger+Bridges+%E2%80%94+a+Survey"
        "&searchtype=title"
    )
    assert paper_link(PAPERS[0]) == "https://arxiv.org/abs/2411.01234"
    with_url = PaperView("k", "t", "a", "https://huggingface.co/papers/2411.01234", None, 1.0)
    assert paper_link(with_url) == "https://huggingface.co/papers/2411.01234"
    hostile = PaperView("k", "t", "a", "javascript:alert(1)", None, 1.0)
    assert paper_link(hostile).startswith("https://arxiv.org/search/")


def test_no_line_starts_with_a_dot_so_smtp_needs_no_dot_stuffing() -> None:
    dotted = PaperView("k", ". Leading dot", "Dots " + "." * 700, None, None, 1.0)
    raw = build_message(view([dotted]), SENDER, NOW)
    assert not any(line.startswith(b".") for line in raw.split(b"\r\n"))
    html, text = parts(raw)
    assert ". Leading dot" in text and "." * 300 in html


@given(st.lists(st.sampled_from(["a", "é", " ", "\t", "\r\n", "\x00", "\x7f", "\u0085", "\u2028",
                                  "\u00a0", "\u3000", "\x1b", "b"]), max_size=20).map("".join))  # fmt: skip
def test_a_header_value_is_folded_as_the_two_passes_fold_it(value: str) -> None:
    """Values with nothing to fold skip the regex passes: the same result either way."""
    control = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")
    assert clean_header(value) == re.sub(r"\s+", " ", control.sub(" ", value)).strip()


_LINKISH = st.sampled_from(
    ["https://", "HTTP://", "http://", "www.", "WWW.", "github.com/", "GitHub.Com/", "gitlab.com/",
     "huggingface.co/", "codeberg.org/", "xgithub.com/", "a", "Z", "_", ".", ")", "(", " ", "\n",
     "/", "é", "ſ", "İ", "K", "lab/x", "Code", "]"]
)  # fmt: skip


@given(st.lists(_LINKISH, max_size=40).map("".join))
def test_links_are_found_as_the_case_blind_pattern_finds_them(text: str) -> None:
    # "é " in front: the text is not ASCII, so read by the pattern with case ignored, over
    # the text as written; ASCII text is lowered and matched as it is
    assert find_links(text) == find_links("é " + text)
    assert find_links(text.upper()) == find_links("é " + text.upper())
