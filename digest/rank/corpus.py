"""The store's term statistics, what BM25 weighs every term by: read from the stored papers
(all of them, or a fixed sample of a large store) for the run, previews and searches alike."""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce
from operator import add

from sqlalchemy.engine import Connection

from digest import forks
from digest.rank.types import CorpusStats, TermCounts
from digest.store import papers

STATS_SAMPLE = 20_000  # papers whose term frequencies stand for a larger store
PARALLEL_FROM = 5_000  # papers from which a run counts them in processes of their own
MAX_PROCESSES = 2


def store_stats(
    conn: Connection, sample: int = STATS_SAMPLE, *, processes: int | None = 1
) -> CorpusStats:
    """Term statistics of the whole store: every paper, or a uniform sample of ``sample``.

    BM25 needs only each term's share of documents, which a sample of this size estimates
    within a few percent for every term common enough to matter; rare terms stay rare. The
    sample is seeded by the store's size, so the same store always ranks the same way.

    ``processes``: how many forked processes count the sample (``None``: by its size). A
    run counts in processes: besides sharing the cores, the analysis of 20,000 papers leaves
    its garbage in them, not in the process that goes on to rank (about 90 MB less there,
    and so in every ranking worker forked from it). The counts add up to the same figures.
    """
    texts = papers.stats_sample(conn, sample)
    if processes is None:
        processes = forks.processes_for(len(texts), threshold=PARALLEL_FROM, cap=MAX_PROCESSES)
    if processes <= 1:
        return CorpusStats.from_texts(texts)
    return reduce(add, forks.fork_map(_counts, texts, processes)).stats()


def _counts(texts: Sequence[tuple[str, str]]) -> TermCounts:
    return TermCounts.of(texts)
