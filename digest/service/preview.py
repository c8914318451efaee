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
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import col

from digest.deliver.message import PaperView
from digest.deliver.plan import Plan, plan_digests, store_stats
from digest.rank.query import AllOf, AnyOf, Node, Phrase, Term, Without, parse_interest
from digest.rank.ranker import rank, search
from digest.rank.types import PlainPaper, Profile, Ranked, hits_to_json
from digest.store.engine import index_papers
from digest.store.models import Paper, Subscriber
from digest.store.subscribers import interests_of

WHOLE_STORE_LIMIT = 20_000  # newest papers ranked by ``preview --all`` and searches without FTS
FTS_CANDIDATES = 5_000


def paper_view(row: Any, score: float, hits: Sequence[dict[str, Any]]) -> PaperView:
    """A stored paper and why it was chosen, as an email shows it."""
    return PaperView(
        key=row.key,
        title=row.title,
        abstract=row.abstract,
        url=row.url,
        arxiv_id=row.arxiv_id,
        score=score,
        interests=tuple(hit["interest"] for hit in hits),
        authors=row.authors,
    )


def _paper_rows(conn: Connection, ids: Sequence[int]) -> dict[int, Any]:
    rows = conn.execute(
        sa.select(
            col(Paper.id),
            col(Paper.key),
            col(Paper.title),
            col(Paper.abstract),
            col(Paper.url),
            col(Paper.arxiv_id),
            col(Paper.authors),
        ).where(col(Paper.id).in_(ids))
    ).all()
    return {row.id: row for row in rows}


def ranked_views(conn: Connection, ranked: Sequence[Ranked]) -> list[PaperView]:
    """Ranked papers as email views, best first."""
    rows = _paper_rows(conn, [r.paper_id for r in ranked])
    return [paper_view(rows[r.paper_id], r.score, hits_to_json(r.hits)) for r in ranked]


def ranked_json(conn: Connection, ranked: Sequence[Ranked]) -> list[dict[str, Any]]:
    """Ranked papers as ``preview --json`` and ``search --json`` print them."""
    rows = _paper_rows(conn, [r.paper_id for r in ranked])
    return [
        {
            "title": rows[r.paper_id].title,
            "key": rows[r.paper_id].key,
            "url": rows[r.paper_id].url,
            "score": round(r.score, 4),
            "matched": hits_to_json(r.hits),
        }
        for r in ranked
    ]


def _newest(conn: Connection, limit: int) -> list[PlainPaper]:
    rows = conn.execute(
        sa.select(col(Paper.id), col(Paper.title), col(Paper.abstract), col(Paper.times_seen))
        .order_by(col(Paper.id).desc())
        .limit(limit)
    ).all()
    return [PlainPaper(r.id, r.title, r.abstract, r.times_seen) for r in rows]


def preview_ranked(
    conn: Connection, subscriber: Subscriber, *, period: date, now: datetime, whole_store: bool
) -> list[Ranked]:
    """What the subscriber's next digest would hold, or their best papers in the whole store."""
    if whole_store:
        profile = Profile(
            subscriber.id or 0,
            tuple(interests_of(subscriber)),
            max_items=subscriber.max_items,
            min_score=subscriber.min_score,
        )
        return rank(_newest(conn, WHOLE_STORE_LIMIT), [profile], store_stats(conn))[profile.id]
    (plan,) = plan_digests(conn, period=period, subscribers=[subscriber]) or [Plan(subscriber, ())]
    return list(plan.ranked)


def _fts_words(node: Node) -> list[str]:
    """The words a paper must show for ``node`` to have a chance (exclusions left out)."""
    if isinstance(node, Term):
        return [node.word + ("*" if node.prefix else "")]
    if isinstance(node, Phrase):
        return node.words.split()
    if isinstance(node, AllOf | AnyOf):
        return [w for item in node.items for w in _fts_words(item)]
    if isinstance(node, Without):
        return []
    return []


def _fts_query(query: str) -> str:
    """A loose full-text query: any of the positive words (the ranker applies the rest)."""
    words = []
    for raw in _fts_words(parse_interest(query).query):
        for part in re.findall(r"\w+\*?", raw):
            words.append(f'"{part.rstrip("*")}"' + ("*" if part.endswith("*") else ""))
    return " OR ".join(dict.fromkeys(words))


def has_papers(conn: Connection) -> bool:
    """Whether the store holds any paper at all."""
    return conn.execute(sa.select(col(Paper.id)).limit(1)).first() is not None


def search_store(
    conn: Connection,
    query: str,
    *,
    limit: int = 20,
    progress: Callable[[str, int], None] | None = None,
) -> list[Ranked]:
    """Papers of the whole store matching ``query``, best first.

    The first search after a back-fill that deferred the index builds it (``progress``).
    """
    fts = conn.dialect.name == "sqlite" and _fts_query(query)
    if fts:
        index_papers(conn, progress)
        ids = [
            row[0]
            for row in conn.exec_driver_sql(
                "SELECT rowid FROM paper_fts WHERE paper_fts MATCH ? ORDER BY rank LIMIT ?",
                (fts, FTS_CANDIDATES),
            ).all()
        ]
        rows = conn.execute(
            sa.select(
                col(Paper.id), col(Paper.title), col(Paper.abstract), col(Paper.times_seen)
            ).where(col(Paper.id).in_(ids))
        ).all()
        papers = [PlainPaper(r.id, r.title, r.abstract, r.times_seen) for r in rows]
    else:
        papers = _newest(conn, WHOLE_STORE_LIMIT)
    return search(query, papers, store_stats(conn), limit=limit)
