"""Matching papers to interests and ranking them for every subscriber, percolator style.

The day's work is inverted: the distinct interests of all subscribers are
compiled once (``digest.matching``) into an ``InterestIndex``. Interests of one
term, the commonest kind, are keyed by that term and scored straight from its
counts; the others are keyed by one *anchor* (the rarest term a match cannot do
without) and verified in full. Each new paper is analyzed once and streamed past
the index, which leaves every interest with its matches, best first. Scores are
BM25F-style (title weighted above abstract) with document frequencies from the
whole store, times a small trending boost.

Fan-out to subscribers: a subscriber's score for a paper is the sum over their
matching interests. Papers that match several of a subscriber's interests are
few and found with set intersections; every other paper scores what its one
interest gives it, so it can only make the top k if it is among the first k of
that interest's list. Merging those heads with the few summed papers gives the
exact top k. Subscribers with the same interests and limits share one answer, and
explanations (``InterestHit``) are built once per (interest, paper) and shared.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import repeat
from operator import add

from digest.analysis import DEFAULT, Analyzer
from digest.interests import InterestError, parse_interest
from digest.matching import FIELDS, Compiler, Doc, Matcher, TermLeaf, TermStats, saturate

__all__ = [
    "CorpusStats",
    "DayMatches",
    "InterestHit",
    "InterestIndex",
    "PaperText",
    "Profile",
    "Ranked",
    "TermStats",
    "rank_for",
    "rank_profiles",
    "search",
]

# A match in an interest's list: (score, -paper index, interest id). Papers are indexed in
# id order, so sorting these in reverse gives best first with ties to the lower paper id.
Entry = tuple[float, int, int]
_SEVERAL = -1  # the interest id of an entry summed over several interests


@dataclass(frozen=True)
class CorpusStats:
    """In-memory ``TermStats``: document count, mean field lengths and term document frequencies."""

    documents: int
    avg_title_len: float
    avg_abstract_len: float
    frequencies: Mapping[str, int] = field(default_factory=dict)

    def doc_freq(self, term: str) -> int:
        """Number of documents containing term."""
        return self.frequencies.get(term, 0)

    @classmethod
    def from_papers(
        cls, papers: Iterable[tuple[str, str]], analyzer: Analyzer = DEFAULT
    ) -> CorpusStats:
        """Statistics of (title, abstract) pairs, counted the way the matcher sees them."""
        counts: dict[str, int] = {}
        documents = title_len = abstract_len = 0
        for title, abstract in papers:
            title_pos, abstract_pos = analyzer.positions(title), analyzer.positions(abstract)
            documents += 1
            title_len += len(title_pos.terms)
            abstract_len += len(abstract_pos.terms)
            terms = set(title_pos.terms) | set(abstract_pos.terms)
            terms.update(joined for _, _, joined in title_pos.compounds)
            terms.update(joined for _, _, joined in abstract_pos.compounds)
            for term in terms:
                counts[term] = counts.get(term, 0) + 1
        n = max(documents, 1)
        return cls(documents, title_len / n, abstract_len / n, counts)


@dataclass(frozen=True, slots=True)
class PaperText:
    """A paper as the ranker sees it."""

    id: int
    title: str
    abstract: str
    times_seen: int = 1


@dataclass(frozen=True, slots=True)
class Profile:
    """A subscriber's interests and limits."""

    id: int
    interests: Sequence[str]
    max_items: int = 20
    min_score: float = 0.0


@dataclass(frozen=True, slots=True)
class InterestHit:
    """Why a paper matched one interest: words as written in the paper, and where."""

    interest: str
    score: float
    terms: tuple[str, ...]
    fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Ranked:
    """A paper chosen for someone, with its score and one hit per matching interest."""

    paper_id: int
    score: float
    hits: tuple[InterestHit, ...]


