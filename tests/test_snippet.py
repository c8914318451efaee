"""The shortened abstract shows what matched: a window around the first matched word.

An abstract longer than the email shows is cut; when its beginning would not reach the
first word an interest matched, the part shown is a window around that word instead, in
the email (both parts), the feeds and the site's lists. What is shown is always the
paper's own words, whole, in order.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digest.deliver.message import MessageBuilder, Sender
from digest.feeds.render import item_for_paper
from digest.present.paper import ABSTRACT_CHARS, DigestView, PaperView, fold, shorten, shown

SENDER = Sender("Digest <d@example.org>", "Paper Digest", "papers.example.org", "https://x.org")
NOW = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
FILLER = (
    "We tag each token of the transcripts with its part-of-speech label and compare taggers "
    "trained on written text with taggers trained on transcripts. "
) * 4
ABSTRACT = FILLER + "Errors concentrate in disfluent speech, where fillers and repairs abound."


def paper(abstract: str = ABSTRACT, interests: tuple[str, ...] = ("speech ^2",)) -> PaperView:
    return PaperView("k", "Tagging Spoken Transcripts", abstract, None, None, 1.0, interests)


def words_of(text: str) -> str:
    """The shown text without the ellipses that say it was cut."""
    return text.removeprefix("… ").removesuffix("…")


def test_the_shortened_abstract_shows_the_word_that_matched() -> None:
    text = shown(paper())
    assert text.truncated and text.abstract.startswith("… ")
    (span,) = text.marks.abstract
    assert text.abstract[span[0] : span[1]] == "speech"
    assert text.marks.reasons == ("speech",)
    assert words_of(text.abstract) in " ".join(ABSTRACT.split())


def test_the_email_and_the_feed_show_and_mark_the_word_that_matched() -> None:
    view = DigestView(
        "r@example.org", date(2026, 11, 22), [paper()], "<m@x>", "https://x/u", "u@x", "f"
    )
    builder = MessageBuilder(SENDER)
    html = builder.render_html(view)
    assert re.search(r"<mark[^>]*>speech</mark>", html)
    assert "disfluent speech" in " ".join(builder.render_text(view).split())
    summary = item_for_paper(paper(), guid="g", published=NOW).summary
    assert "<strong>speech</strong>" in summary


def test_an_abstract_whose_beginning_matched_is_shown_from_its_beginning() -> None:
    text = shown(paper("Speech " + ABSTRACT))
    assert text.abstract.startswith("Speech ") and text.abstract.endswith("…")
    # Matched nowhere in the abstract (the title, say): its beginning, as before.
    assert shown(paper(interests=("spoken",))).abstract.startswith("We tag each token")


VOCABULARY = (
    "models", "Model", "tagging", "part-of-speech", "state-of-the-art", "self-supervised",
    "the", "a", "of", "(LLMs)", "data,", "set;", "x", "café", "naïve", "δ-methods", "C++",
    "evaluation-and-benchmarking-at-a-very-large-scale",
)  # fmt: skip
SPACES = (" ", " ", " ", "  ", "\n", "\t", " \n ")


@st.composite
def abstracts(draw: st.DrawFn) -> tuple[str, str]:
    """An abstract with ``speech`` somewhere (or nowhere) among other words, and an interest."""
    word = st.sampled_from(VOCABULARY)
    words = draw(st.lists(word, max_size=20) | st.lists(word, min_size=60, max_size=160))
    at = draw(st.integers(0, len(words)))
    target = draw(st.sampled_from(("speech", "Speech", "speech.", "(speech)", "")))
    words.insert(at, target)
    gaps = draw(st.lists(st.sampled_from(SPACES), min_size=len(words), max_size=len(words)))
    interest = draw(st.sampled_from(("speech", '"speech"', "title:tagging", "spee*")))
    return "".join(w + g for w, g in zip(words, gaps, strict=True)), interest


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(abstracts())
def test_the_shown_abstract_is_the_papers_own_words_around_what_matched(
    case: tuple[str, str],
) -> None:
    abstract, interest = case
    whole = " ".join(abstract.split())
    text = shown(paper(abstract, (interest,)))
    part = words_of(text.abstract)
    start = whole.find(part)
    # A run of the paper's own words, none doubled, none cut: it starts and ends between words.
    assert start >= 0
    end = start + len(part)
    assert start == 0 or whole[start - 1] == " "
    assert end == len(whole) or whole[end] in " ,;:-"
    assert text.abstract.startswith("… ") == (start > 0)
    assert text.abstract.endswith("…") == (end < len(whole))
    assert len(part) <= ABSTRACT_CHARS or " " not in part.strip()
    # What matched in the abstract is in the part shown, and marked there.
    if interest != "title:tagging" and re.search(r"(?<![-\w])[Ss]peech(?![-\w])", whole):
        marked = [text.abstract[s:e].lower() for s, e in text.marks.abstract]
        assert "speech" in marked
    for s, e in text.marks.abstract:
        assert 0 <= s < e <= len(text.abstract)


_SPACED = st.lists(
    st.sampled_from(["a", "é", " ", "  ", "\t", "\r\n", "\r", "\n", "\x00", "\x0b", "\x1c",
                     "\x1f", "\x7f", "\x85", "\u2028", "\u00a0", "\u3000", "\u200b", "b.", "…"]),
    max_size=30,
).map("".join)  # fmt: skip


@given(_SPACED, st.integers(min_value=1, max_value=12))
def test_text_is_folded_as_the_regular_expressions_fold_it(text: str, limit: int) -> None:
    """Spacing folded by ``str.split`` (its spaces are the regex's ``\\s``), the same text as
    the regular expressions made of it: controls dropped, each run of spaces one, none at
    either end; and shortened from the same folded text."""
    cleaned = text.replace("\r\n", "\n").replace("\r", "\n")
    cleaned = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "", cleaned)
    assert fold(text) == re.sub(r"\s+", " ", cleaned).strip()
    folded = re.sub(r"\s+", " ", text).strip()
    cut = folded.rfind(" ", 0, limit + 1)
    cut = limit if cut < limit * 2 // 3 else cut
    expected = (
        (folded, False) if len(folded) <= limit else (folded[:cut].rstrip(" ,;:-") + "…", True)
    )
    assert shorten(text, limit) == expected
