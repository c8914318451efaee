"""Papers as the site shows them: the front page's new and trending lists, the "try it"
preview, a paper's page, the archive search.

What is marked in a title or abstract, and the "Matched:" line, come from the same
highlighter as the email (``digest.rank.highlight`` through ``digest.present.paper``);
the preview and the search rank through the run's own ranking path.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

from markupsafe import Markup
from sqlalchemy.engine import Connection, Engine

from digest.present.paper import (
    PaperView,
    arxiv_title_search,
    arxiv_url,
    authors_line,
    day_text,
    find_links,
    is_code_link,
    shown,
)
from digest.present.views import paper_view
from digest.rank.corpus import store_stats
from digest.rank.highlight import find_marks, mark
from digest.rank.query import InterestError, parse_interest, parse_written
from digest.rank.types import CorpusStats, Ranked, hits_to_json
from digest.service.preview import search_store, try_interests
from digest.store import papers
from digest.store.engine import ingest_sequence, reading
from digest.store.papers import PaperRow

log = logging.getLogger("digest.web")

PREVIEW_DAYS = 7
PREVIEW_ITEMS = 20
MAX_INTERESTS = 20
MAX_INTEREST_CHARS = 500  # one line of the preview, one search
HIT_OPEN, HIT_CLOSE = '<mark class="hit">', "</mark>"


def interest_refusal(error: InterestError, line: int | None = None) -> str:
    """A malformed interest in one sentence, with the position of the fault."""
    where = f"Interest {line} ({error.text!r})" if line is not None else f"{error.text!r}"
    return f"{where}: {error.reason} at position {error.position}."


_stats_lock = threading.Lock()
# The rank stage keeps process-wide caches (the highlighter's analyzed papers, compiled
# interests) that are not safe to use from two threads at once, and the web's handlers run
# in a thread pool: ranking and marking go one at a time (CPU-bound under the GIL anyway).
rank_lock = threading.Lock()


def cached_stats(caches: dict[str, Any], engine: Engine, conn: Connection) -> CorpusStats:
    """The store's term statistics, kept in ``caches`` and worked out again after a new ingest.

    Working them out takes seconds on a large store (a sample of 20,000 papers analyzed):
    only the first request of a process waits for it; after an ingest the statistics of
    the ingest before serve until the new ones are ready, made in a thread of their own.
    """
    sequence = ingest_sequence(conn)
    found = caches.get("stats")
    if found is not None and found[0] == sequence:
        stats: CorpusStats = found[1]
        return stats
    if found is not None:
        if _stats_lock.acquire(blocking=False):  # else: a refresh is under way
            threading.Thread(target=_refresh_stats, args=(caches, engine), daemon=True).start()
        return found[1]  # type: ignore[no-any-return]
    with _stats_lock:
        found = caches.get("stats")
        if found is None or found[0] != sequence:
            caches["stats"] = found = (sequence, store_stats(conn))
        return found[1]


def _refresh_stats(caches: dict[str, Any], engine: Engine) -> None:
    """Work out the statistics of the newest ingest (``_stats_lock`` is held for us)."""
    try:
        with reading(engine) as conn:
            caches["stats"] = (ingest_sequence(conn), store_stats(conn))
            conn.rollback()
    except Exception:  # the next request tries again; the old statistics still serve
        log.exception("could not work out the store's statistics")
    finally:
        _stats_lock.release()


@dataclass(frozen=True)
class Listed:
    """A paper as a list shows it: linked to its page, marked, with why it was chosen."""

    url: str
    title: Markup
    abstract: Markup
    truncated: bool
    authors: str
    arxiv_id: str | None
    reasons: tuple[str, ...]
    strength: str | None  # "strong match", "good match", "weak match": beside its list's best
    times_seen: int
    first_seen: datetime


# A raw score means nothing to a reader (its scale depends on the words and the archive):
# a list says how each paper matches beside the best of that same list.
STRENGTHS = ((0.75, "strong match"), (0.4, "good match"), (0.0, "weak match"))


def strength(score: float, best: float) -> str:
    """How well a paper matches, in words, beside the best score of its list."""
    share = score / best if best > 0 else 1.0
    return next(label for floor, label in STRENGTHS if share >= floor)


def listed(row: PaperRow, base_url: str, ranked: Ranked | None = None, best: float = 0.0) -> Listed:
    """A paper for a list (with its marks, and how well it matches beside ``best``, when
    ``ranked`` chose it)."""
    hits = hits_to_json(ranked.hits) if ranked is not None else []
    view = paper_view(row, ranked.score if ranked else 0.0, hits, base_url)
    text = shown(view)
    return Listed(
        url=_local(view),
        title=mark(text.title, text.marks.title, HIT_OPEN, HIT_CLOSE),
        abstract=mark(text.abstract, text.marks.abstract, HIT_OPEN, HIT_CLOSE),
        truncated=text.truncated,
        authors=authors_line(row.authors),
        arxiv_id=row.arxiv_id,
        reasons=text.marks.reasons,
        strength=strength(ranked.score, best) if ranked is not None else None,
        times_seen=row.times_seen,
        first_seen=row.first_seen,
    )


def _local(view: PaperView) -> str:
    """The paper page's path (links stay on whichever host serves the page)."""
    return f"/papers/{quote(view.key, safe='')}"


