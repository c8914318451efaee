"""A reader's own model, learned from their votes, on top of their interests.

Readers who said "more like this" or "not for me" about papers they were sent get their
candidates (a deeper list than they are sent, so that the model can promote) re-ranked
and cut by a small Rocchio model over tf-idf vectors of the papers:

- a paper's vector: its terms (``digest.rank.text``, title words counted twice, no
  stopwords), each weighted by ``1 + log tf`` times the store-wide idf, unit length;
- the reader's direction: the mean vector of the papers they liked minus
  ``DISLIKE_WEIGHT`` times the mean of those they did not (Rocchio's beta and gamma);
- a candidate's lean: the cosine of its vector with that direction.

The new score is the interests' score, relative to the reader's best candidate, plus
``LEAN_WEIGHT`` times the lean. What is learned from the votes, each voted paper's lean
worked out against a model of the other votes (leave one out):

- the cut-off: the lean that best separates the liked from the disliked (the fewest voted
  papers on the wrong side, the lowest such lean on ties), but no higher than the lean
  ``CUT_SHARE`` of the disliked papers fall under (voted papers were chosen by the
  interests and lean more than new ones). Candidates leaning below it are not sent,
  except the ``MIN_KEPT`` best. Without both kinds of votes there is no such cut; with
  dislikes only, candidates nearer a disliked paper than ``DISLIKE_NEAR`` are cut;
- with at least ``JOIN_VOTES`` likes, papers no interest matches join from the lean of
  the least leaning liked paper up (above every disliked one and ``JOIN_FLOOR``), scored
  by their lean alone: this is how feedback finds what the interests' words miss.

Items kept for a liked paper (a positive lean, and that paper nearer than
``LIKED_NEAR``) name it in ``Ranked.because``: "because you liked …". The constants were
chosen on the simulated readers of ``tests/test_feedback_quality.py``.

A reader without votes never reaches this module: their list is exactly what the
interests alone give.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import repeat
from operator import itemgetter, mul

from digest import forks
from digest.rank.match import STOPWORDS, TermStats
from digest.rank.text import DEFAULT, Analyzer
from digest.rank.types import PaperText, Profile, Ranked

__all__ = [
    "DEPTH",
    "Postings",
    "ReaderModel",
    "Vectors",
    "Vote",
    "deeper",
    "learn",
    "rerank",
    "rerank_readers",
]

DEPTH = 3  # candidates looked at per item sent, for readers who voted
MAX_DEPTH = 1000  # the most candidates taken for one reader
LEAN_WEIGHT = 0.6  # how far the lean moves a paper, against a relative interest score of 1
DISLIKE_WEIGHT = 0.75  # Rocchio's gamma over beta
DISLIKE_NEAR = 0.35  # with dislikes only: closer than this to them is not sent
LIKED_NEAR = 0.05  # a liked paper at least this close (cosine) is named as the reason
TITLE_REPEAT = 2  # a title word counts as much as two abstract words
JOIN_VOTES = 3  # likes needed before papers no interest matches are sent
JOIN_FLOOR = 0.06  # and never from a lean below this
JOIN_TERMS = 50  # papers that could join are looked for by the reader's strongest terms
JOIN_NEAR = 0.5  # those terms alone lean them this share of the way (then the whole lean decides)
CUT_SHARE = 0.75  # the cut lies no higher than this share of the disliked papers' leans
MIN_KEPT = 3  # the cut-off leaves at least this many of the best candidates
PARALLEL_VOTERS = 300  # from this many voters, their models are worked out in processes
MAX_PROCESSES = 4

Vector = dict[str, float]
_LOG_TF = [0.0] + [1.0 + math.log(tf) for tf in range(1, 64)]  # 1 + log tf, looked up


@dataclass(frozen=True, slots=True)
class Vote:
    """One vote of a reader: the paper, and whether they liked it."""

    paper: PaperText
    up: bool


@dataclass(frozen=True)
class ReaderModel:
    """What a reader's votes teach: a direction, a threshold, the liked papers to name."""

    direction: Vector
    threshold: float | None  # leans below it are not sent (None: no cut)
    join: float | None  # a paper no interest matches is sent from this lean up (None: never)
    near_dislike: tuple[Vector, ...]  # with dislikes only: cut what is this near to them
    liked: tuple[tuple[str, Vector], ...]  # (title, vector) of each liked paper