@contextmanager
def _no_collection() -> Iterator[None]:
    """Hold off the cycle collector while building millions of small acyclic objects.

    It would otherwise walk the growing heap again and again (a third of the run).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class InterestIndex:
    """The distinct interests of all subscribers, compiled once and keyed by anchor term."""

    def __init__(self, stats: TermStats, analyzer: Analyzer = DEFAULT) -> None:
        self.analyzer = analyzer
        self.texts: list[str] = []
        self.weights: list[float] = []
        self.profiles: dict[int, tuple[int, ...]] = {}  # profile id → its interest ids
        self.invalid: list[tuple[int, str, str]] = []  # (profile id, interest, error)
        self._compiler = Compiler(stats, analyzer)
        self._matchers: list[Matcher] = []
        self._ids: dict[str, int] = {}
        # One-term interests: term → (interest id, fields code, idf, weight); see ``_score_terms``.
        self._singles: dict[str, list[tuple[int, int, float, float]]] = {}
        self._terms: dict[str, list[int]] = {}
        self._prefixes: dict[str, list[int]] = {}

    @classmethod
    def build(
        cls, profiles: Iterable[Profile], stats: TermStats, analyzer: Analyzer = DEFAULT
    ) -> InterestIndex:
        """Index every profile's interests; malformed ones are skipped and listed in ``invalid``."""
        index = cls(stats, analyzer)
        seen: dict[tuple[str, ...], tuple[int, ...]] = {}  # many subscribers share interests
        for profile in profiles:
            texts = tuple(profile.interests)
            ids = seen.get(texts)
            if ids is None:
                errors = len(index.invalid)
                ids = index._add_all(profile.id, texts)
                if len(index.invalid) == errors:  # a faulty list is reported for each holder
                    seen[texts] = ids
            index.profiles[profile.id] = ids
        return index

    def _add_all(self, profile_id: int, texts: tuple[str, ...]) -> tuple[int, ...]:
        ids: list[int] = []
        for text in texts:
            try:
                qid = self.add(text)
            except InterestError as exc:
                self.invalid.append((profile_id, text, str(exc)))
                continue
            if qid not in ids:
                ids.append(qid)
        return tuple(ids)

    def add(self, text: str) -> int:
        """Index one interest (once, however many subscribers hold it); its id."""
        qid = self._ids.get(text)
        if qid is not None:
            return qid
        interest = parse_interest(text)
        qid = self._ids.get(interest.text)
        if qid is None:
            matcher, anchors = self._compiler.compile(interest.query)
            if anchors is None:  # the parser refuses these; never index what cannot anchor
                raise InterestError(text, "nothing to match", 1)
            qid = len(self.texts)
            self.texts.append(interest.text)
            self.weights.append(interest.weight)
            self._matchers.append(matcher)
            if isinstance(matcher, TermLeaf):
                code = {(0, 1): 0, (0,): 1, (1,): 2}[matcher.fields]
                entry = (qid, code, matcher.idf, interest.weight)
                self._singles.setdefault(matcher.term, []).append(entry)
            else:
                for kind, key in dict.fromkeys(anchors[1]):
                    table = self._terms if kind == "t" else self._prefixes
                    table.setdefault(key, []).append(qid)
            self._ids[interest.text] = qid
        self._ids[text] = qid
        return qid

    def match(self, papers: Iterable[PaperText]) -> DayMatches:
        """Stream the day's papers past the index once; every interest's matches, best first."""
        ordered = sorted(papers, key=lambda paper: paper.id)
        lists: dict[int, list[Entry]] = {}
        docs: list[Doc] = []
        document = self._compiler.document
        with _no_collection():
            for pidx, paper in enumerate(ordered):
                doc = document(paper.title, paper.abstract, paper.times_seen)
                docs.append(doc)
                terms = doc.fields[0].counts.keys() | doc.fields[1].counts.keys()
                self._score_terms(doc, -pidx, terms, lists)
                self._verify(doc, -pidx, terms, lists)
        for entries in lists.values():
            entries.sort(reverse=True)
        return DayMatches(self, ordered, docs, lists)

    def _score_terms(
        self, doc: Doc, neg: int, terms: set[str], lists: dict[int, list[Entry]]
    ) -> None:
        # One-term interests, scored from the counts exactly as TermLeaf.evaluate would.
        title, abstract = doc.fields
        boost = doc.boost
        singles = self._singles
        for term in singles.keys() & terms:
            tf = title.counts.get(term, 0)
            in_title = tf * title.factor if tf else 0.0
            tf = abstract.counts.get(term, 0)
            in_abstract = tf * abstract.factor if tf else 0.0
            both = (in_title + in_abstract, in_title, in_abstract)
            for qid, code, idf, weight in singles[term]:
                x = both[code]
                if x:
                    entry = (saturate(idf, x) * weight * boost, neg, qid)
                    if qid in lists:
                        lists[qid].append(entry)
                    else:
                        lists[qid] = [entry]

    def _verify(self, doc: Doc, neg: int, terms: set[str], lists: dict[int, list[Entry]]) -> None:
        anchored = self._terms
        found: set[int] = set()
        for term in anchored.keys() & terms:
            found.update(anchored[term])
        for prefix in doc.prefixed:
            ids = self._prefixes.get(prefix)
            if ids is not None:
                found.update(ids)
        matchers, weights, boost = self._matchers, self.weights, doc.boost
        for qid in found:
            score = matchers[qid].evaluate(doc, None)
            if score is not None:
                entry = (score * weights[qid] * boost, neg, qid)
                if qid in lists:
                    lists[qid].append(entry)
                else:
                    lists[qid] = [entry]