def _ranked_list(conn: Connection, ranked: Sequence[Ranked], base_url: str) -> list[Listed]:
    rows = papers.by_ids(conn, [r.paper_id for r in ranked])
    best = max((r.score for r in ranked), default=0.0)
    return [listed(rows[r.paper_id], base_url, r, best) for r in ranked if r.paper_id in rows]


@dataclass(frozen=True)
class Tried:
    """The "try it" preview: the interests as written, and what they picked or what is wrong."""

    text: str
    picked: list[Listed]
    error: str | None = None


def _try(conn: Connection, text: str, stats: CorpusStats, now: datetime, base_url: str) -> Tried:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return Tried(text, [], "Write at least one interest, one per line.")
    if len(lines) > MAX_INTERESTS:
        return Tried(text, [], f"At most {MAX_INTERESTS} interests, one per line.")
    for number, line in enumerate(lines, 1):
        if len(line) > MAX_INTEREST_CHARS:
            return Tried(
                text, [], f"Interest {number} is longer than {MAX_INTEREST_CHARS} characters."
            )
        try:
            parse_written(line)
        except InterestError as exc:
            return Tried(text, [], interest_refusal(exc, number))
    since = now - timedelta(days=PREVIEW_DAYS)
    with rank_lock:
        ranked = try_interests(conn, lines, since=since, stats=stats, limit=PREVIEW_ITEMS)
        return Tried(text, _ranked_list(conn, ranked, base_url))


@dataclass(frozen=True)
class FrontPage:
    """The front page's papers: what the interests tried picked, the new and the trending."""

    tried: Tried | None
    new: list[Listed]
    trending: list[Listed]


def front_page(
    engine: Engine,
    caches: dict[str, Any],
    *,
    now: datetime,
    base_url: str,
    tried: str | None,
    new_shown: int,
    trending_shown: int,
    trending_days: int,
) -> FrontPage:
    """The "try it" preview of ``tried`` (when given), the papers first seen in the last day
    and those seen most often in ``trending_days``, each list as long as asked."""
    with reading(engine) as conn:
        picked = (
            _try(conn, tried, cached_stats(caches, engine, conn), now, base_url)
            if tried is not None
            else None
        )
        new = papers.first_seen_since(conn, now - timedelta(days=1), new_shown)
        # a paper shows once: what is new today is not listed again as trending
        shown_new = {row.id for row in new}
        trending = [
            row
            for row in papers.trending(
                conn, now - timedelta(days=trending_days), trending_shown + len(new)
            )
            if row.id not in shown_new
        ][:trending_shown]
        conn.rollback()
    with rank_lock:
        new_listed = [listed(row, base_url) for row in new]
        trending_listed = [listed(row, base_url) for row in trending]
    return FrontPage(picked, new_listed, trending_listed)


