"""Whether a text file has the shape of a papers-page dump, checked before anything is stored.

The papers-page reader takes any text (a dump has no header to test for), so without this
check a README or a licence is read as a listing, one "paper" a line, and mailed. What
tells them apart is how their lines are made, not what they say:

* a papers page is one line a title or an abstract: a title is a short line with no
  markup; an abstract is a whole paragraph on one line, ending with its sentence;
* a document is written for a text editor or a Markdown renderer: headings (``# …``),
  list items (``- …``, ``1. …``), code fences, tables, quotations, rules, indented blocks,
  and sentences hard-wrapped at some 72–80 columns, so that a line ends mid-sentence
  and the next goes on in lower case.

A line of markup is a fault wherever it stands; a title line is also faulty when it holds
a link or inline code, is a heading in capitals, or ends mid-sentence (an abstract may
do all of these, cut short by the copy). A would-be paper (a title and the abstract
lines after it) with a fault in any of its lines is faulty, and a file
is refused when more than a fifth of its would-be papers are (a third when the page's
own chrome, "Get trending papers…" or ``Subscribe``, is there to vouch for it). The
share, not a count, so one stray line in a long dump costs nothing; a one-paper page
is refused only when its one paper is faulty. The real dumps have no faulty paper at
all, the documents of this project more than half.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# Marks that make a line document text wherever it stands (title or abstract).
_MARKUP: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r" {0,3}#{1,6}(?:\s|$)"), "a Markdown heading"),
    (re.compile(r"\s*(?:```|~~~)"), "a code fence"),
    (re.compile(r"\s*\|.*\|\s*$"), "a table row"),
    (re.compile(r"\s*[-*+•]\s+\S"), "a list item"),
    (re.compile(r"\s*(?:\d{1,3}[.)]|\(\w{1,3}\))\s+\S"), "a numbered item"),
    (re.compile(r"\s*>"), "a quotation"),
    (re.compile(r"\s*([-=_*~])(?:\s*\1){2,}\s*$"), "a rule"),
    (re.compile(r"(?: {4,}|\t)\S"), "an indented block"),
)
# Marks a title never has, though an abstract may ("code at https://…").
_NOT_TITLE: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"https?://|www\."), "a link where a title should be"),
    (re.compile(r"`[^`]+`"), "inline code where a title should be"),
)
# A line that stops on one of these is a sentence cut short by the wrapping.
_CUT_AFTER = re.compile(
    r"(?:[,;]|\s(?:a|an|the|of|and|or|but|if|than|to|in|into|on|for|with|by|from|as|at"
    r"|that|which|this|these|their|its|our|your|is|are|was|were|be|has|have|not))$",
    re.IGNORECASE,
)
_ENDS_SENTENCE = re.compile(r"""[.!?:;…'"”’)\]»]$""")
_TAIL = 8  # characters that hold any match of the two patterns above (the longest is 6)
# The next line going on in lower case: a plain lower-case word, not a name like "xLSTM".
_GOES_ON = re.compile(r"[a-z]+(?:[\s,;:.]|$)")
_CAPITALS = re.compile(r"[A-Z]{2,}")

MAX_FAULTY = 5  # a file is refused when more than 1 in MAX_FAULTY would-be papers are faulty
MAX_FAULTY_WITH_CHROME = 3


@dataclass(frozen=True, slots=True)
class Line:
    """A line of the dump that is neither blank nor page chrome."""

    number: int
    raw: str  # as written: the leading spaces of an indented block count
    text: str  # whitespace collapsed


@dataclass(frozen=True, slots=True)
class Paper:
    """A would-be paper: its title line and the abstract lines that follow it."""

    title: Line
    abstract: Sequence[Line]


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a file is not a papers page: how many would-be papers are faulty, and the first."""

    faulty: int
    papers: int
    line: int
    what: str

    def reason(self) -> str:
        """The one-line reason given to the operator."""
        return (
            f"reads as a document, not a papers-page dump: {self.faulty} of {self.papers}"
            f" would-be papers have lines no papers page has (first: {self.what})"
        )


def line_fault(line: Line, following: Line | None, *, as_title: bool) -> str | None:
    """What marks ``line`` as document text, or None when it could be part of a papers page."""
    # Every mark of markup begins with spacing or a sign, never a letter: a line that starts
    # with one (most lines of a dump) needs no pattern tried.
    if not line.raw[:1].isalpha():
        for pattern, what in _MARKUP:
            if pattern.match(line.raw):
                return what
    text = line.text
    if not as_title:
        return None  # an abstract may quote a link, or be cut short by the copy
    if "://" in text or "www." in text or "`" in text:  # what the two patterns need
        for pattern, what in _NOT_TITLE:
            if pattern.search(text):
                return what
    words = text.split(" ")
    if len(words) >= 3 and all(_CAPITALS.fullmatch(w.strip(".,:;!?")) for w in words):
        return "an all-capitals heading"
    # Both patterns are anchored at the end and span at most six characters: only the
    # line's tail is searched.
    tail = max(len(text) - _TAIL, 0)
    if _CUT_AFTER.search(text, tail):
        return "a sentence cut at the end of the line (hard-wrapped text)"
    if (
        following is not None
        and not _ENDS_SENTENCE.search(text, tail)
        and _GOES_ON.match(following.text)
    ):
        return "a sentence going on into the next line (hard-wrapped text)"
    return None


def judge(papers: Sequence[Paper], following: dict[int, Line], *, chrome: bool) -> Verdict | None:
    """The verdict on a file's would-be papers, or None when it has the shape of a listing.

    ``following`` maps a line number to the next content line; ``chrome`` says whether
    the page's own header lines were found.
    """
    faulty = 0
    first: tuple[int, str] | None = None
    for paper in papers:
        fault = _first_fault(paper, following)
        if fault is not None:
            faulty += 1
            first = first or fault
    limit = MAX_FAULTY_WITH_CHROME if chrome else MAX_FAULTY
    if first is None or faulty * limit <= len(papers):
        return None
    return Verdict(faulty=faulty, papers=len(papers), line=first[0], what=first[1])


def _first_fault(paper: Paper, following: dict[int, Line]) -> tuple[int, str] | None:
    lines = [(paper.title, True), *((line, False) for line in paper.abstract)]
    for line, as_title in lines:
        what = line_fault(line, following.get(line.number), as_title=as_title)
        if what is not None:
            return line.number, what
    return None