class DayMatches:
    """One day's matches per interest, and the subscribers' top papers drawn from them."""

    def __init__(
        self,
        index: InterestIndex,
        papers: list[PaperText],
        docs: list[Doc],
        lists: dict[int, list[Entry]],
    ) -> None:
        self.index = index
        self.papers = papers  # in id order: a paper's index is its place here
        self.docs = docs
        self.lists = lists  # interest id → its matches, best first
        self.ids = [paper.id for paper in papers]
        self._tables: dict[int, dict[int, float]] = {}
        self._heads: dict[tuple[int, int], list[int]] = {}
        self._hits: dict[tuple[int, int], InterestHit] = {}
        self._alone: dict[tuple[int, int], Ranked] = {}
        self._surfaces: dict[tuple[int, int], dict[str, set[str]]] = {}
        self._shared: dict[tuple[tuple[int, ...], int, float], list[Ranked]] = {}

    def _table(self, qid: int) -> dict[int, float]:
        """-paper index → score for one interest."""
        table = self._tables.get(qid)
        if table is None:
            table = self._tables[qid] = {neg: s for s, neg, _ in self.lists.get(qid, ())}
        return table

    def _head(self, qid: int, limit: int) -> list[int]:
        """The -paper indices of an interest's first ``limit`` matches."""
        head = self._heads.get((qid, limit))
        if head is None:
            head = self._heads[(qid, limit)] = [neg for _, neg, _ in self.lists[qid][:limit]]
        return head

    def scores(self, qid: int) -> dict[int, float]:
        """Paper index → score for one interest."""
        return {-neg: score for neg, score in self._table(qid).items()}

    def best(
        self, qids: Sequence[int], limit: int, min_score: float, allowed: set[int] | None = None
    ) -> list[Entry]:
        """The exact top ``limit`` entries for a set of interests, scores summed.

        An entry summed over several interests carries the interest id ``-1``.
        ``allowed`` holds the paper ids that may be chosen (``None``: all).
        """
        if limit <= 0 or not qids:
            return []
        ids, lists = self.ids, self.lists
        tables = [self._table(q) for q in qids]
        # Papers matching two or more of the interests: their sum is computed explicitly.
        several: set[int] = set()
        for i, first in enumerate(tables):
            if first:
                for second in tables[i + 1 :]:
                    if second:
                        several |= first.keys() & second.keys()
        chosen: list[Entry] = []
        if several:
            papers = list(several)
            if allowed is not None:
                papers = [neg for neg in papers if ids[-neg] in allowed]
            # Summed in interest order, as one would by hand (adding 0.0 changes nothing).
            totals = list(map(tables[0].get, papers, repeat(0.0)))
            for table in tables[1:]:
                totals = list(map(add, totals, map(table.get, papers, repeat(0.0))))
            chosen = list(zip(totals, papers, repeat(_SEVERAL)))
        # Any other paper scores only what its one interest gives it, so it can make the
        # top ``limit`` only if it is among the first ``limit`` such papers of that list.
        for q in qids:
            entries = lists.get(q)
            if not entries:
                continue
            if allowed is None and (not several or several.isdisjoint(self._head(q, limit))):
                chosen += entries[:limit]
                continue
            taken = 0
            for entry in entries:
                if entry[0] < min_score:
                    break
                if entry[1] in several or (allowed is not None and ids[-entry[1]] not in allowed):
                    continue
                chosen.append(entry)
                taken += 1
                if taken == limit:
                    break
        if len(qids) > 1:
            chosen.sort(reverse=True)
            del chosen[limit:]
        while chosen and chosen[-1][0] < min_score:
            chosen.pop()
        return chosen

    def hit(self, qid: int, pidx: int) -> InterestHit:
        """The explanation of one interest matching one paper."""
        key = (qid, pidx)
        cached = self._hits.get(key)
        if cached is not None:
            return cached
        doc = self.docs[pidx]
        matcher = self.index._matchers[qid]
        words: dict[str, None] = {}
        if isinstance(matcher, TermLeaf) and not any(matcher.term in f.spans for f in doc.fields):
            # One plain term, the commonest case: its own forms, field by field.
            term = matcher.term
            present = [f for f in matcher.fields if term in doc.fields[f].counts]
            for f in present:
                words.update(dict.fromkeys(sorted(self._surface_map(pidx, f).get(term, ()))))
            fields = tuple(FIELDS[f] for f in present)
        else:
            found: list[tuple[int, str]] = []
            matcher.evaluate(doc, found)
            for f, term in found:
                forms = self._surface_map(pidx, f).get(term, ())
                words.update(dict.fromkeys(sorted(forms)))
            fields = tuple(FIELDS[f] for f in sorted({f for f, _ in found}))
        score = self._table(qid)[-pidx]
        hit = self._hits[key] = InterestHit(self.index.texts[qid], score, tuple(words), fields)
        return hit

    def _surface_map(self, pidx: int, f: int) -> dict[str, set[str]]:
        forms = self._surfaces.get((pidx, f))
        if forms is None:
            paper = self.papers[pidx]
            text = paper.title if f == 0 else paper.abstract
            wanted = self.docs[pidx].fields[f].counts.keys()
            forms = self._surfaces[(pidx, f)] = self.index.analyzer.surface_forms(text, wanted)
        return forms

    def _items(self, qids: Sequence[int], entries: list[Entry]) -> list[Ranked]:
        out: list[Ranked] = []
        for score, neg, qid in entries:
            if qid == _SEVERAL:
                hits = tuple(self.hit(q, -neg) for q in qids if neg in self._table(q))
                out.append(Ranked(self.ids[-neg], score, hits))
                continue
            # A paper one interest brought is the same item for everyone holding that interest.
            item = self._alone.get((qid, neg))
            if item is None:
                item = Ranked(self.ids[-neg], score, (self.hit(qid, -neg),))
                self._alone[(qid, neg)] = item
            out.append(item)
        return out

    def ranked(self, profile: Profile, allowed_ids: set[int] | None = None) -> list[Ranked]:
        """A profile's papers, best first, each with its explanation."""
        qids = self.index.profiles.get(profile.id, ())
        if allowed_ids is not None:
            entries = self.best(qids, profile.max_items, profile.min_score, allowed_ids)
            return self._items(qids, entries)
        key = (qids, profile.max_items, profile.min_score)
        shared = self._shared.get(key)
        if shared is None:
            entries = self.best(qids, profile.max_items, profile.min_score)
            shared = self._shared[key] = self._items(qids, entries)
        return list(shared)

    def ranked_many(
        self,
        profiles: Iterable[Profile],
        candidates: Callable[[int], set[int]] | None = None,
    ) -> dict[int, list[Ranked]]:
        """Every profile's papers; ``candidates(profile id)`` limits which papers (ids)."""
        with _no_collection():
            if candidates is None:
                return {profile.id: self.ranked(profile) for profile in profiles}
            return {p.id: self.ranked(p, candidates(p.id)) for p in profiles}


def rank_profiles(
    profiles: Iterable[Profile],
    papers: Iterable[PaperText],
    stats: TermStats,
    *,
    candidates: Callable[[int], set[int]] | None = None,
    analyzer: Analyzer = DEFAULT,
) -> dict[int, list[Ranked]]:
    """Every profile's best papers of the day; ``candidates(profile id)`` limits which papers."""
    profiles = list(profiles)
    index = InterestIndex.build(profiles, stats, analyzer)
    return index.match(papers).ranked_many(profiles, candidates)


def rank_for(
    profile: Profile, papers: Iterable[PaperText], stats: TermStats, analyzer: Analyzer = DEFAULT
) -> list[Ranked]:
    """One subscriber's best papers (a preview)."""
    return rank_profiles([profile], papers, stats, analyzer=analyzer)[profile.id]


def search(
    query: str,
    papers: Iterable[PaperText],
    stats: TermStats,
    limit: int = 20,
    analyzer: Analyzer = DEFAULT,
) -> list[Ranked]:
    """Papers matching one expression of the interest language, best first."""
    index = InterestIndex(stats, analyzer)
    index.profiles[0] = (index.add(query),)
    return index.match(papers).ranked(Profile(0, (query,), max_items=limit))
