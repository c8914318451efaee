"""Matching papers to interests and ranking them for every subscriber, percolator style.

The day's work is inverted: the distinct interests of all subscribers are
compiled once (``digest.rank.match``) into an ``InterestIndex``. Interests of one
term, the commonest kind, are keyed by that term and scored straight from its
counts; the others are keyed by one *anchor* (the rarest term a match cannot do
without) and verified in full. Each new paper is analyzed once and streamed past
the index, which leaves every interest with its matches, best first. Scores are
BM25F-style (title weighted above abstract) with document frequencies from the
whole store, times a small trending boost.

Subscribers' lists are drawn from those per-interest lists in ``digest.rank.topk``;
a large day is matched and fanned out in worker processes (``digest.rank.workers``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from digest.rank import workers as parallel
from digest.rank.explain import Explainer
from digest.rank.match import Compiler, Doc, Entry, Matcher, TermLeaf, TermStats, saturate
from digest.rank.query import InterestError, parse_interest
from digest.rank.text import DEFAULT, Analyzer
from digest.rank.topk import DayMatches, InterestHit, Profile, Ranked, no_collection

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

    def match(self, papers: Iterable[PaperText], processes: int = 1) -> DayMatches:
        """Stream the day's papers past the index once; every interest's matches, best first.

        With ``processes`` > 1 the papers are split between that many forked workers;
        close the result (or use it in a ``with``) to stop them.
        """
        ordered = sorted(papers, key=lambda paper: paper.id)
        texts = [(paper.title, paper.abstract) for paper in ordered]

        def start(lo: int, hi: int) -> tuple[parallel.Packed, parallel.Share]:
            # In a worker: match the slice, then serve answers and explanations.
            docs, lists = self._stream(ordered[lo:hi], lo)
            explain = Explainer(self._matchers, texts, docs, self.analyzer, lo).many
            return parallel.pack(lists), parallel.Share(self, ordered, lists, explain)

        if processes > 1 and len(ordered) >= processes and parallel.available():
            workers = parallel.Workers(len(ordered), start, processes)
            try:
                lists = workers.lists()
            except BaseException:
                workers.close()
                raise
            return DayMatches(
                self, ordered, lists, workers.explain, workers.close, workers.answer, workers.submit
            )
        docs, lists = self._stream(ordered, 0)
        for entries in lists.values():
            entries.sort(reverse=True)
        explain = Explainer(self._matchers, texts, docs, self.analyzer).many
        return DayMatches(self, ordered, lists, explain)

    def _stream(
        self, papers: Sequence[PaperText], offset: int
    ) -> tuple[list[Doc], dict[int, list[Entry]]]:
        lists: dict[int, list[Entry]] = {}
        docs: list[Doc] = []
        document = self._compiler.document
        with no_collection():
            for pidx, paper in enumerate(papers, offset):
                doc = document(paper.title, paper.abstract, paper.times_seen)
                docs.append(doc)
                terms = doc.fields[0].counts.keys() | doc.fields[1].counts.keys()
                self._score_terms(doc, -pidx, terms, lists)
                self._verify(doc, -pidx, terms, lists)
        return docs, lists

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


def rank_profiles(
    profiles: Iterable[Profile],
    papers: Iterable[PaperText],
    stats: TermStats,
    *,
    candidates: Callable[[int], set[int]] | None = None,
    analyzer: Analyzer = DEFAULT,
    processes: int | None = None,
) -> dict[int, list[Ranked]]:
    """Every profile's best papers of the day; ``candidates(profile id)`` limits which papers.

    ``processes``: how many worker processes match and fan out (``None``: by size).
    """
    profiles, papers = list(profiles), list(papers)
    if processes is None:
        processes = parallel.processes_for(len(papers) * len(profiles))
    index = InterestIndex.build(profiles, stats, analyzer)
    with index.match(papers, processes) as matches:
        return matches.ranked_many(profiles, candidates)


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
