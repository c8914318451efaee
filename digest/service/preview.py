"""Preview and search: the same ranking as a run, shown instead of sent.

``preview`` ranks exactly what the next run would choose for one subscriber
(papers first seen since their last digest, not yet sent to them), or with
``whole_store`` the newest papers of the store regardless. ``search`` runs one
expression of the interest language over the store: SQLite's full-text index
finds candidates, the ranker decides.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine

from digest.deliver.message import MessageBuilder
from digest.deliver.plan import Addressee, Plan, plan_owed, reader_votes
from digest.present.paper import DigestView
from digest.present.views import Links, ranked_json, ranked_views
from digest.rank.corpus import store_stats
from digest.rank.query import parse_interest, parse_written, positive_words
from digest.rank.ranker import rank, search
from digest.rank.types import CorpusStats, PaperText, Profile, Ranked
from digest.service.subscriptions import find_subscriber
from digest.service.wiring import links_of, sender_of
from digest.settings import Settings
from digest.store import papers
from digest.store.engine import reading, transaction
from digest.store.models import Subscriber
from digest.store.papers import index_papers
from digest.store.subscription import Subscription
from digest.tokens import message_id

WHOLE_STORE_LIMIT = 20_000  # newest papers ranked by ``preview --all`` and searches without FTS
FTS_CANDIDATES = 5_000
TRY_CANDIDATES = 120  # per interest: the full-text index's best, which the ranker orders


def _newest(conn: Connection, limit: int) -> list[PaperText]:
    return list(papers.newest(conn, limit))


def preview_ranked(
    conn: Connection,
    subscriber: Subscriber,
    *,
    period: date,
    now: datetime,
    whole_store: bool,
    news_days: int | None = None,
) -> list[Ranked]:
    """What the subscriber's next digest would hold (the news of ``news_days``), or their best
    papers in the whole store."""
    if whole_store:
        profile = Profile.of(Subscription.of(subscriber))
        votes = reader_votes(conn, [profile.id])
        newest = _newest(conn, WHOLE_STORE_LIMIT)
        return rank(newest, [profile], store_stats(conn), votes=votes)[profile.id]
    owed = plan_owed(conn, period=period, subscribers=[subscriber], news_days=news_days)
    (plan,) = owed or [Plan(subscriber, ())]
    return list(plan.ranked)


def digest_view(
    conn: Connection,
    links: Links,
    subscriber: Addressee,
    *,
    period: date,
    ranked: Sequence[Ranked],
    mail_from: str,
) -> DigestView:
    """A subscriber's digest of ``ranked`` as a run would send it: a dry run's and a preview's."""
    return links.digest_view(
        to=subscriber.email,
        ident=subscriber.id,
        salt=subscriber.token_salt,
        period=period,
        papers=ranked_views(conn, ranked, links.base_url),
        message_id=message_id(links.key, subscriber.id or 0, period, mail_from),
    )


@dataclass(frozen=True)
class Preview:
    """What ``digest preview`` shows: the papers as JSON, whether the store holds none at
    all, and the digest rendered (when asked for) as an .eml, .txt or .html file holds it."""

    email: str
    papers: list[dict[str, Any]]
    empty_store: bool
    rendered: bytes | None


def preview_digest(
    settings: Settings,
    engine: Engine,
    email: str,
    *,
    period: date,
    now: datetime,
    whole_store: bool,
    render: str | None = None,
) -> Preview:
    """A subscriber's next digest (or best papers in the whole store), rendered in the form
    ``render`` names (``.eml``, ``.txt`` or ``.html``), read and nothing written."""
    subscriber = find_subscriber(engine, email)
    rendered = None
    with reading(engine) as conn:
        ranked = preview_ranked(
            conn,
            subscriber,
            period=period,
            now=now,
            whole_store=whole_store,
            news_days=settings.news_days,
        )
        shown = ranked_json(conn, ranked)
        empty_store = not shown and not has_papers(conn)
        if render is not None:
            view = digest_view(
                conn,
                links_of(settings, engine, now),
                subscriber,
                period=period,
                ranked=ranked,
                mail_from=settings.mail_from,
            )
            builder = MessageBuilder(sender_of(settings))
            if render == ".eml":
                rendered = builder.build(view, now)
            elif render == ".txt":
                rendered = builder.render_text(view).encode("utf-8")
            else:
                rendered = builder.render_html(view).encode("utf-8")
        conn.rollback()
    return Preview(subscriber.email, shown, empty_store, rendered)


def search_papers(
    engine: Engine,
    query: str,
    *,
    limit: int = 20,
    progress: Callable[[str, int], None] | None = None,
) -> list[dict[str, Any]]:
    """``digest search``: the store's papers matching ``query``, best first, as JSON.

    Raises ``InterestError`` for a malformed query, before the store is touched.
    """
    parse_written(query)
    with transaction(engine) as conn:
        return ranked_json(conn, search_store(conn, query, limit=limit, progress=progress))


def _fts_query(query: str) -> str:
    """A loose full-text query: any of the positive words (the ranker applies the rest)."""
    words = []
    for raw in positive_words(query):
        for part in re.findall(r"\w+\*?", raw):
            words.append(f'"{part.rstrip("*")}"' + ("*" if part.endswith("*") else ""))
    return " OR ".join(dict.fromkeys(words))


def has_papers(conn: Connection) -> bool:
    """Whether the store holds any paper at all."""
    return papers.has_any(conn)


def search_store(
    conn: Connection,
    query: str,
    *,
    limit: int = 20,
    progress: Callable[[str, int], None] | None = None,
    stats: CorpusStats | None = None,
    index: bool = True,
) -> list[Ranked]:
    """Papers of the whole store matching ``query``, best first.

    The first search after a back-fill that deferred the index builds it (``progress``);
    ``index`` False: a reader that must not write searches the index as it is. ``stats``:
    the store's statistics, when the caller keeps them.
    """
    fts = conn.dialect.name == "sqlite" and _fts_query(query)
    found = None
    if fts:
        if index:
            index_papers(conn, progress)
        found = papers.fts_candidates(conn, fts, FTS_CANDIDATES)
    texts = _newest(conn, WHOLE_STORE_LIMIT) if found is None else list(found)
    return search(query, texts, stats or store_stats(conn), limit=limit)


def try_interests(
    conn: Connection,
    interests: Sequence[str],
    *,
    since: datetime,
    stats: CorpusStats,
    limit: int = 20,
) -> list[Ranked]:
    """What a digest with these interests would have picked among the papers first seen
    since ``since``, best first: the run's ranking, over the ``TRY_CANDIDATES`` papers the
    full-text index ranks best for each interest (on SQLite; elsewhere the newest
    ``WHOLE_STORE_LIMIT`` of the period).

    Raises ``InterestError`` for a malformed interest.
    """
    for interest in interests:
        parse_interest(interest)
    texts: dict[int, PaperText] = {}
    for interest in interests:
        fts = conn.dialect.name == "sqlite" and _fts_query(interest)
        found = papers.fts_candidates(conn, fts, TRY_CANDIDATES, since=since) if fts else None
        if found is None:
            texts = {row.id: row for row in papers.first_seen_since(conn, since, WHOLE_STORE_LIMIT)}
            break
        texts.update((row.id, row) for row in found)
    if not texts:
        return []
    profile = Profile(0, tuple(interests), max_items=limit)
    ordered = [texts[i] for i in sorted(texts)]
    return rank(ordered, [profile], stats, processes=1)[0]
