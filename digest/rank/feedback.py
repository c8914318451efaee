"""A reader's own model, learned from their votes, on top of their interests.

Readers who said "more like this" or "not for me" about papers they were sent get their
candidates (a deeper list than they are sent, so that the model can promote) re-ranked
and cut, and papers no interest matched brought in, by a small Rocchio model over tf-idf
vectors of the papers:

- a paper's vector: its terms (``digest.rank.text``, title words counted twice, no
  stopwords), each weighted by ``1 + log tf`` times the store-wide idf, unit length;
- the reader's direction: the mean vector of the papers they liked minus
  ``DISLIKE_WEIGHT`` times the mean of those they did not (Rocchio's beta and gamma);
- a paper's lean: the cosine of its vector with that direction.

Every paper of the day gets a lean, not only the interests' candidates: the day's vectors
are one sparse matrix (``Day``), built once per run and shared by every voter, and a
reader's leans are one product of it with their direction.

A candidate's new score is the interests' score, relative to the reader's best candidate,
plus ``LEAN_WEIGHT`` times its lean. What is learned from the votes, each voted paper's
lean worked out against a model of the other votes (leave one out):

- the cut-off: the lean that best separates the liked from the disliked (the fewest voted
  papers on the wrong side, the lowest such lean on ties), but no higher than the lean
  ``CUT_SHARE`` of the disliked papers fall under, nor than ``CUT_MOST`` (voted papers
  were chosen by the interests and lean more than new ones). Candidates scoring less than
  ``CUT_BELOW`` of the best and leaning below it are not sent, except the ``MIN_KEPT``
  best: the votes overrule only the interests' weak matches. Without both kinds of votes
  there is no such cut; with dislikes only, weak candidates nearer a disliked paper than
  ``DISLIKE_NEAR`` are cut;
- the join: with at least ``JOIN_VOTES`` like, a paper of the day no interest matched is
  sent when its cosine with the direction reaches ``JOIN_COSINE``, its lean is above every
  disliked paper's and stands out of the day's, ``JOIN_SPREAD`` standard deviations above
  their mean. It is scored by its lean alone, so below the interests' matches: this is
  how feedback finds what the interests' words miss.

Items kept for a liked paper (a positive lean, and that paper nearer than
``LIKED_NEAR``) name it in ``Ranked.because``: "because you liked …". The constants were
chosen on the simulated readers of ``tests/test_feedback_quality.py`` reading the earlier
half of the listings alone (voting on its first half, measured on its second), not on the
later listings their reported figures are measured on.

A reader without votes never reaches this module: their list is exactly what the
interests alone give.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import repeat
from operator import mul

import numpy as np
import numpy.typing as npt

from digest import forks
from digest.rank.match import STOPWORDS, TermStats
from digest.rank.text import DEFAULT, Analyzer
from digest.rank.types import PaperText, Profile, Ranked

__all__ = [
    "DEPTH",
    "Day",
    "ReaderModel",
    "Vectors",
    "Vote",
    "deeper",
    "learn",
    "rerank_readers",
]

DEPTH = 3  # candidates looked at per item sent, for readers who voted
MAX_DEPTH = 1000  # the most candidates taken for one reader
LEAN_WEIGHT = 0.6  # how far the lean moves a paper, against a relative interest score of 1
DISLIKE_WEIGHT = 0.75  # Rocchio's gamma over beta
DISLIKE_NEAR = 0.35  # with dislikes only: closer than this to them is not sent
LIKED_NEAR = 0.05  # a liked paper at least this close (cosine) is named as the reason
TITLE_REPEAT = 2  # a title word counts as much as two abstract words
JOIN_VOTES = 1  # likes needed before papers no interest matches are sent
JOIN_COSINE = 0.1  # a joining paper's cosine with the reader's direction is at least this
JOIN_SPREAD = 2.0  # and its lean this many standard deviations above the day's mean lean
CUT_SHARE = 0.75  # the cut lies no higher than this share of the disliked papers' leans
CUT_MOST = 0.01  # and never above this lean (new papers lean less than voted ones)
CUT_BELOW = 0.5  # the votes cut only candidates scoring less than this share of the best
MIN_KEPT = 3  # the cut-off leaves at least this many of the best candidates
DENSE_TERMS = 512  # the day's most frequent terms, multiplied as a dense block
DENSE_CELLS = 2_000_000  # and that block's most cells (papers x terms)
BATCH = 128  # readers whose leans on the day are one product
PARALLEL_VOTERS = 300  # from this many voters, their models are worked out in processes
MAX_PROCESSES = 4

Vector = dict[str, float]
Floats = npt.NDArray[np.float64]
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
    """Paper vectors, each built once however many readers voted on the paper."""

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


def _join(leans: list[tuple[float, bool]], direction: Vector) -> float | None:
    """The lean from which a paper no interest matched may be sent: a cosine of
    ``JOIN_COSINE`` with the direction, and above every disliked paper's lean (None with
    fewer than ``JOIN_VOTES`` likes)."""
    if sum(up for _, up in leans) < JOIN_VOTES:
        return None
    norm = math.sqrt(dot(direction, direction))
    return max([JOIN_COSINE * norm, *(lean + 1e-9 for lean, up in leans if not up)])


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
    return min(
        separating, disliked[min(int(len(disliked) * CUT_SHARE), len(disliked) - 1)], CUT_MOST
    )


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
    direction = _direction(ups, len(liked), downs, len(disliked))
    return ReaderModel(
        direction=direction,
        threshold=_threshold(leans),
        join=_join(leans, direction),
        near_dislike=tuple(disliked) if not liked else (),
        liked=tuple(liked),
    )


def deeper(profile: Profile) -> Profile:
    """The profile asking for the deeper candidate list the model chooses from."""
    return replace(profile, max_items=min(profile.max_items * DEPTH, MAX_DEPTH))


class Day:
    """The day's papers as one matrix of their vectors, so that the leans of many readers on
    all of them are one product with their directions.

    Rows are papers, columns the day's terms. The ``DENSE_TERMS`` most frequent terms (at
    most ``DENSE_CELLS`` cells) form a dense block, multiplied with a whole batch of
    directions at once; the other terms, each in a few papers, are kept by term (the papers
    that have it) and only a direction's own terms are looked up. The rows are kept too
    (compressed), for the cosines of a few papers with a few vectors.
    """

    def __init__(self, papers: Sequence[PaperText], vectors: Vectors) -> None:
        self.ids = [paper.id for paper in papers]
        self.row = {pid: n for n, pid in enumerate(self.ids)}
        self.columns: dict[str, int] = {}
        columns = self.columns
        indices: list[int] = []
        data: list[float] = []
        bounds = [0]
        for paper in papers:
            vector = vectors.of_text(paper.title, paper.abstract)
            for term, weight in vector.items():
                column = columns.get(term)
                if column is None:
                    column = columns[term] = len(columns)
                indices.append(column)
                data.append(weight)
            bounds.append(len(indices))
        n, width = len(papers), len(columns)
        self.indices = np.array(indices, dtype=np.int64)
        self.data = np.array(data, dtype=np.float64)
        self.bounds = np.array(bounds, dtype=np.int64)
        rows = np.repeat(np.arange(n), np.diff(self.bounds))
        # The dense block: the most frequent terms, by their place in it (-1: not in it).
        freq = np.bincount(self.indices, minlength=width)
        common = np.argsort(-freq, kind="stable")[: min(DENSE_TERMS, DENSE_CELLS // max(n, 1))]
        self.slot = np.full(width, -1, dtype=np.int64)
        self.slot[common] = np.arange(len(common))
        place = self.slot[self.indices]
        inside = place >= 0
        self.block = np.zeros((n, len(common)))
        self.block[rows[inside], place[inside]] = self.data[inside]
        # The other terms: for each, the rows that have it and their weights.
        order = np.argsort(self.indices[~inside], kind="stable")
        by_term = self.indices[~inside][order]
        self.holders = rows[~inside][order]
        self.weights = self.data[~inside][order]
        self.starts = np.searchsorted(by_term, np.arange(width + 1))

    def _terms(self, vector: Vector) -> tuple[npt.NDArray[np.int64], Floats]:
        """A vector's columns in the day and their weights (its other terms meet no paper)."""
        found = map(self.columns.get, vector, repeat(-1))
        columns = np.fromiter(found, np.int64, len(vector))
        weights = np.fromiter(vector.values(), np.float64, len(vector))
        known = columns >= 0
        return columns[known], weights[known]

    def leans(self, directions: Sequence[Vector]) -> Floats:
        """Every paper's lean on each direction: one row per direction, papers in row order."""
        n = len(self.ids)
        dense = np.zeros((self.block.shape[1], len(directions)))
        rest = np.zeros((len(directions), n))
        for k, direction in enumerate(directions):
            columns, weights = self._terms(direction)
            place = self.slot[columns]
            inside = place >= 0
            dense[place[inside], k] = weights[inside]
            columns, weights = columns[~inside], weights[~inside]
            starts = self.starts[columns]
            lengths = self.starts[columns + 1] - starts
            total = int(lengths.sum())
            if total:
                # Every posting of these terms, as positions in ``holders``.
                first = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
                at = first + np.arange(total)
                products = self.weights[at] * np.repeat(weights, lengths)
                rest[k] = np.bincount(self.holders[at], weights=products, minlength=n)
        leans: Floats = (self.block @ dense).T + rest
        return leans

    def cosines(self, rows: Sequence[int], vectors: Sequence[Vector]) -> Floats:
        """The cosine of each of ``rows`` (papers of the day) with each vector: rows x vectors."""
        out = np.zeros((len(rows), len(vectors)))
        if not rows or not vectors:
            return out
        spans = [(int(self.bounds[r]), int(self.bounds[r + 1])) for r in rows]
        picked = np.concatenate([np.arange(start, end) for start, end in spans])
        owner = np.repeat(np.arange(len(rows)), [end - start for start, end in spans])
        columns = self.indices[picked]
        for k, vector in enumerate(vectors):
            full = np.zeros(len(self.columns))
            terms, weights = self._terms(vector)
            full[terms] = weights
            out[:, k] = np.bincount(
                owner, weights=full[columns] * self.data[picked], minlength=len(rows)
            )
        return out