@dataclass(frozen=True)
class Link:
    """A link the paper page offers."""

    label: str
    url: str


def _links(row: PaperRow, abstract: str) -> tuple[list[Link], list[Link]]:
    """The paper's pages elsewhere (arXiv, Hugging Face, its listing), and its code links."""
    pages: list[Link] = []
    if row.arxiv_id:
        arxiv = quote(row.arxiv_id, safe="/.")
        pages.append(Link("arXiv", arxiv_url(row.arxiv_id)))
        pages.append(Link("arXiv PDF", f"https://arxiv.org/pdf/{arxiv}"))
        pages.append(Link("Hugging Face", f"https://huggingface.co/papers/{arxiv}"))
    listing = row.url and urlsplit(row.url).scheme in {"http", "https"}
    if row.url and listing and all(link.url != row.url for link in pages):
        pages.append(Link("Listing", row.url))
    if not row.arxiv_id:  # no id known: arXiv's title search finds nearly every listed paper
        pages.append(Link("Find it on arXiv", arxiv_title_search(row.title)))
    found = find_links(abstract)
    code = [Link(url, url) for url in found if is_code_link(url)]
    pages.extend(Link(url, url) for url in found if not is_code_link(url))
    return pages, code


def _parsable(interests: tuple[str, ...]) -> tuple[str, ...]:
    kept = []
    for interest in interests:
        try:
            parse_interest(interest)
        except InterestError:
            continue
        kept.append(interest)
    return tuple(kept)


def paper_page(engine: Engine, key: str, interests: tuple[str, ...]) -> dict[str, Any] | None:
    """A paper's page: title and abstract marked for ``interests`` (those that parse), its
    authors, links elsewhere and code, when it was listed and seen; None: no such paper."""
    with reading(engine) as conn:
        found = papers.by_key(conn, key)
        conn.rollback()
    if found is None:
        return None
    row = found.row
    title = " ".join(row.title.split())
    abstract = " ".join(row.abstract.split())
    with rank_lock:
        marks = find_marks(title, abstract, _parsable(interests[:MAX_INTERESTS]))
    pages, code = _links(row, abstract)
    listing: date | None = found.listing_date
    return {
        "paper": row,
        "title_html": mark(title, marks.title, HIT_OPEN, HIT_CLOSE),
        "abstract_html": mark(abstract, marks.abstract, HIT_OPEN, HIT_CLOSE),
        "reasons": marks.reasons,
        "authors": " ".join(row.authors.split()),
        "pages": pages,
        "code": code,
        "listing_date": listing,
        "listed": day_text(row.dated),
        "first_seen": row.first_seen,
        "last_seen": found.last_seen,
    }


def search_refusal(query: str) -> str | None:
    """Why a search cannot run (too long, or not the interest language), or None."""
    if len(query) > MAX_INTEREST_CHARS:
        return f"A search is at most {MAX_INTEREST_CHARS} characters."
    try:
        parse_written(query)
    except InterestError as exc:
        return interest_refusal(exc)
    return None


def search_page(
    engine: Engine, caches: dict[str, Any], query: str, *, first: int, size: int, base_url: str
) -> tuple[list[Listed], bool]:
    """The papers ``first`` to ``first + size`` of a search (from 0), and whether more follow.

    A reader that must not write: the full-text index is searched as it is."""
    with reading(engine) as conn:
        stats = cached_stats(caches, engine, conn)
        with rank_lock:
            ranked = search_store(conn, query, limit=first + size + 1, stats=stats, index=False)
            hits = _ranked_list(conn, ranked[first : first + size], base_url)
        conn.rollback()
    return hits, len(ranked) > first + size
