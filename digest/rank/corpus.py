"""The store's term statistics, what BM25 weighs every term by: read from the stored papers
(all of them, or a fixed sample of a large store) for the run, previews and searches alike."""

from __future__ import annotations

from sqlalchemy.engine import Connection

from digest.rank.types import CorpusStats
from digest.store import papers

STATS_SAMPLE = 20_000  # papers whose term frequencies stand for a larger store


def store_stats(conn: Connection, sample: int = STATS_SAMPLE) -> CorpusStats:
    """Term statistics of the whole store: every paper, or a uniform sample of ``sample``.

    BM25 needs only each term's share of documents, which a sample of this size estimates
    within a few percent for every term common enough to matter; rare terms stay rare. The
    sample is seeded by the store's size, so the same store always ranks the same way.
    """
    return CorpusStats.from_texts(papers.stats_sample(conn, sample))