# A candidate or joining paper as ``_picks`` weighs it: (score, tie, cut, place, row).
Scored = tuple[float, int, bool, int, int]
# What a reader is sent, compactly (it crosses from a worker process): per item, its place
# among the candidates, or -1 - paper id for a paper no interest matched; and ``because``.
Picks = list[tuple[int, str]]


def _picks(
    model: ReaderModel,
    candidates: Sequence[Ranked],
    day: Day,
    profile: Profile,
    allowed: Collection[int] | None,
    leans: Floats,
) -> Picks:
    """A reader's candidates re-ranked by their model and cut by its threshold, with the
    papers no interest matched that lean far enough their way, at most ``max_items``
    (``leans``: every paper's lean on the reader's direction, in the day's row order)."""
    rows = [day.row[item.paper_id] for item in candidates]
    best = max((item.score for item in candidates), default=0.0) or 1.0
    threshold = model.threshold
    near: Floats | None = None
    if model.near_dislike:
        near = day.cosines(rows, model.near_dislike).max(axis=1, initial=-1.0)
    scored: list[Scored] = []
    for place, (item, row) in enumerate(zip(candidates, rows, strict=True)):
        lean, relative = float(leans[row]), item.score / best
        cut = relative < CUT_BELOW and (
            (threshold is not None and lean < threshold)
            or (near is not None and near[place] >= DISLIKE_NEAR)
        )
        scored.append((relative + LEAN_WEIGHT * lean, -place, cut, place, row))
    if model.join is not None and profile.min_score <= 0.0:
        taken = set(rows)
        # Stand out of the day: a threshold on the cosine alone lets in many papers for a
        # reader whose votes share common words, and few for one whose votes are narrow.
        join = max(model.join, float(leans.mean() + JOIN_SPREAD * leans.std()))
        for row in np.flatnonzero(leans >= join).tolist():
            pid = day.ids[row]
            if row not in taken and (allowed is None or pid in allowed):
                lean = float(leans[row])
                scored.append((LEAN_WEIGHT * lean, -len(candidates) - pid, False, -1 - pid, row))
    scored.sort(key=lambda s: (s[0], s[1]), reverse=True)
    kept = [entry for n, entry in enumerate(scored) if not entry[2] or n < MIN_KEPT]
    kept = kept[: profile.max_items]
    return list(
        zip([place for *_, place, _ in kept], _because(model, day, leans, kept), strict=True)
    )


