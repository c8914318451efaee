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
from operator import mul

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

Vector = dict[str, float]
_TF_MAX = 64
_LOG_TF = [0.0] + [1.0 + math.log(tf) for tf in range(1, _TF_MAX)]  # 1 + log tf, looked up


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
        self._idf: dict[str, float] = {}
        self._made: dict[int, Vector] = {}

    def idf(self, term: str) -> float:
        """The store-wide inverse document frequency of a term (BM25's)."""
        value = self._idf.get(term)
        if value is None:
            n, df = self.stats.documents, self.stats.doc_freq(term)
            value = self._idf[term] = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
        return value

    def of_text(self, title: str, abstract: str) -> Vector:
        """The unit tf-idf vector of a title and abstract."""
        counts = Counter(self._terms(abstract))
        for term in self._terms(title):
            counts[term] += TITLE_REPEAT
        idf = self._idf
        for term in [term for term in counts if term not in idf]:
            self.idf(term)
        vector = {term: _LOG_TF[tf] * idf[term] for term, tf in counts.items() if tf < _TF_MAX}
        vector.update(
            (term, (1.0 + math.log(tf)) * idf[term]) for term, tf in counts.items() if tf >= _TF_MAX
        )
        return _unit(vector)

    def of(self, paper: PaperText) -> Vector:
        """A paper's vector (remembered by paper id)."""
        vector = self._made.get(paper.id)
        if vector is None:
            vector = self._made[paper.id] = self.of_text(paper.title, paper.abstract)
        return vector

    def _terms(self, text: str) -> list[str]:
        return [t for t in self.analyzer(text) if t not in STOPWORDS and not t.isdigit()]


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


def _mean(vectors: Sequence[Vector]) -> Vector:
    return {t: w / len(vectors) for t, w in _sum(vectors).items()} if vectors else {}


def _direction(liked: Sequence[Vector], disliked: Sequence[Vector]) -> Vector:
    direction = _mean(liked)
    for term, weight in _mean(disliked).items():
        direction[term] = direction.get(term, 0.0) - DISLIKE_WEIGHT * weight
    return direction


def _leans(liked: Sequence[Vector], disliked: Sequence[Vector]) -> list[tuple[float, bool]]:
    """Each voted paper's lean under a model of the other votes, and whether it was liked,
    lowest first.

    Leaving one out subtracts its own vector from its kind's sum, so each lean is two dot
    products with the sums rather than a model rebuilt per vote.
    """
    ups, downs = _sum(liked), _sum(disliked)
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
    leans = _leans(liked_vectors, disliked)
    return ReaderModel(
        direction=_direction(liked_vectors, disliked),
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
    best = max((item.score for item in candidates), default=0.0) or 1.0
    scored: list[tuple[float, int, bool, Ranked, Vector, float]] = []
    for place, item in enumerate(candidates):
        vector = vectors.of(papers[item.paper_id])
        lean = dot(vector, model.direction)
        cut = (model.threshold is not None and lean < model.threshold) or any(
            dot(vector, near) >= DISLIKE_NEAR for near in model.near_dislike
        )
        scored.append((item.score / best + LEAN_WEIGHT * lean, -place, cut, item, vector, lean))
    if model.join is not None and profile.min_score <= 0.0:
        for paper in others:
            vector = vectors.of(paper)
            lean = dot(vector, model.direction)
            if lean >= model.join:
                item = Ranked(paper.id, 0.0, (), "")
                scored.append(
                    (LEAN_WEIGHT * lean, -len(scored) - paper.id, False, item, vector, lean)
                )
    scored.sort(key=lambda s: (s[0], s[1]), reverse=True)
    kept = [entry for n, entry in enumerate(scored) if not entry[2] or n < MIN_KEPT]
    sent: list[Ranked] = []
    for _, _, _, item, vector, lean in kept[: profile.max_items]:
        because = _because(model, vector, lean)
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
) -> dict[int, list[Ranked]]:
    """``ranked`` with the lists of the readers who voted re-ranked by their models (their
    lists are the deeper ones ``deeper`` asked for); every other list as it was.

    ``candidates[profile id]``: the papers that reader may be sent (default: all).
    """
    vectors = Vectors(stats, analyzer)
    by_id: dict[int, PaperText] = {}
    day: Postings | None = None
    for profile in profiles:
        model = learn(votes.get(profile.id, ()), vectors)
        if model is None:
            continue
        if not by_id:
            by_id = {paper.id: paper for paper in papers}
        mine = ranked.get(profile.id, [])
        others: list[PaperText] = []
        if model.join is not None and profile.min_score <= 0.0:
            if day is None:
                day = Postings(papers, vectors)
            taken = {item.paper_id for item in mine}
            allowed = None if candidates is None else candidates.get(profile.id)
            others = [
                by_id[pid]
                for pid in day.leaning(model.direction, model.join)
                if pid not in taken and (allowed is None or pid in allowed)
            ]
        ranked[profile.id] = rerank(model, mine, by_id, vectors, profile, others)
    return ranked


class Postings:
    """The day's papers by term, to find the few that lean a reader's way without a dot
    product per paper and reader."""

    def __init__(self, papers: Iterable[PaperText], vectors: Vectors) -> None:
        self.postings: dict[str, list[tuple[int, float]]] = {}
        for paper in papers:
            for term, weight in vectors.of(paper).items():
                self.postings.setdefault(term, []).append((paper.id, weight))

    def leaning(self, direction: Vector, join: float) -> list[int]:
        """Papers that could join: their lean over the direction's ``JOIN_TERMS`` strongest
        terms reaches ``JOIN_NEAR`` of ``join`` (``rerank`` then takes their whole lean)."""
        strongest = heapq.nlargest(JOIN_TERMS, direction.items(), key=lambda item: item[1])
        partial: dict[int, float] = {}
        for term, weight in strongest:
            if weight <= 0:
                break
            for pid, value in self.postings.get(term, ()):
                partial[pid] = partial.get(pid, 0.0) + weight * value
        near = join * JOIN_NEAR
        return [pid for pid, lean in partial.items() if lean >= near]
