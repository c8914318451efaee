"""What is marked is the matcher's own evidence: a paper that matches shows why, and no mark
stands where the matcher found nothing.

Generated interests (words, phrases, prefixes, alternatives, exclusions, fields) meet
generated papers; the matcher is the interest compiled as the highlighter compiles it
when the ranking recorded no marks, evaluated over the whole paper (as the ranker does):
what is shown of its evidence is marked, and a match none of whose evidence is shown is
named in plain words.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digest.present.paper import PaperView, shown
from digest.rank.doc import Evidence
from digest.rank.highlight import _plain, find_marks
from digest.rank.match import Compiler
from digest.rank.query import parse_interest
from digest.rank.text import DEFAULT

WORDS = [
    "speech",
    "recognition",
    "language",
    "model",
    "models",
    "modeling",
    "diffusion",
    "diffuse",
    "of",
    "for",
    "the",
    "retrieval",
    "dense",
    "agents",
    "science",
    "self-supervised",
    "data",
    "set",
    "dataset",
    "end-to-end",
    "learning",
]


class _Nothing:
    documents = 1
    avg_title_len = 1.0
    avg_abstract_len = 1.0
    frequencies: dict[str, int] = {}  # noqa: RUF012
    acronyms: dict[str, tuple[tuple[str, ...], ...]] = {}  # noqa: RUF012

    def doc_freq(self, term: str) -> int:
        return 0


word = st.sampled_from(WORDS)


@st.composite
def interests(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["word", "words", "phrase", "prefix", "or", "not", "field"]))
    a, b, c = draw(word), draw(word), draw(word)
    return {
        "word": a,
        "words": f"{a} {b}" + (f" {c}" if draw(st.booleans()) else ""),
        "phrase": f'"{a} {b}"',
        "prefix": f"{a[:4]}*" if len(a) >= 4 and a.isalpha() else a,
        "or": f"{a} OR {b}",
        "not": f"{a} -{b}" if a != b else a,
        "field": f"title:{a} {b}",
    }[kind]


def text(draw: st.DrawFn, low: int, high: int) -> str:
    return " ".join(draw(st.lists(word, min_size=low, max_size=high)))


@st.composite
def papers(draw: st.DrawFn) -> tuple[str, str]:
    return text(draw, 1, 8), text(draw, 0, 160)


def _evidence(written: str, title: str, abstract: str) -> list[Evidence] | None:
    compiler = Compiler(_Nothing(), DEFAULT)
    matcher = compiler.compile(parse_interest(written).query)[0]
    found: list[Evidence] = []
    doc = compiler.document(title, abstract, 1)
    return found if matcher.evaluate(doc, found) is not None else None


def _chars(text: str, found: list[Evidence], field: int) -> set[int]:
    """The characters of ``text`` under the evidence of one field."""
    offsets = DEFAULT.offsets(text)
    assert offsets is not None
    return {
        c
        for f, first, last, _ in found
        if f == field
        for c in range(offsets[first][0], offsets[last][1])
    }


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(interests(), papers())
def test_a_match_is_marked_or_named_and_every_mark_is_evidence(
    written: str, paper: tuple[str, str]
) -> None:
    title, abstract = paper  # words joined by single spaces: the text as shown
    found = _evidence(written, title, abstract)
    seen = shown(PaperView("k", title, abstract, None, None, 1.0, interests=(written,)))
    plain = _plain(parse_interest(written).query)
    if found is None:
        assert seen.marks.title == seen.marks.abstract == ()
        assert seen.marks.reasons == ((plain,) if plain else ())
        return
    lead = "… " if seen.abstract.startswith("… ") else ""
    visible = seen.abstract[len(lead) :].removesuffix("…")
    first = abstract.find(visible)
    assert first >= 0
    title_used = _chars(title, found, 0)
    abstract_used = {c - first + len(lead) for c in _chars(abstract, found, 1)}
    for start, end in seen.marks.title:
        assert set(range(start, end)) <= title_used, (title[start:end], written)
    if abstract.count(visible) == 1:  # where the part shown stands in the whole is certain
        for start, end in seen.marks.abstract:
            assert set(range(start, end)) <= abstract_used, (seen.abstract[start:end], written)
    if any(f == 0 for f, *_ in found):
        assert seen.marks.title
    assert seen.marks.reasons
    if not (seen.marks.title or seen.marks.abstract):  # the evidence lies beyond what is shown
        assert seen.marks.reasons == (plain,)


def test_a_prefix_sharing_first_letters_with_one_seen_before_still_marks() -> None:
    """A paper analyzed for ``zyxwvu*`` is looked at again for ``zyxw*``, a prefix of the
    same first letters compiled after it: the hypothesis search above once found the
    second marking nothing, in a paper it had analyzed before."""
    title, abstract = "Zyxwvut sampling for zyxwon models", "We study zyxwvut sampling."
    first = find_marks(title, abstract, ("zyxwvu*",))
    assert first.title == ((0, 7),)
    later = find_marks(title, abstract, ("zyxw*",))
    assert later.title == ((0, 7), (21, 27))
    assert later.abstract == ((9, 16),)