def _because(model: ReaderModel, day: Day, leans: Floats, kept: Sequence[Scored]) -> list[str]:
    """For each kept item that leans the reader's way, the title of the liked paper nearest
    it, if near enough; else ""."""
    reasons = [""] * len(kept)
    if not model.liked:
        return reasons
    leaning = [n for n, entry in enumerate(kept) if leans[entry[-1]] > 0]
    cosines = day.cosines([kept[n][-1] for n in leaning], [v for _, v in model.liked])
    for n, row in zip(leaning, cosines, strict=True):
        # The nearest liked paper; on a tie, the later title (as ``max`` of pairs had it).
        best = max(range(len(model.liked)), key=lambda k: (row[k], model.liked[k][0]))
        if row[best] >= LIKED_NEAR:
            reasons[n] = model.liked[best][0]
    return reasons


def _items(picks: Picks, candidates: Sequence[Ranked]) -> list[Ranked]:
    sent: list[Ranked] = []
    for place, because in picks:
        item = candidates[place] if place >= 0 else Ranked(-1 - place, 0.0, (), "")
        sent.append(replace(item, because=because) if because else item)
    return sent


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
    lists are the deeper ones ``deeper`` asked for, drawn from ``papers``); every other list
    as it was.

    ``candidates[profile id]``: the papers that reader may be sent (default: all).
    ``processes``: how many worker processes share the voters (``None``: by their number).
    Only the voters are looked at; the day's papers are turned into vectors once, before
    the voters are shared out, so that every worker reads the same matrix.
    """
    voters = [profile for profile in profiles if votes.get(profile.id)]
    if not voters:
        return ranked
    vectors = Vectors(stats, analyzer)
    day = Day(papers, vectors)

    def share(readers: Sequence[Profile]) -> list[tuple[int, Picks]]:
        chosen: list[tuple[int, Picks]] = []
        for start in range(0, len(readers), BATCH):
            models = [(r, learn(votes[r.id], vectors)) for r in readers[start : start + BATCH]]
            learned = [(reader, model) for reader, model in models if model is not None]
            leans = day.leans([model.direction for _, model in learned])
            for (reader, model), lean in zip(learned, leans, strict=True):
                allowed = None if candidates is None else candidates.get(reader.id)
                mine = ranked.get(reader.id, [])
                chosen.append((reader.id, _picks(model, mine, day, reader, allowed, lean)))
        return chosen

    if processes is None:
        processes = forks.processes_for(len(voters), threshold=PARALLEL_VOTERS, cap=MAX_PROCESSES)
    for part in forks.fork_map(share, voters, processes):
        for ident, picks in part:
            ranked[ident] = _items(picks, ranked.get(ident, []))
    return ranked
