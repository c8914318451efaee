"""Text dumps of the Hugging Face papers page (what "select all, copy" gives).

Two layouts are known:

* ``hf-text-a``: no blank lines; a couple of "Get trending papers…" lines,
  then the word ``Subscribe`` glued to the first title; then title line,
  abstract line, title line, …
* ``hf-text-b``: a blank line between every line; a header of ``new``,
  "Get trending papers…", ``Subscribe``, ``byAK and the research community``
  and a listing date such as ``Mar 11``; then title, abstract, …

The layout is told apart by the blank lines alone (more than a third of the
lines blank means B); parsing is the same for both.

Page chrome (the header lines above and date lines) is dropped wherever it
occurs, since a copy of a longer page repeats it. ``Subscribe`` glued to the
first title is cut off only there, and only when the next character is not a
space or a lower-case letter, so "Subscriber-Aware …" stays intact.

Pairing titles with abstracts does not trust strict alternation, because
real dumps lose abstracts. Each line is judged on its own shape:

* an abstract is longer than 300 characters, or has an inner sentence break
  ("…data. We…"), or ends with a period, has at least 12 words and reads as
  prose (fewer than half its words capitalized, where titles capitalize most);
* right after a title, where an abstract is expected, a prose line ending in
  a period with 4+ words, or a prose line of 25+ words, is an abstract too;
* anything else is a title.

A title followed by another title keeps an empty abstract. An abstract-shaped
line where a title is expected continues the previous paper's abstract (a
paragraph break inside an abstract); one before any title is dropped, since a
paper without a title has no identity. Nothing here counts on position, so
one lost line shifts nothing after it; a line in doubt is read as a title, as
an extra paper costs less than a paper lost inside another's abstract.

Since any text pairs up this way, the would-be papers are then checked for the shape of a
papers page (``shape``): a README, a licence or notes are refused, naming the file and
their first line that no papers page has, before anything is stored.

The listing date (``Mar 11``) has no year. The year chosen is the latest one
that does not put the date more than two days after ``now`` (a dump is never
from the future, but clocks and time zones are a day or so apart): on
2024-03-10 "Mar 11" is 2024-03-11, on 2024-03-01 it is 2023-03-11, and on
2024-12-31 "Jan 1" is 2025-01-01. Dates with a year (``Mar 11, 2024``,
``2024-03-11``) are taken as written. A dump without a date line has none.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from itertools import pairwise
from pathlib import Path

from digest.errors import ListingError
from digest.ingest.listing import Entry, Listing

from .decoding import collapse
from .shape import Line, Paper, judge

LAYOUT_A = "hf-text-a"
LAYOUT_B = "hf-text-b"

# An abstract is at most 1,920 characters on arXiv; a line a hundred times
# longer is some other kind of file, not a paper listing.
MAX_LINE_CHARS = 200_000
TITLE_MAX_CHARS = 300
FUTURE_SLACK = timedelta(days=2)

_CHROME_EXACT = frozenset({"new", "subscribe", "byak and the research community"})
_CHROME_PREFIX = "get trending papers"
_CHROME_CHARS = 40  # longer than any chrome line above, and than the prefix
_GLUED = "Subscribe"

_MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ),
        start=1,
    )
    for name in names
}
_MONTH_DAY = re.compile(r"([A-Za-z]{3,9})\.?\s+(\d{1,2})(?:(?:,\s*|\s+)(\d{4}))?")
_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
# "data. We": a lower-case word (or a closing bracket or digit) ending a
# sentence and a capital starting the next. Titles break with "?" or ":".
_SENTENCE_BREAK = re.compile(r"(?:[a-z]{3}|[)\]\d%])\.\s+[A-Z]")


def parse_hf_text(text: str, path: Path, *, now: datetime) -> Listing:
    """Parse a Hugging Face papers-page text dump (layout A or B); refuse other text
    (``shape``) before anything is stored."""
    lines = text.split("\n")
    layout = _layout(lines)
    listing_date: date | None = None
    chrome = False
    content: list[Line] = []
    for number, raw in enumerate(lines, start=1):
        if len(raw) > MAX_LINE_CHARS:
            raise ListingError(
                f"line of {len(raw):,} characters; not a paper listing", str(path), number
            )
        line = collapse(raw)
        if not line:
            continue
        # chrome is short: the start of a line tells (casefold never shortens text)
        head = line[:_CHROME_CHARS].casefold()
        short = len(line) <= _CHROME_CHARS
        if head.startswith(_CHROME_PREFIX) or (short and head in _CHROME_EXACT):
            chrome = True
            continue
        is_date, found = parse_listing_date(line, now)
        if is_date:
            listing_date = listing_date or found
            continue
        if not content:
            unglued = _unglue_subscribe(line)
            chrome = chrome or unglued != line
            line = unglued
        content.append(Line(number, raw.rstrip(), line))
    content = _dedent(content)
    papers = list(_pair(content))
    if not papers:
        raise ListingError("no paper titles found; not a papers-page dump", str(path))
    if not any(paper.abstract for paper in papers):
        raise ListingError(
            "no abstracts found; not a papers-page dump (titles and abstracts expected)",
            str(path),
        )
    following = {line.number: after for line, after in pairwise(content)}
    verdict = judge(papers, following, chrome=chrome)
    if verdict is not None:
        raise ListingError(verdict.reason(), str(path), verdict.line)
    entries = [
        Entry(
            title=paper.title.text,
            abstract=" ".join(line.text for line in paper.abstract),
            line=paper.title.number,
        )
        for paper in papers
    ]
    return Listing(layout=layout, entries=entries, listing_date=listing_date)


def _dedent(content: list[Line]) -> list[Line]:
    """The lines without the margin they all share: a dump pasted indented is no less a
    dump, while an indented block inside other text stays indented."""
    if any(not line.raw[:1].isspace() for line in content):
        return content  # a line starts at the margin (most dumps: the first)
    margin = min((len(line.raw) - len(line.raw.lstrip()) for line in content), default=0)
    if not margin:
        return content
    return [Line(line.number, line.raw[margin:], line.text) for line in content]


def _layout(lines: list[str]) -> str:
    blank = sum(1 for line in lines if not line.strip())
    return LAYOUT_B if blank * 3 > len(lines) else LAYOUT_A


def _unglue_subscribe(line: str) -> str:
    if line.startswith(_GLUED) and len(line) > len(_GLUED):
        following = line[len(_GLUED)]
        if not following.isspace() and not following.islower():
            return line[len(_GLUED) :].strip()
    return line


def _pair(content: list[Line]) -> Iterator[Paper]:
    title: Line | None = None
    abstract: list[Line] = []
    for line in content:
        expecting_abstract = title is not None and not abstract
        if looks_like_abstract(line.text, expecting_abstract=expecting_abstract):
            if title is not None:
                abstract.append(line)
            # else: an abstract before any title belongs to no paper we can name.
            continue
        if title is not None:
            yield Paper(title, abstract)
        title, abstract = line, []
    if title is not None:
        yield Paper(title, abstract)


def looks_like_abstract(line: str, *, expecting_abstract: bool = False) -> bool:
    """Whether a (collapsed) line has the shape of abstract text rather than a title."""
    if len(line) > TITLE_MAX_CHARS or _SENTENCE_BREAK.search(line):
        return True
    words = line.split(" ")
    ends_sentence = line.rstrip("\"')]").endswith(".")
    if ends_sentence and len(words) >= 12:
        return _reads_as_prose(words)
    if expecting_abstract and ((ends_sentence and len(words) >= 4) or len(words) >= 25):
        return _reads_as_prose(words)
    return False


def _reads_as_prose(words: list[str]) -> bool:
    # Titles capitalize most of their words; sentences capitalize few.
    capitals = sum(1 for word in words if word[:1].isupper())
    return capitals * 2 < len(words)


def parse_listing_date(line: str, now: datetime) -> tuple[bool, date | None]:
    """Whether a line is a date line such as ``Mar 11``, and the date it stands for.

    A date line naming no real day (``Feb 30``) is still page chrome, with no date.
    """
    match = _ISO_DATE.fullmatch(line)
    if match:
        return True, _safe_date(int(match[1]), int(match[2]), int(match[3]))
    match = _MONTH_DAY.fullmatch(line)
    if not match:
        return False, None
    month = _MONTHS.get(match[1].casefold())
    if month is None:
        return False, None
    day = int(match[2])
    if match[3]:
        return True, _safe_date(int(match[3]), month, day)
    return True, resolve_year(month, day, now)


def resolve_year(month: int, day: int, now: datetime) -> date | None:
    """The latest ``month``/``day`` at most two days after ``now``; None if no such day."""
    latest = now.date() + FUTURE_SLACK
    # Eight years back always reaches a leap year, for 29 February.
    for year in range(now.year + 1, now.year - 8, -1):
        candidate = _safe_date(year, month, day)
        if candidate is not None and candidate <= latest:
            return candidate
    return None


def _safe_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None
