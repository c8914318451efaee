"""Marking why a paper was chosen: one rule (the analyzer's), never a word twice, the text intact.

The properties run over the real dumps and over generated text: with the marks taken
out, the rendered title and abstract are exactly the paper's own.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from markupsafe import Markup, escape

from digest.deliver.message import MessageBuilder, Sender
from digest.feeds.render import item_for_paper
from digest.ingest.listing import Entry
from digest.ingest.readers import read_listing
from digest.present.paper import DigestView, PaperView, shown
from digest.rank.highlight import TextSpan, find_marks, mark, merge
from digest.rank.query import InterestError, parse_interest
from digest.rank.text import DEFAULT
from tests.conftest import EXAMPLE_A, EXAMPLE_B, REAL_A, REAL_B

SENDER = Sender(
    "Digest <digest@example.org>", "Paper Digest", "papers.example.org", "https://x.org"
)
NOW = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
MARK = re.compile(r"<mark[^>]*>|</mark>")
TITLE = re.compile(r'<a class="title"[^>]*>(.*?)</a>')
ABSTRACT = re.compile(
    r'<p class="abstract"[^>]*>(.*?)(?: <a class="link"[^>]*>Read&nbsp;more</a>)?</p>'
)
COMMON = (
    "model",
    "models",
    "llm",
    "LLMs",
    'llm OR "language model"',
    "language model",
    '"large language models"',
    "diffus*",
    "self-supervised",
    "title:agent ^2",
    "learning -survey",
    "abstract:(benchmark OR dataset)",
)


def highlighted(text: str, interests: list[str]) -> str:
    """``text`` marked as a title, with brackets for marks."""
    return str(mark(text, find_marks(text, "", tuple(interests)).title, "[", "]"))


def render(title: str, abstract: str, interests: tuple[str, ...]) -> tuple[str, str, str]:
    """The HTML part's title and abstract of a one-paper digest, and the feed entry's summary."""
    paper = PaperView("k", title, abstract, None, None, 1.0, interests)
    view = DigestView(
        "r@example.org", date(2026, 11, 22), [paper], "<m@x>", "https://x/u", "u@x", "f"
    )
    page = MessageBuilder(SENDER).render_html(view)
    (title_html,) = TITLE.findall(page)
    (abstract_html,) = ABSTRACT.findall(page)
    summary = item_for_paper(paper, guid="g", published=NOW).summary
    return title_html, abstract_html, summary


def assert_intact(title: str, abstract: str, interests: tuple[str, ...]) -> bool:
    """With the marks taken out, what the email and the feed show is the paper's own text.

    True when something was marked.
    """
    title_html, abstract_html, summary = render(title, abstract, interests)
    for marked in (title_html, abstract_html):
        assert "</mark><mark" not in marked  # touching marks are one mark
        assert not re.search(r"<mark[^>]*>[^<]*<mark", marked)  # never nested
    assert html.unescape(MARK.sub("", title_html)) == " ".join(title.split())
    text = shown(PaperView("k", title, abstract, None, None, 1.0, interests))
    shown_text, cut = text.abstract, text.truncated
    assert html.unescape(MARK.sub("", abstract_html)) == shown_text
    whole = " ".join(abstract.split())
    # Its beginning, or a window around the first word that matched: the paper's own words.
    part = shown_text.removeprefix("… ").removesuffix("…") if cut else shown_text
    assert whole == shown_text if not cut else part in whole
    if cut and shown_text.startswith("… "):
        assert whole[whole.index(part) - 1] == " "
    elif cut:
        assert whole.startswith(part)
    plain = summary.replace("<strong>", "").replace("</strong>", "")
    assert f"<p>{html.escape(shown_text, quote=False)}</p>" in plain.replace("&#34;", '"').replace(
        "&#39;", "'"
    )
    return "<mark" in title_html + abstract_html


# --- the case -------------------------------------------------------------------


def test_model_and_models_llm_and_llms_are_each_marked_once() -> None:
    title = "Large Language Models (LLMs) as World Models: an LLM Model Zoo"
    abstract = (
        "We study large language models (LLMs). Each LLM is a model; the models are "
        "compared with world models, and one model of many LLMs wins."
    )
    interests = ("model", "models", "llm", "LLMs", 'llm OR "language model"', "language model")
    title_html, abstract_html, summary = render(title, abstract, interests)
    for text in (title_html, abstract_html, summary):
        plain = MARK.sub("", text).replace("<strong>", "").replace("</strong>", "")
        assert not re.search(r"(?i)\b(\w+)\1\b", plain), plain  # no ModelsModels, LLMsLLMs
    assert_intact(title, abstract, interests)
    marks = re.findall(r"<mark[^>]*>(.*?)</mark>", title_html)
    assert marks == ["Language Models", "LLMs", "Models", "LLM", "Model"]


def test_the_email_the_text_part_and_the_feed_never_double_a_word() -> None:
    paper = PaperView(
        "k",
        "Models and model: LLMs and LLM",
        "models model LLMs LLM " * 5,
        None,
        None,
        1.0,
        ("model", "models", "LLM", "llms"),
    )
    view = DigestView(
        "r@example.org", date(2026, 11, 22), [paper], "<m@x>", "https://x/u", "u@x", "f"
    )
    builder = MessageBuilder(SENDER)
    for part in (builder.render_html(view), builder.render_text(view)):
        stripped = MARK.sub("", part)
        assert "ModelsModels" not in stripped and "LLMsLLMs" not in stripped
        assert "modelsmodels" not in stripped and "LLMLLM" not in stripped
    summary = item_for_paper(paper, guid="g", published=NOW).summary
    assert "<strong>models</strong> <strong>model</strong> <strong>LLMs</strong>" in summary


# --- the rule ---------------------------------------------------------------------------------


def test_a_phrase_marks_the_phrase_and_never_the_lone_word() -> None:
    out = highlighted("A language model, a model, and language models", ['"language model"'])
    assert out == "A [language model], a model, and [language models]"


def test_words_asked_for_together_are_marked_where_they_stand_together() -> None:
    text = "Language models: a model of language, a model"
    assert (
        highlighted(text, ["language model"]) == "[Language models]: a model of language, a model"
    )


def test_words_that_never_stand_together_are_marked_once_each() -> None:
    text = "A model of language, one more model, and language again"
    assert (
        highlighted(text, ["language model"])
        == "A [model] of [language], one more model, and language again"
    )


def test_a_word_that_is_the_whole_interest_is_marked_everywhere() -> None:
    assert (
        highlighted("Model, models, MODELS, modelling", ["model"])
        == "[Model], [models], [MODELS], modelling"
    )


def test_exclusions_little_words_and_other_fields_are_not_marked() -> None:
    assert highlighted("Agents for science: a survey", ["agents for science -review"]) == (
        "[Agents for science]: a survey"
    )
    assert (
        highlighted("science agents for all", ["agents for science"])
        == "[science] [agents] for all"
    )
    assert highlighted("Diffusion survey", ["diffus* -survey"]) == "Diffusion survey"
    assert highlighted("Video agents", ["abstract:video", "agent"]) == "Video [agents]"


def test_overlapping_and_touching_spans_are_merged() -> None:
    assert merge([(5, 9), (0, 3), (3, 4), (6, 12), (14, 15)]) == ((0, 4), (5, 12), (14, 15))


def test_reasons_are_plain_words() -> None:
    marks = find_marks(
        "Agents that plan",
        "Large language models plan diffusion steps; diffusers too.",
        ('llm OR "language model"', "title:agent ^2", "diffus* -survey"),
    )
    assert marks.reasons == ("language model", "agent (in the title)", "diffusion, diffusers")


def test_an_interest_matched_only_where_the_abstract_is_cut_is_given_in_plain_words() -> None:
    # The part shown is a window around the first word that matched ("diffusion"): the
    # interest that matched beyond it is given in plain words.
    paper = PaperView(
        "k",
        "A title",
        "Words " * 80 + "and then diffusion models" + " and more" * 60 + " and LLMs.",
        None,
        None,
        1.0,
        ("diffus*", 'llm OR "language model"', "title:title"),
    )
    text = shown(paper)
    assert text.truncated and "diffusion" in text.abstract and "LLMs" not in text.abstract
    assert text.marks.reasons == (
        "diffusion",
        "llm or language model",
        "title (in the title)",
    )
    ((start, end),) = text.marks.abstract
    assert text.abstract[start:end] == "diffusion"


def test_reasons_that_say_the_same_are_given_once() -> None:
    marks = find_marks("LLMs and models", "", ("model", "models", "LLM", "llms", "title:llm"))
    assert marks.reasons == ("model", "LLM", "llm (in the title)")


def test_an_interest_the_grammar_no_longer_takes_is_shown_as_written() -> None:
    with pytest.raises(InterestError):
        parse_interest("title:")
    assert find_marks("A title", "", ("title:",)) == find_marks("A title", "", ("title:",))
    assert find_marks("A title", "", ("title:",)).reasons == ("title:",)


# --- the properties ---------------------------------------------------------------------------


@cache
def dump_papers(paths: tuple[Path, ...]) -> list[Entry]:
    found: list[Entry] = []
    for path in paths:
        found.extend(read_listing(Path(path), now=NOW).entries)
    return found


def interests_from(entry: Entry) -> tuple[str, ...]:
    """Interests a reader of this paper might hold: its words, phrases and prefixes, and common ones."""
    words = [w for w in re.findall(r"[A-Za-z][A-Za-z-]+", entry.title) if len(w) > 2]
    mine = [words[0], f'"{" ".join(words[:2])}"', " ".join(words[1:3]), words[-1][:4] + "*"]
    return (*COMMON, *(i for i in mine if valid(i)))


def valid(interest: str) -> bool:
    try:
        parse_interest(interest)
    except InterestError:
        return False
    return True


def check_dumps_render_intact(paths: tuple[Path, ...], least: int) -> None:
    papers = dump_papers(paths)
    assert len(papers) >= least
    marked = sum(assert_intact(e.title, e.abstract, interests_from(e)) for e in papers)
    assert marked > len(papers) // 2


def test_the_example_dumps_render_intact() -> None:
    check_dumps_render_intact((EXAMPLE_A, EXAMPLE_B), 19)


@pytest.mark.real_dumps
def test_the_real_dumps_render_intact() -> None:
    check_dumps_render_intact((REAL_A, REAL_B), 300)


VOCABULARY = (
    "model", "models", "Model", "MODELS", "LLM", "LLMs", "llm", "language", "Language",
    "self-supervised", "self", "supervised", "Self‐Supervised", "diffusion", "Diffusion-based",
    "diffusers", "naïve", "café", "cafe\u0301", "Straße", "½", "C++", "&amp;", "<b>", "δ-methods",
    "ﬁne-tuning", "data", "set", "dataset", "GPT-4s", "agents", "for", "science", "survey",
    "large", "learning", "benchmark", "x", "a", "—", "\u00ad", "e\u0301\u0301", "日本語", "한국어", "\u1100\u1161", "ো",
)  # fmt: skip
SEPARATORS = (" ", "  ", "-", " — ", ", ", ". ", " (", ") ", "\n", "\t", "/", "", "'", '"')
INTERESTS = (
    *COMMON, "model -survey", '"self supervised"', "selfsupervised", "data set", "dataset",
    "café", "naive", "straße", "title:(llm OR models)", "agents for science", "c++", "dat*",
)  # fmt: skip


ODD = st.text(st.characters(exclude_categories=["Cc", "Cs"]), max_size=6)


@st.composite
def texts(draw: st.DrawFn, most: int, least: int = 0) -> str:
    """Words an interest can meet, now and then odd characters, with what comes between."""
    word = st.one_of(st.sampled_from(VOCABULARY), st.sampled_from(VOCABULARY), ODD)
    between = st.one_of(st.sampled_from(SEPARATORS), st.sampled_from(SEPARATORS), ODD)
    pairs = draw(st.lists(st.tuples(word, between), min_size=least, max_size=most))
    return "".join(w + b for w, b in pairs)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    title=texts(most=20, least=1),
    abstract=texts(most=200, least=10),
    interests=st.lists(st.sampled_from(INTERESTS), min_size=1, max_size=5),
    own=st.lists(st.sampled_from(VOCABULARY), max_size=2),
)
def test_generated_text_renders_intact(
    title: str, abstract: str, interests: list[str], own: list[str]
) -> None:
    mine = [w for w in own if valid(w)]
    assume(title.strip())
    event("something marked" if assert_intact(title, abstract, (*interests, *mine)) else "none")
    event("abstract cut" if len(" ".join(abstract.split())) > 400 else "abstract whole")


@settings(max_examples=250, deadline=None)
@given(st.text(st.characters(exclude_categories=["Cs"]), max_size=80) | texts(most=30))
def test_every_word_the_analyzer_sees_is_located(text: str) -> None:
    positions = DEFAULT.positions(text)
    offsets = DEFAULT.offsets(text)
    if offsets is None:  # normalization composed across pieces: nothing is marked
        return
    assert len(offsets) == len(positions.surfaces)
    for (start, end), surface in zip(offsets, positions.surfaces, strict=True):
        assert 0 <= start < end <= len(text)
        assert surface in DEFAULT.positions(text[start:end]).surfaces


def _marked_escaping_each_piece(text: str, spans: Sequence[TextSpan]) -> str:
    pieces, position = [], 0
    for start, end in spans:
        if start < position or end > len(text):
            continue
        pieces += [str(escape(text[position:start])), "<m>", str(escape(text[start:end])), "</m>"]
        position = end
    return "".join([*pieces, str(escape(text[position:]))])


@given(
    st.text(alphabet=st.sampled_from(["a", " ", "é", "&", "<", ">", "'", '"', ";"]), max_size=30),
    st.lists(st.tuples(st.integers(0, 32), st.integers(1, 8)), max_size=4),
)
def test_marked_text_is_each_piece_escaped_with_its_tags(
    text: str, starts: list[tuple[int, int]]
) -> None:
    """Text with nothing HTML escapes is cut as it is; the same as escaping every piece."""
    spans = merge([(start, start + length) for start, length in starts])
    marked = mark(text, spans, "<m>", "</m>")
    assert marked == _marked_escaping_each_piece(text, spans)
    assert isinstance(marked, Markup)
