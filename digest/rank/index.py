"""The distinct interests of all readers, compiled once and keyed by anchor term.

Interests of one term, the commonest kind, are keyed by that term and scored
from its counts by the term's own matcher; the others are keyed by one *anchor*
(the rarest term a match cannot do without) and verified in full. Each new
paper is analyzed once and streamed past the index, which leaves every interest
with its matches, best first (``DayMatches``); a large day is split between
forked worker processes (``digest.rank.workers``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from digest import forks
from digest.rank.doc import Doc
from digest.rank.explain import Explainer
from digest.rank.leaves import Matcher, TermLeaf
from digest.rank.match import Compiler, Entry, TermStats
from digest.rank.query import InterestError, parse_interest
from digest.rank.text import DEFAULT, Analyzer
from digest.rank.topk import DayMatches, no_collection
from digest.rank.types import PaperText, Profile
from digest.rank.workers import Packed, Share, Workers, pack


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
        # One-term interests: term → (interest id, its matcher, weight); see ``_score_terms``.
        self._singles: dict[str, list[tuple[int, TermLeaf, float]]] = {}
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
                entry = (qid, matcher, interest.weight)
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

        def start(lo: int, hi: int) -> tuple[Packed, Share]:
            # In a worker: match the slice, then serve answers and explanations.
            docs, lists = self._stream(ordered[lo:hi], lo)
            explain = Explainer(self._matchers, texts, docs, self.analyzer, lo).many

            def day(full: dict[int, list[Entry]]) -> DayMatches:
                return DayMatches(self, ordered, full, explain)

            return pack(lists), Share(lists, explain, day)

        if processes > 1 and len(ordered) >= processes and forks.available():
            workers = Workers(len(ordered), start, processes)
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
                title, abstract = doc.fields
                terms = title.counts.keys() | abstract.counts.keys()
                if title.fixed or abstract.fixed:  # "mixture of experts" finds mixture-of-experts
                    terms |= title.fixed.keys() | abstract.fixed.keys()
                self._score_terms(doc, -pidx, terms, lists)
                self._verify(doc, -pidx, terms, lists)
        return docs, lists

    def _score_terms(
        self, doc: Doc, neg: int, terms: set[str], lists: dict[int, list[Entry]]
    ) -> None:
        # One-term interests: the counts are looked up once per term for all its interests.
        title, abstract = doc.fields[0].counts, doc.fields[1].counts
        boost = doc.boost
        singles = self._singles
        for term in singles.keys() & terms:
            tf_title, tf_abstract = title.get(term, 0), abstract.get(term, 0)
            for qid, leaf, weight in singles[term]:
                score = leaf.weighted(tf_title, tf_abstract, doc)
                if score is not None:
                    entry = (score * weight * boost, neg, qid)
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
