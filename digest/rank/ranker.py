"""Ranking papers for every reader, percolator style: the one way papers get ranked.

The day's work is inverted: the distinct interests of all readers are compiled
once into an ``InterestIndex`` (``digest.rank.index``), each paper is analyzed
once and streamed past it, and every reader's list is drawn from the
per-interest matches (``digest.rank.topk``). Scores are BM25F-style (title
weighted above abstract) with document frequencies from the whole store, times
a small trending boost. A search is the same ranking for one made-up reader.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from digest.rank import reader_model
from digest.rank.cutoff import cut
from digest.rank.index import InterestIndex
from digest.rank.match import TermStats
from digest.rank.reader_model import Vote
from digest.rank.text import DEFAULT, Analyzer
from digest.rank.types import PaperText, Profile, Ranked
from digest.rank.workers import processes_for

__all__ = ["Ranking", "rank", "search"]


def rank(
    papers: Iterable[PaperText],
    profiles: Iterable[Profile],
    stats: TermStats,
    *,
    candidates: Mapping[int, Collection[int]] | None = None,
    processes: int | None = None,
    analyzer: Analyzer = DEFAULT,
    votes: Mapping[int, Sequence[Vote]] | None = None,
) -> dict[int, list[Ranked]]:
    """Every profile's best papers, by profile id; ``candidates[profile id]`` limits which.

    Each list stops where the scores fall away (``digest.rank.cutoff``). A profile
    missing from ``candidates``, or whose candidates hold the whole day, may have any
    paper. ``processes``: how many worker processes match and fan out (``None``: by size).
    ``votes[profile id]``: that reader's feedback, which re-ranks and cuts a deeper list of
    their candidates (``digest.rank.reader_model``); readers without votes get what their
    interests alone give.
    """
    profiles = list(profiles)
    with Ranking(papers, profiles, stats, processes=processes, analyzer=analyzer) as day:
        return day.rank(profiles, candidates=candidates, votes=votes)


class Ranking:
    """One day's papers matched once against the interests of every reader to be ranked;
    the readers then ranked a batch at a time (``rank``), all batches sharing that work.

    What is kept between batches is per paper or per distinct interest (the compiled
    interests, the matches, explanations and items, the worker processes, the day's
    vectors for the readers who voted), and, per reader, only which interests are theirs:
    a batch's lists are the caller's to drop. Close it (or use it in a ``with``) to stop
    the workers.
    """

    def __init__(
        self,
        papers: Iterable[PaperText],
        profiles: Iterable[Profile],
        stats: TermStats,
        *,
        processes: int | None = None,
        analyzer: Analyzer = DEFAULT,
    ) -> None:
        """Compile the interests of ``profiles`` (every reader any batch will hold; only
        their interests are read here) and match the day's ``papers`` against them."""
        self.papers = list(papers)
        self.stats, self.analyzer = stats, analyzer
        index = InterestIndex.build(profiles, stats, analyzer)
        if processes is None:
            processes = processes_for(len(self.papers) * len(index.profiles))
        self.matches = index.match(self.papers, processes)
        self._vectors: reader_model.DayVectors | None = None

    def rank(
        self,
        profiles: Sequence[Profile],
        *,
        candidates: Mapping[int, Collection[int]] | None = None,
        votes: Mapping[int, Sequence[Vote]] | None = None,
    ) -> dict[int, list[Ranked]]:
        """These profiles' best papers, by profile id, as ``rank`` gives them; each profile
        must be one the ranking was made with (its interests are the ones compiled then)."""
        voters = {p.id for p in profiles if votes and votes.get(p.id)}
        asked = [reader_model.deeper(p) if p.id in voters else p for p in profiles]
        ranked = self.matches.ranked_many(asked, candidates)
        for profile in profiles:
            if profile.id not in voters:  # a voter's model re-ranks the deeper list and cuts it
                items = ranked[profile.id]
                del items[
                    cut([item.score for item in items], profile.max_items, profile.min_score) :
                ]
        if voters:
            assert votes is not None
            if self._vectors is None:  # the day's papers as vectors, once for every batch
                self._vectors = reader_model.DayVectors.of(self.papers, self.stats, self.analyzer)
            ranked = reader_model.rerank_readers(
                ranked,
                profiles,
                self.papers,
                votes,
                self.stats,
                self.analyzer,
                candidates,
                vectors=self._vectors,
            )
            for profile in profiles:
                del ranked[profile.id][profile.max_items :]
        return ranked

    def close(self) -> None:
        """Stop the worker processes, if any."""
        self.matches.close()

    def __enter__(self) -> Ranking:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def search(
    query: str,
    papers: Iterable[PaperText],
    stats: TermStats,
    *,
    limit: int = 20,
    analyzer: Analyzer = DEFAULT,
) -> list[Ranked]:
    """Papers matching one expression of the interest language, best first.

    Raises ``InterestError`` for a malformed query (a reader's is skipped instead).
    """
    index = InterestIndex(stats, analyzer)
    index.profiles[0] = (index.add(query),)
    return _ranked(index, papers, [Profile(0, (query,), max_items=limit)], None, 1)[0]


def _ranked(
    index: InterestIndex,
    papers: Iterable[PaperText],
    profiles: list[Profile],
    candidates: Mapping[int, Collection[int]] | None,
    processes: int | None,
) -> dict[int, list[Ranked]]:
    papers = list(papers)
    if processes is None:
        processes = processes_for(len(papers) * len(profiles))
    with index.match(papers, processes) as matches:
        return matches.ranked_many(profiles, candidates)