class Vectors:
    """Paper vectors, each built once however many readers' candidates hold the paper."""

    def __init__(self, stats: TermStats, analyzer: Analyzer = DEFAULT) -> None:
        self.stats = stats
        self.analyzer = analyzer
        # A term's idf, or None for the terms a vector leaves out (stopwords, numbers).
        self._weights: dict[str, float | None] = {}
        self._made: dict[int, Vector] = {}

    def idf(self, term: str) -> float:
        """The store-wide inverse document frequency of a term (BM25's)."""
        n, df = self.stats.documents, self.stats.doc_freq(term)
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def of_text(self, title: str, abstract: str) -> Vector:
        """The unit tf-idf vector of a title and abstract."""
        counts = Counter(self.analyzer(abstract))
        for term in self.analyzer(title):
            counts[term] += TITLE_REPEAT
        weights = self._weights
        for term in [term for term in counts if term not in weights]:
            left_out = term in STOPWORDS or term.isdigit()
            weights[term] = None if left_out else self.idf(term)
        log_tf = _LOG_TF
        top = max(counts.values(), default=0)
        while len(log_tf) <= top:
            log_tf.append(1.0 + math.log(len(log_tf)))
        vector = {
            term: log_tf[tf] * weight
            for term, tf in counts.items()
            if (weight := weights[term]) is not None
        }
        return _unit(vector)

    def of(self, paper: PaperText) -> Vector:
        """A paper's vector (remembered by paper id)."""
        vector = self._made.get(paper.id)
        if vector is None:
            vector = self._made[paper.id] = self.of_text(paper.title, paper.abstract)
        return vector


def _unit(vector: Vector) -> Vector:
    norm = math.sqrt(sum(map(mul, vector.values(), vector.values())))
    return {t: w / norm for t, w in vector.items()} if norm else {}


def dot(a: Vector, b: Vector) -> float:
    """The dot product of two sparse vectors (the cosine of unit ones)."""
    if len(a) > len(b):
        a, b = b, a
    products: Iterable[float] = map(mul, a.values(), map(b.get, a, repeat(0.0)))
    return sum(products)


def _sum(vectors: Sequence[Vector]) -> Vector:
    total: Vector = {}
    for vector in vectors:
        for term, weight in vector.items():
            total[term] = total.get(term, 0.0) + weight
    return total


def _direction(ups: Vector, n_up: int, downs: Vector, n_down: int) -> Vector:
    """The mean liked vector minus ``DISLIKE_WEIGHT`` times the mean disliked one, from
    their sums."""
    direction = {t: w / n_up for t, w in ups.items()} if n_up else {}
    for term, weight in downs.items():
        direction[term] = direction.get(term, 0.0) - DISLIKE_WEIGHT * (weight / n_down)
    return direction


def _leans(
    liked: Sequence[Vector], disliked: Sequence[Vector], ups: Vector, downs: Vector
) -> list[tuple[float, bool]]:
    """Each voted paper's lean under a model of the other votes, and whether it was liked,
    lowest first (``ups`` and ``downs``: the sums of the liked and the disliked vectors).

    Leaving one out subtracts its own vector from its kind's sum, so each lean is two dot
    products with the sums rather than a model rebuilt per vote.
    """
    n_up, n_down = len(liked), len(disliked)
    leans: list[tuple[float, bool]] = []
    for vector in liked:
        own = dot(vector, vector)
        lean = (dot(vector, ups) - own) / (n_up - 1) if n_up > 1 else 0.0
        if n_down:
            lean -= DISLIKE_WEIGHT * dot(vector, downs) / n_down
        leans.append((lean, True))
    for vector in disliked:
        own = dot(vector, vector)
        lean = dot(vector, ups) / n_up if n_up else 0.0
        if n_down > 1:
            lean -= DISLIKE_WEIGHT * (dot(vector, downs) - own) / (n_down - 1)
        leans.append((lean, False))
    leans.sort()
    return leans


def _join(leans: list[tuple[float, bool]]) -> float | None:
    """The lean from which a paper no interest matches is sent: that of the least leaning
    liked paper, above every disliked one and ``JOIN_FLOOR`` (None with fewer than
    ``JOIN_VOTES`` likes)."""
    liked = [lean for lean, up in leans if up]
    if len(liked) < JOIN_VOTES:
        return None
    return max([liked[0], JOIN_FLOOR, *(lean + 1e-9 for lean, up in leans if not up)])


