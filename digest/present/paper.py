"""A paper as digest shows it, to email, feeds and web pages alike: the one view of a
paper (``PaperView``, and a reader's digest, ``DigestView``), its text as shown (the
abstract's beginning, or a window around what matched), the words marked, its links.

Nothing here touches the network, the clock or the store. A paper links to its page on the
site (``PaperView.page_url``); a view made without one, to the paper's own URL, its arXiv
page, or for a paper without a URL or arXiv id, to arXiv's title search, which finds
nearly every paper these listings carry. What is marked in a paper's title and abstract,
and the "Matched:" line, come from ``digest.rank.highlight``: the evidence of the matcher
that ranked the paper, as its explanation recorded it (``PaperView.evidence``), mapped from
the stored text onto the text as shown (``_Folded``).
"""

from __future__ import annotations

import functools
import re
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from urllib.parse import quote_plus, urlsplit

from digest.rank.highlight import (
    HitMarks,
    Marks,
    TextSpan,
    marks_of,
    merge,
    plain_reason,
    prepare_marks,
    said_as,
)

ABSTRACT_CHARS = 400
AUTHORS_SHOWN = 5  # a longer list shows its first three names and "et al."
CODE_HOSTS = frozenset(
    {"github.com", "gitlab.com", "huggingface.co", "codeberg.org", "bitbucket.org", "sr.ht"}
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")
_SPACES = re.compile(r"\s+")
_URL = re.compile(
    r"(?:https?://|www\.|\b(?:github\.com|gitlab\.com|huggingface\.co|codeberg\.org)/)"
    r"[^\s<>\"'`{}|\\^\[\]]+",
    re.IGNORECASE,
)
_URL_LOWER = re.compile(_URL.pattern)  # the same, for ASCII text lowered
# What every link the pattern finds in ASCII text lowered holds
_URL_STARTS = ("http", "www.", "github.com/", "gitlab.com/", "huggingface.co/", "codeberg.org/")
_URL_TAIL = ".,;:!?)]}'\""
# Where a reader's token goes in their links (no shown text carries a \x01).
TOKEN = "\x01token\x01"


@dataclass(frozen=True, eq=False)  # one per paper (views.paper_links): hashed by identity,
class TokenLinks:  # a cheap key for the builder's blocks
    """A paper's links that carry a reader's token (at ``TOKEN``): its page on the site, and
    the "more like this" and "not for me" links."""

    page: str
    more: str
    less: str

    def filled(self, token: str) -> tuple[str, str, str]:
        """The three links of the reader with ``token``."""
        page, more, less = (url.replace(TOKEN, token) for url in (self.page, self.more, self.less))
        return page, more, less


@dataclass(frozen=True)
class PaperView:
    """One chosen paper as a digest shows it; ``interests`` are those of the reader it matched."""

    key: str
    title: str
    abstract: str
    url: str | None
    arxiv_id: str | None
    score: float
    interests: tuple[str, ...] = ()
    authors: str = ""
    because: str = ""  # the title of a paper the reader liked that this one was chosen for
    page_url: str | None = None  # the paper's page on this site
    token_links: TokenLinks | None = None  # the same, and the vote links, for a reader
    listed: date | None = None  # the paper's own date (its listing date, else first seen)
    # What each of ``interests`` marks, as the ranker recorded it (``highlight.evidence``
    # over ``title`` and ``abstract``; None, or none at all: worked out when shown).
    evidence: tuple[HitMarks | None, ...] = ()


@dataclass(frozen=True)
class DigestView:
    """One subscriber's digest for one period."""

    to: str
    period: date
    papers: Sequence[PaperView]
    message_id: str
    unsubscribe_url: str
    unsubscribe_mailto: str
    feed_url: str
    manage_url: str | None = None
    # The reader's token for each paper, in order, filled into its ``token_links`` (empty:
    # plain page links, no vote links); kept here so the papers stay shared between readers.
    tokens: Sequence[str] = ()


# --- the text as shown -----------------------------------------------------------


def clean_header(value: str) -> str:
    """Fold CR, LF and other control characters to single spaces so a value stays one header."""
    if value.isprintable() and "  " not in value and value[:1] != " " and value[-1:] != " ":
        return value  # nothing to fold (the common case: a regex pass costs more than this)
    return _SPACES.sub(" ", _CONTROL.sub(" ", value)).strip()


def clean_text(value: str) -> str:
    """Body text: one kind of line break, no NULs or other stray controls."""
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    return _DROPPED.sub("", value)


def shorten(text: str, limit: int = ABSTRACT_CHARS) -> tuple[str, bool]:
    """Collapse spacing and cut at a word boundary near ``limit``; True when something was cut."""
    text = " ".join(text.split())  # spacing folded: str.split's spaces are the regex's \s
    if len(text) <= limit:
        return text, False
    cut = text.rfind(" ", 0, limit + 1)
    if cut < limit * 2 // 3:  # one enormous "word" (a URL, a formula): cut inside it
        cut = limit
    return text[:cut].rstrip(" ,;:-") + "…", True


def arxiv_url(arxiv_id: str) -> str:
    """A paper's abstract page on arXiv."""
    return f"https://arxiv.org/abs/{quote_plus(arxiv_id, safe='/.')}"


def arxiv_title_search(title: str) -> str:
    """arXiv's search for a title: it finds nearly every listed paper without a known id."""
    return f"https://arxiv.org/search/?query={quote_plus(_SPACES.sub(' ', title).strip())}&searchtype=title"


def find_links(text: str) -> tuple[str, ...]:
    """The http(s) links written in a text, without trailing punctuation, each once."""
    found: dict[str, None] = {}
    if text.isascii():  # nearly every abstract: lowered, matched case-sensitively (2x faster)
        lowered = text.lower()
        if not any(start in lowered for start in _URL_STARTS):
            return ()  # most abstracts: none of what a link starts with, no pattern run
        matches = (text[m.start() : m.end()] for m in _URL_LOWER.finditer(lowered))
    else:  # letters that match an ASCII one only when case is ignored ("ſ" for "s")
        matches = (m.group() for m in _URL.finditer(text))
    for url in matches:
        url = url.rstrip(_URL_TAIL)
        if url.count("(") < url.count(")"):
            url = url.rstrip(")")
        if not url.lower().startswith(("http://", "https://")):
            url = "https://" + url
        if urlsplit(url).netloc:
            found.setdefault(url)
    return tuple(found)


def is_code_link(url: str) -> bool:
    """True for links to a code host (GitHub, GitLab, Hugging Face, …)."""
    host = (urlsplit(url).hostname or "").removeprefix("www.")
    return host in CODE_HOSTS


def paper_link(paper: PaperView) -> str:
    """The paper's page on this site; without one, its own page when known, else an arXiv
    title search for it."""
    if paper.page_url:
        return paper.page_url
    if paper.url and urlsplit(paper.url).scheme in {"http", "https"}:
        return paper.url
    if paper.arxiv_id:
        return arxiv_url(paper.arxiv_id)
    return arxiv_title_search(paper.title)


@dataclass(frozen=True)
class Shown:
    """A paper's title and abstract as a digest shows them, where to mark them, and why."""

    title: str
    abstract: str
    truncated: bool
    marks: Marks


def window(text: str, start: int, end: int, limit: int = ABSTRACT_CHARS) -> tuple[int, int]:
    """Where to cut ``text`` to show about ``limit`` characters holding ``text[start:end]``:
    (first, past the last), both between words, a little of what comes before kept."""
    first = max(0, min(start - limit // 4, len(text) - limit))
    if first and text[first - 1] != " ":
        space = text.find(" ", first, start)  # the next word's start, if before the match
        first = space + 1 if space >= 0 else text.rfind(" ", 0, start) + 1
    last = first + limit
    if last >= len(text):
        return first, len(text)
    if text[last] != " ":
        space = text.rfind(" ", first, last)
        last = space if space >= end else text.find(" ", end)  # the matched word stays whole
    return first, len(text) if last < 0 else last


def shown(paper: PaperView) -> Shown:
    """The paper's text as shown (abstract shortened) with the marks of its matched interests.

    The shown abstract is its beginning, then "…" when cut; when the beginning holds none
    of the words that matched, a window around the first of them, with "…" on the sides cut.
    What is marked is what each interest matched in the whole paper (``PaperView.evidence``,
    the ranker's, else the highlighter's), where it is shown; an interest none of whose
    marks is shown is said in plain words.
    """
    # The same view object comes back for every digest carrying the item (``stored_view``):
    # found by identity, its fields are not hashed again.
    found = _SHOWN.get(id(paper))
    if found is not None and found[0] is paper:
        return found[1]
    text = _shown(paper.title, paper.abstract, paper.interests, paper.evidence)
    if len(_SHOWN) >= _SHOWN_LIMIT:
        _SHOWN.clear()
    _SHOWN[id(paper)] = (paper, text)  # the view kept with it: its id is not reused meanwhile
    return text


_SHOWN: dict[int, tuple[PaperView, Shown]] = {}
_SHOWN_LIMIT = 65_536


@dataclass(frozen=True, slots=True)
class _Hit:
    """What one interest marks in a paper's text as shown (folded), and why."""

    title: tuple[TextSpan, ...]
    abstract: tuple[TextSpan, ...]
    reason: str
    says: str
    written: str


@functools.lru_cache(maxsize=65_536)  # a day's (paper, interests) pairs, each a few spans
def _hit(title: str, abstract: str, written: str, recorded: HitMarks | None) -> _Hit:
    """What ``written`` marks in the paper, from the marks recorded or worked out now, as
    places in the folded text shown."""
    if recorded is None:
        found = marks_of(title, abstract, written)
        spans = [(0, *span) for span in found.title] + [(1, *span) for span in found.abstract]
        reason, says = found.reason, found.says
    else:
        spans = list(recorded[0])
        reason, says = said_as(recorded[1])
    texts = (_folded(title), _folded(abstract))
    by_field: tuple[list[TextSpan], list[TextSpan]] = ([], [])
    for f, start, end in spans:
        place = texts[f].span(start, end)
        if place is not None:
            by_field[f].append(place)
    return _Hit(tuple(by_field[0]), tuple(by_field[1]), reason, says, written)


@functools.lru_cache(maxsize=65_536)
def _shown(
    title: str, abstract: str, interests: tuple[str, ...], evidence: tuple[HitMarks | None, ...]
) -> Shown:
    shown_title = _folded(title).text
    whole = _folded(abstract).text
    short, truncated = _short(abstract)
    if not interests:
        return Shown(shown_title, short, truncated, Marks())
    recorded = evidence if len(evidence) == len(interests) else (None,) * len(interests)
    hits = [
        _hit(title, abstract, written, marks)
        for written, marks in zip(interests, recorded, strict=True)
    ]
    first, end = 0, len(short) - 1 if truncated else len(short)
    text = short
    if truncated and not any(e <= end for hit in hits for _, e in hit.abstract):
        evidence_spans = merge([span for hit in hits for span in hit.abstract])
        if evidence_spans:
            first, last = window(whole, *evidence_spans[0])
            visible = whole[first:last].rstrip(" ,;:-")
            end = first + len(visible)
            text = ("… " if first else "") + visible + ("…" if end < len(whole) else "")
    shift = 2 if first else 0  # the "… " in front
    title_spans: list[TextSpan] = []
    abstract_spans: list[TextSpan] = []
    reasons: dict[str, str] = {}
    for hit in hits:
        inside = [
            (s - first + shift, e - first + shift)
            for s, e in hit.abstract
            if s >= first and e <= end
        ]
        title_spans.extend(hit.title)
        abstract_spans.extend(inside)
        reason, says = hit.reason, hit.says
        if (hit.title or hit.abstract) and not (hit.title or inside):
            reason, says = said_as(plain_reason(hit.written))  # matched where not shown
        if reason:
            reasons.setdefault(says, reason)
    marks = Marks(merge(title_spans), merge(abstract_spans), tuple(reasons.values()))
    return Shown(shown_title, text, truncated, marks)


def prepare(papers: Iterable[PaperView]) -> None:
    """Work out the marks of many papers ahead, paper by paper.

    Marks the ranker recorded need no work; for the others, readers' digests share papers
    in no particular order: taken paper by paper, each is analyzed once however many
    digests carry it, and ``shown`` then finds it all done.
    """
    texts: dict[tuple[str, str], set[str]] = {}
    for paper in papers:
        if paper.interests and len(paper.evidence) != len(paper.interests):
            texts.setdefault((paper.title, paper.abstract), set()).update(paper.interests)
    for (title, abstract), interests in texts.items():
        prepare_marks(title, abstract, interests)


class _Folded:
    """A text as shown (controls dropped, spacing folded: ``fold``) and where the
    characters of the text as written went in it."""

    __slots__ = ("_by_char", "_starts", "_texts", "text")

    def __init__(self, written: str) -> None:
        self.text = fold(written)
        self._starts: list[int] = []  # where each run of non-spaces starts in ``written``
        self._texts: list[int] = []  # and in ``text``
        self._by_char: list[int] | None = None  # (rare) each character's place in ``text``
        if self.text == written:
            return
        if _DROPPED.search(written):  # controls dropped inside words move them apart
            self._by_char = _char_map(written)
            return
        at = 0
        for run in _RUN.finditer(written):
            self._starts.append(run.start())
            self._texts.append(at)
            at += run.end() - run.start() + 1

    def span(self, start: int, end: int) -> TextSpan | None:
        """Characters ``start:end`` of the text as written, in ``text`` (None: not there)."""
        if self._by_char is not None:
            by_char = self._by_char
            if not 0 <= start < end <= len(by_char):
                return None
            first, last = by_char[start], by_char[end - 1]
            return None if first < 0 or last < 0 else (first, last + 1)
        if not self._starts:
            return (start, end) if 0 <= start < end <= len(self.text) else None
        run = bisect_right(self._starts, start) - 1
        last = bisect_right(self._starts, end - 1) - 1
        if run < 0 or last < 0:
            return None
        return (
            self._texts[run] + start - self._starts[run],
            self._texts[last] + end - self._starts[last],
        )


_DROPPED = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_RUN = re.compile(r"\S+")


def _char_map(written: str) -> list[int]:
    """Where each character of ``written`` stands in ``fold(written)`` (-1: dropped or a
    space folded away), character by character."""
    kept = [i for i, ch in enumerate(written) if not _DROPPED.match(ch)]
    cleaned = "".join(written[i] for i in kept).replace("\r", "\n")
    out = [-1] * len(written)
    at = 0
    for run in _RUN.finditer(cleaned):
        for k in range(run.start(), run.end()):
            out[kept[k]] = at + k - run.start()
        at += run.end() - run.start() + 1
    return out


def fold(text: str) -> str:
    """Text as emails and pages show it: controls dropped, spacing folded to single spaces."""
    return " ".join(clean_text(text).split())  # as ``_SPACES`` folds it, faster


@functools.lru_cache(maxsize=16_384)  # a day's papers, title and abstract
def _folded(text: str) -> _Folded:
    return _Folded(text)


@functools.lru_cache(maxsize=8192)  # a day's papers
def _short(abstract: str) -> tuple[str, bool]:
    """The abstract as shown (its beginning), and whether it was cut."""
    return shorten(_folded(abstract).text)


@functools.lru_cache(maxsize=16_384)  # a day's papers: each goes to many readers
def authors_line(authors: str) -> str:
    """``A. Author, B. Author, C. Author et al.``: a long list cut to its first names."""
    names = [name.strip() for name in re.split(r"[,;]|\band\b", clean_header(authors))]
    names = [name for name in names if name]
    if len(names) <= AUTHORS_SHOWN:
        return ", ".join(names)
    return ", ".join(names[:3]) + " et al."


_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def day_text(day: date) -> str:
    """``19 Nov 2026``: a paper's date as emails and pages show it, whatever the locale."""
    return f"{day.day} {_MONTH_NAMES[day.month - 1]} {day.year}"
