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
  were chosen by the interests and lean more than new ones). A candidate leaning below it
  is objected to, and the one cut-off (``digest.rank.cutoff.kept``) leaves it out if it is
  one of the interests' weak matches. Without both kinds of votes there is no such
  threshold; with dislikes only, candidates nearer a disliked paper than ``DISLIKE_NEAR``
  are objected to;
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
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import islice

import numpy as np
import numpy.typing as npt

from digest import forks
from digest.rank.cutoff import kept
from digest.rank.match import STOPWORDS, TermStats
from digest.rank.text import DEFAULT, Analyzer
from digest.rank.types import PaperText, Profile, Ranked

__all__ = [
    "DEPTH",
    "Day",
    "DayVectors",
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
DENSE_TERMS = 512  # the day's most frequent terms, multiplied as a dense block
DENSE_CELLS = 2_000_000  # and that block's most cells (papers x terms)
BATCH = 128  # readers whose leans on the day are one product
PARALLEL_VOTERS = 300  # from this many voters, their models are worked out in processes
MAX_PROCESSES = 4

Ids = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Vector:
    """A sparse vector over the terms a ``Vectors`` numbered: ids ascending, their weights."""

    terms: Ids
    weights: Floats


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
    """Paper vectors over numbered terms, each paper's built once however many readers voted
    on it, and many papers' at once (their words counted and weighed in arrays)."""

    def __init__(self, stats: TermStats, analyzer: Analyzer = DEFAULT) -> None:
        self.stats = stats
        self.analyzer = analyzer
        # Terms numbered as they are first met: a missing term gets the next number.
        self.ids: defaultdict[str, int] = defaultdict(int)
        self.ids.default_factory = self.ids.__len__
        self._idf = np.zeros(0)  # by term id; 0 for terms a vector leaves out
        self._made: dict[int, Vector] = {}

    @property
    def width(self) -> int:
        """How many terms are numbered so far."""
        return len(self.ids)

    def idf(self, term: str) -> float:
        """The store-wide inverse document frequency of a term (BM25's)."""
        n, df = self.stats.documents, self.stats.doc_freq(term)
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def _number(self, tokens: list[str]) -> Ids:
        known = len(self._idf)
        numbered = np.fromiter(map(self.ids.__getitem__, tokens), np.int64, len(tokens))
        if len(self.ids) > known:
            added = [
                0.0 if term in STOPWORDS or term.isdigit() else self.idf(term)
                for term in islice(self.ids, known, None)
            ]
            self._idf = np.concatenate([self._idf, np.array(added, dtype=np.float64)])
        return numbered

    def rows(self, texts: Sequence[tuple[str, str]]) -> tuple[Ids, Ids, Floats]:
        """The unit tf-idf vectors of many (title, abstract): (row, term id, weight), by row
        and then term."""
        analyzer = self.analyzer
        tokens: list[str] = []
        sizes: list[int] = []
        for title, abstract in texts:
            in_abstract, in_title = analyzer(abstract), analyzer(title)
            tokens += in_abstract
            tokens += in_title
            sizes += (len(in_abstract), len(in_title))
        terms = self._number(tokens)
        n, width = len(texts), max(self.width, 1)
        counts = np.repeat(np.tile(np.array([1.0, TITLE_REPEAT]), n), sizes)
        owners = np.repeat(np.repeat(np.arange(n, dtype=np.int64), 2), sizes)
        keys, inverse = np.unique(owners * width + terms, return_inverse=True)
        tf = np.bincount(inverse, weights=counts)
        row, term = keys // width, keys % width
        weight = (1.0 + np.log(tf)) * self._idf[term]
        kept = weight > 0
        row, term, weight = row[kept], term[kept], weight[kept]
        norms = np.sqrt(np.bincount(row, weights=weight * weight, minlength=n))
        return row, term, weight / norms[row]

    def make(self, papers: Iterable[PaperText]) -> None:
        """Build the vectors of the papers not built yet, all at once."""
        wanted = list({p.id: p for p in papers if p.id not in self._made}.values())
        if not wanted:
            return
        row, term, weight = self.rows([(p.title, p.abstract) for p in wanted])
        bounds = np.searchsorted(row, np.arange(len(wanted) + 1))
        for n, paper in enumerate(wanted):
            start, end = bounds[n], bounds[n + 1]
            self._made[paper.id] = Vector(term[start:end], weight[start:end])

    def of(self, paper: PaperText) -> Vector:
        """A paper's vector (remembered by paper id)."""
        if paper.id not in self._made:
            self.make([paper])
        return self._made[paper.id]


def dot(a: Vector, b: Vector) -> float:
    """The dot product of two sparse vectors (the cosine of unit ones)."""
    _, in_a, in_b = np.intersect1d(a.terms, b.terms, assume_unique=True, return_indices=True)
    return float(a.weights[in_a] @ b.weights[in_b])


def _dense(vectors: Sequence[Vector], width: int) -> Floats:
    total = np.zeros(width)
    for vector in vectors:
        total[vector.terms] += vector.weights
    return total


def _leans(
    liked: Sequence[Vector], disliked: Sequence[Vector], ups: Floats, downs: Floats
) -> list[tuple[float, bool]]:
    """Each voted paper's lean under a model of the other votes, and whether it was liked,
    lowest first (``ups`` and ``downs``: the sums of the liked and the disliked vectors).

    Leaving one out subtracts its own vector from its kind's sum, so each lean is two dot
    products with the sums rather than a model rebuilt per vote.
    """
    n_up, n_down = len(liked), len(disliked)
    leans: list[tuple[float, bool]] = []
    for vector in liked:
        own = float(vector.weights @ vector.weights)
        lean = (float(vector.weights @ ups[vector.terms]) - own) / (n_up - 1) if n_up > 1 else 0.0
        if n_down:
            lean -= DISLIKE_WEIGHT * float(vector.weights @ downs[vector.terms]) / n_down
        leans.append((lean, True))
    for vector in disliked:
        own = float(vector.weights @ vector.weights)
        lean = float(vector.weights @ ups[vector.terms]) / n_up if n_up else 0.0
        if n_down > 1:
            lean -= (
                DISLIKE_WEIGHT * (float(vector.weights @ downs[vector.terms]) - own) / (n_down - 1)
            )
        leans.append((lean, False))
    leans.sort()
    return leans


def _join(leans: list[tuple[float, bool]], norm: float) -> float | None:
    """The lean from which a paper no interest matched may be sent: a cosine of
    ``JOIN_COSINE`` with the direction (of length ``norm``), and above every disliked
    paper's lean (None with fewer than ``JOIN_VOTES`` likes)."""
    if sum(up for _, up in leans) < JOIN_VOTES:
        return None
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
    votes = list(votes)
    vectors.make(vote.paper for vote in votes)
    liked = [(vote.paper.title, vectors.of(vote.paper)) for vote in votes if vote.up]
    disliked = [vectors.of(vote.paper) for vote in votes if not vote.up]
    if not liked and not disliked:
        return None
    liked_vectors = [v for _, v in liked]
    ups, downs = _dense(liked_vectors, vectors.width), _dense(disliked, vectors.width)
    leans = _leans(liked_vectors, disliked, ups, downs)
    # The mean liked vector minus ``DISLIKE_WEIGHT`` times the mean disliked one.
    dense = ups / max(len(liked), 1) - DISLIKE_WEIGHT * downs / max(len(disliked), 1)
    terms = np.flatnonzero(dense)
    return ReaderModel(
        direction=Vector(terms, dense[terms]),
        threshold=_threshold(leans),
        join=_join(leans, float(np.sqrt(dense[terms] @ dense[terms]))),
        near_dislike=tuple(disliked) if not liked else (),
        liked=tuple(liked),
    )


def deeper(profile: Profile) -> Profile:
    """The profile asking for the deeper candidate list the model chooses from."""
    return replace(profile, max_items=min(profile.max_items * DEPTH, MAX_DEPTH))


class Day:
    """The day's papers as one matrix of their vectors, so that the leans of many readers on
    all of them are one product with their directions.

    Rows are papers, columns the terms numbered so far. The ``DENSE_TERMS`` most frequent
    terms of the day (at most ``DENSE_CELLS`` cells) form a dense block, multiplied with a
    whole batch of directions at once; the other terms, each in a few papers, are kept by
    term (the papers that have it) and only a direction's own terms are looked up. The rows
    are kept too (compressed), for the cosines of a few papers with a few vectors.
    """

    def __init__(self, papers: Sequence[PaperText], vectors: Vectors) -> None:
        self.ids = [paper.id for paper in papers]
        self.row = {pid: n for n, pid in enumerate(self.ids)}
        rows, self.indices, self.data = vectors.rows([(p.title, p.abstract) for p in papers])
        n = len(papers)
        self.width = width = vectors.width  # terms numbered later meet no paper of the day
        self.bounds = np.searchsorted(rows, np.arange(n + 1))
        # The dense block: the most frequent terms, by their place in it (-1: not in it).
        freq = np.bincount(self.indices, minlength=width)
        common = np.argsort(-freq, kind="stable")[: min(DENSE_TERMS, DENSE_CELLS // max(n, 1))]
        common = common[freq[common] > 0]
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

    def _known(self, vector: Vector) -> Vector:
        known = vector.terms < self.width
        return vector if known.all() else Vector(vector.terms[known], vector.weights[known])

    def leans(self, directions: Sequence[Vector]) -> Floats:
        """Every paper's lean on each direction: one row per direction, papers in row order."""
        n = len(self.ids)
        dense = np.zeros((self.block.shape[1], len(directions)))
        rest = np.zeros((len(directions), n))
        for k, direction in enumerate(directions):
            direction = self._known(direction)
            place = self.slot[direction.terms]
            inside = place >= 0
            dense[place[inside], k] = direction.weights[inside]
            terms, weights = direction.terms[~inside], direction.weights[~inside]
            starts = self.starts[terms]
            lengths = self.starts[terms + 1] - starts
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
            full = _dense([self._known(vector)], self.width)
            products = full[columns] * self.data[picked]
            out[:, k] = np.bincount(owner, weights=products, minlength=len(rows))
        return out


# A candidate or joining paper as ``_picks`` weighs it: (score, tie, objection, place, row);
# the objection as ``cutoff.kept`` takes it.
Scored = tuple[float, int, float | None, int, int]
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
    """A reader's candidates re-ranked by their model, with the papers no interest matched
    that lean far enough their way, and cut where ``cutoff.kept`` says (``leans``: every
    paper's lean on the reader's direction, in the day's row order)."""
    rows = [day.row[item.paper_id] for item in candidates]
    best = max((item.score for item in candidates), default=0.0) or 1.0
    threshold = model.threshold
    near: Floats | None = None
    if model.near_dislike:
        near = day.cosines(rows, model.near_dislike).max(axis=1, initial=-1.0)
    scored: list[Scored] = []
    for place, (item, row) in enumerate(zip(candidates, rows, strict=True)):
        lean, relative = float(leans[row]), item.score / best
        objects = (threshold is not None and lean < threshold) or (
            near is not None and near[place] >= DISLIKE_NEAR
        )
        scored.append(
            (relative + LEAN_WEIGHT * lean, -place, relative if objects else None, place, row)
        )
    if model.join is not None and profile.min_score <= 0.0 and len(leans):
        scored += _joining(model, day, leans, set(rows), allowed, len(candidates))
    scored.sort(key=lambda s: (s[0], s[1]), reverse=True)
    places = kept(
        [entry[0] for entry in scored], profile.max_items, objections=[e[2] for e in scored]
    )
    chosen = [scored[n] for n in places]
    return list(
        zip([place for *_, place, _ in chosen], _because(model, day, leans, chosen), strict=True)
    )


def _joining(
    model: ReaderModel,
    day: Day,
    leans: Floats,
    taken: set[int],
    allowed: Collection[int] | None,
    candidates: int,
) -> list[Scored]:
    """The papers of the day no interest matched that lean far enough the reader's way."""
    assert model.join is not None
    # Stand out of the day: a threshold on the cosine alone lets in many papers for a
    # reader whose votes share common words, and few for one whose votes are narrow.
    join = max(model.join, float(leans.mean() + JOIN_SPREAD * leans.std()))
    out: list[Scored] = []
    for row in np.flatnonzero((leans >= join) & (leans > 0.0)).tolist():
        pid = day.ids[row]
        if row not in taken and (allowed is None or pid in allowed):
            out.append((LEAN_WEIGHT * float(leans[row]), -candidates - pid, None, -1 - pid, row))
    return out


def _because(model: ReaderModel, day: Day, leans: Floats, kept: Sequence[Scored]) -> list[str]:
    """For each kept item that leans the reader's way, the title of the liked paper nearest
    it, if near enough; else ""."""
    reasons = [""] * len(kept)
    if not model.liked:
        return reasons
    leaning = [n for n, entry in enumerate(kept) if leans[entry[-1]] > 0]
    cosines = day.cosines([kept[n][-1] for n in leaning], [v for _, v in model.liked])
    for n, row in zip(leaning, cosines, strict=True):
        # The nearest liked paper; on a tie, the greater title (whatever the votes' order).
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


@dataclass(frozen=True)
class DayVectors:
    """The day's papers as vectors (``Day``) and the numbering of terms they share with the
    voted papers' vectors: built once for a day however many batches of voters it serves."""

    vectors: Vectors
    day: Day

    @classmethod
    def of(
        cls, papers: Sequence[PaperText], stats: TermStats, analyzer: Analyzer = DEFAULT
    ) -> DayVectors:
        """The vectors of ``papers``."""
        vectors = Vectors(stats, analyzer)
        return cls(vectors, Day(papers, vectors))


def rerank_readers(
    ranked: dict[int, list[Ranked]],
    profiles: Sequence[Profile],
    papers: Sequence[PaperText],
    votes: Mapping[int, Sequence[Vote]],
    stats: TermStats,
    analyzer: Analyzer = DEFAULT,
    candidates: Mapping[int, Collection[int]] | None = None,
    processes: int | None = None,
    *,
    vectors: DayVectors | None = None,
) -> dict[int, list[Ranked]]:
    """``ranked`` with the lists of the readers who voted re-ranked by their models (their
    lists are the deeper ones ``deeper`` asked for, drawn from ``papers``); every other list
    as it was.

    ``candidates[profile id]``: the papers that reader may be sent (default: all).
    ``processes``: how many worker processes share the voters (``None``: by their number).
    Only the voters are looked at; the day's papers are turned into vectors once (or come
    as ``vectors``, made by ``DayVectors.of`` from the same ``papers``), before the voters
    are shared out, so that every worker reads the same matrix.
    """
    voters = [profile for profile in profiles if votes.get(profile.id)]
    if not voters:
        return ranked
    shared = vectors or DayVectors.of(papers, stats, analyzer)
    day = shared.day

    def share(readers: Sequence[Profile]) -> list[tuple[int, Picks]]:
        chosen: list[tuple[int, Picks]] = []
        made = shared.vectors
        made.make(vote.paper for reader in readers for vote in votes[reader.id])
        for start in range(0, len(readers), BATCH):
            models = [(r, learn(votes[r.id], made)) for r in readers[start : start + BATCH]]
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