def _threshold(leans: list[tuple[float, bool]]) -> float | None:
    """The lean that best separates the liked papers from the disliked (None unless there
    are both kinds, or when keeping every voted paper is as good as any cut)."""
    if all(up for _, up in leans) or not any(up for _, up in leans):
        return None
    # Cutting below leans[k] keeps leans[k:]: wrong are the liked below it, the disliked above.
    wrong = best_wrong = sum(1 for _, up in leans if not up)
    best_k = 0
    for k in range(1, len(leans) + 1):
        wrong += 1 if leans[k - 1][1] else -1
        if wrong < best_wrong:
            best_wrong, best_k = wrong, k
    if best_k == 0:
        return None  # keeping every voted paper is as good as any cut
    if best_k == len(leans):
        separating = leans[-1][0] + 1e-9
    else:
        separating = (leans[best_k - 1][0] + leans[best_k][0]) / 2
    # Voted papers were chosen by the interests and lean more than new ones do: the cut stays
    # at or below the lean most of the disliked papers fall under.
    disliked = [lean for lean, up in leans if not up]
    return min(separating, disliked[min(int(len(disliked) * CUT_SHARE), len(disliked) - 1)])


def learn(votes: Iterable[Vote], vectors: Vectors) -> ReaderModel | None:
    """The model of a reader's votes; None for no votes."""
    liked: list[tuple[str, Vector]] = []
    disliked: list[Vector] = []
    for vote in votes:
        vector = vectors.of(vote.paper)
        if vote.up:
            liked.append((vote.paper.title, vector))
        else:
            disliked.append(vector)
    if not liked and not disliked:
        return None
    liked_vectors = [v for _, v in liked]
    ups, downs = _sum(liked_vectors), _sum(disliked)
    leans = _leans(liked_vectors, disliked, ups, downs)
    return ReaderModel(
        direction=_direction(ups, len(liked), downs, len(disliked)),
        threshold=_threshold(leans),
        join=_join(leans),
        near_dislike=tuple(disliked) if not liked else (),
        liked=tuple(liked),
    )


def deeper(profile: Profile) -> Profile:
    """The profile asking for the deeper candidate list the model chooses from."""
    return replace(profile, max_items=min(profile.max_items * DEPTH, MAX_DEPTH))


def rerank(
    model: ReaderModel,
    candidates: Sequence[Ranked],
    papers: Mapping[int, PaperText],
    vectors: Vectors,
    profile: Profile,
    others: Iterable[PaperText] = (),
) -> list[Ranked]:
    """A reader's candidates re-ranked by their model and cut by its threshold, with the
    ``others`` (papers no interest matched) that lean far enough their way, at most
    ``profile.max_items``; an item kept for a liked paper names it in ``because``."""
    return _items(_picks(model, candidates, papers, vectors, profile, others), candidates)


# What a reader is sent, compactly (it crosses from a worker process): per item, its place
# among the candidates, or -1 - paper id for a paper no interest matched; and ``because``.
Picks = list[tuple[int, str]]


def _picks(
    model: ReaderModel,
    candidates: Sequence[Ranked],
    papers: Mapping[int, PaperText],
    vectors: Vectors,
    profile: Profile,
    others: Iterable[PaperText],
) -> Picks:
    best = max((item.score for item in candidates), default=0.0) or 1.0
    threshold, near_dislike, direction = model.threshold, model.near_dislike, model.direction
    scored: list[tuple[float, int, bool, int, Vector, float]] = []
    for place, item in enumerate(candidates):
        vector = vectors.of(papers[item.paper_id])
        lean = dot(vector, direction)
        cut = (threshold is not None and lean < threshold) or any(
            dot(vector, near) >= DISLIKE_NEAR for near in near_dislike
        )
        scored.append((item.score / best + LEAN_WEIGHT * lean, -place, cut, place, vector, lean))
    if model.join is not None and profile.min_score <= 0.0:
        for paper in others:
            vector = vectors.of(paper)
            lean = dot(vector, direction)
            if lean >= model.join:
                tie = -len(scored) - paper.id
                scored.append((LEAN_WEIGHT * lean, tie, False, -1 - paper.id, vector, lean))
    scored.sort(key=lambda s: (s[0], s[1]), reverse=True)
    kept = [entry for n, entry in enumerate(scored) if not entry[2] or n < MIN_KEPT]
    return [
        (place, _because(model, vector, lean))
        for _, _, _, place, vector, lean in kept[: profile.max_items]
    ]


def _items(picks: Picks, candidates: Sequence[Ranked]) -> list[Ranked]:
    sent: list[Ranked] = []
    for place, because in picks:
        item = candidates[place] if place >= 0 else Ranked(-1 - place, 0.0, (), "")
        sent.append(replace(item, because=because) if because else item)
    return sent


def _because(model: ReaderModel, vector: Vector, lean: float) -> str:
    """The title of the liked paper nearest a paper that leans the reader's way, if near."""
    if not model.liked or lean <= 0:
        return ""
    closeness, title = max((dot(vector, v), t) for t, v in model.liked)
    return title if closeness >= LIKED_NEAR else ""


def rerank_readers(
    ranked: dict[int, list[Ranked]],
    profiles: Sequence[Profile],
    papers: Sequence[PaperText],
    votes: Mapping[int, Sequence[Vote]],
    stats: TermStats,
    analyzer: Analyzer = DEFAULT,
    candidates: Mapping[int, Collection[int]] | None = None,
    processes: int | None = None,
) -> dict[int, list[Ranked]]:
    """``ranked`` with the lists of the readers who voted re-ranked by their models (their
    lists are the deeper ones ``deeper`` asked for); every other list as it was.

    ``candidates[profile id]``: the papers that reader may be sent (default: all).
    ``processes``: how many worker processes share the voters (``None``: by their number).
    Only the voters are looked at; the day's papers are turned into vectors once, and all of
    them only when some voter may be sent papers no interest matched.
    """
    voters = [profile for profile in profiles if votes.get(profile.id)]
    if not voters:
        return ranked
    vectors = Vectors(stats, analyzer)
    if any(_may_join(profile, votes[profile.id]) for profile in voters):
        for paper in papers:  # before forking, so that every worker shares them
            vectors.of(paper)
    by_id = {paper.id: paper for paper in papers}

    def share(readers: Sequence[Profile]) -> list[tuple[int, Picks]]:
        models = [(reader, learn(votes[reader.id], vectors)) for reader in readers]
        wanted = [model.direction for reader, model in models if model and _joins(reader, model)]
        day = Postings(papers, vectors, _strongest(wanted)) if wanted else None
        chosen: list[tuple[int, Picks]] = []
        for reader, model in models:
            if model is None:
                continue
            mine = ranked.get(reader.id, [])
            others: list[PaperText] = []
            if day is not None and _joins(reader, model):
                assert model.join is not None
                taken = {item.paper_id for item in mine}
                allowed = None if candidates is None else candidates.get(reader.id)
                others = [
                    by_id[pid]
                    for pid in day.leaning(model.direction, model.join)
                    if pid not in taken and (allowed is None or pid in allowed)
                ]
            chosen.append((reader.id, _picks(model, mine, by_id, vectors, reader, others)))
        return chosen

    if processes is None:
        processes = forks.processes_for(len(voters), threshold=PARALLEL_VOTERS, cap=MAX_PROCESSES)
    for part in forks.fork_map(share, voters, processes):
        for ident, picks in part:
            ranked[ident] = _items(picks, ranked.get(ident, []))
    return ranked


def _may_join(profile: Profile, votes: Sequence[Vote]) -> bool:
    """Whether a reader's model could send papers no interest matched (before learning it)."""
    return profile.min_score <= 0.0 and sum(vote.up for vote in votes) >= JOIN_VOTES


def _joins(profile: Profile, model: ReaderModel) -> bool:
    return model.join is not None and profile.min_score <= 0.0


def _top_terms(direction: Vector) -> list[tuple[str, float]]:
    """The direction's ``JOIN_TERMS`` strongest terms that lean the reader's way."""
    strongest = heapq.nlargest(JOIN_TERMS, direction.items(), key=itemgetter(1))
    return [(term, weight) for term, weight in strongest if weight > 0]


def _strongest(directions: Iterable[Vector]) -> set[str]:
    return {term for direction in directions for term, _ in _top_terms(direction)}


class Postings:
    """The day's papers by term, to find the few that lean a reader's way without a dot
    product per paper and reader; ``terms``: the only terms looked up (default: all)."""

    def __init__(
        self, papers: Iterable[PaperText], vectors: Vectors, terms: set[str] | None = None
    ) -> None:
        self.postings: dict[str, list[tuple[int, float]]] = {}
        postings = self.postings
        for paper in papers:
            vector = vectors.of(paper)
            for term in vector if terms is None else vector.keys() & terms:
                if term in postings:
                    postings[term].append((paper.id, vector[term]))
                else:
                    postings[term] = [(paper.id, vector[term])]

    def leaning(self, direction: Vector, join: float) -> list[int]:
        """Papers that could join: their lean over the direction's ``JOIN_TERMS`` strongest
        terms reaches ``JOIN_NEAR`` of ``join`` (``rerank`` then takes their whole lean)."""
        partial: dict[int, float] = {}
        for term, weight in _top_terms(direction):
            for pid, value in self.postings.get(term, ()):
                partial[pid] = partial.get(pid, 0.0) + weight * value
        near = join * JOIN_NEAR
        return [pid for pid, lean in partial.items() if lean >= near]
