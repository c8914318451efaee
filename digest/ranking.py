"""Matching papers to interests and ranking them, percolator style.

The day's work is inverted: the distinct interests of all subscribers are
compiled once into an ``InterestIndex`` keyed by one *anchor* term each (the
rarest term a match cannot do without); each new paper is analyzed once and
streamed past the index, and only the interests anchored on one of its terms are
verified against the full boolean, phrase, field and prefix logic. Scores are
BM25F-style (title weighted above abstract) with document frequencies from the
whole store. Matches are then fanned out to subscribers: a subscriber's score
for a paper is the sum over their matching interests, and their top papers are
found with a threshold walk over the interests' score-ordered match lists, so a
broad interest shared by thousands costs each of them only a few steps.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from digest.analysis import DEFAULT, Analyzer
from digest.interests import (
    AllOf,
    AnyOf,
    InterestError,
    Node,
    Phrase,
    Term,
    Without,
    parse_interest,
)

K1 = 1.2
B = 0.75
FIELD_WEIGHTS = (3.0, 1.0)  # title, abstract: a word in the title says more about the paper
FIELDS = ("title", "abstract")
TRENDING_STEP = 0.05  # per doubling of times_seen
TRENDING_CAP = 0.15  # so trending never overturns a match more than 15% better
# Dropped from all-words interests ("agents for science"), kept in phrases.
_STOPWORDS_WORDS = "a an and are as at by for from in is of on or the to via with"
STOPWORDS = frozenset(_STOPWORDS_WORDS.split())
_MIN_JOIN = 5  # shortest interest word we also look for split in two ("data set")


class TermStats(Protocol):
    """Store-wide statistics the ranker needs; the store implements it over its own tables."""

    @property
    def documents(self) -> int: ...
    @property
    def avg_title_len(self) -> float: ...
    @property
    def avg_abstract_len(self) -> float: ...
    def doc_freq(self, term: str) -> int: ...


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


# What a matching leaf reports for explanations: (field index, term).
_Found = list[tuple[int, str]] | None


class _Field:
    """One field of one paper, analyzed for matching."""

    __slots__ = ("factor", "positions", "spans", "surfaces", "terms")

    def __init__(self, terms: list[str], surfaces: list[str], factor: float) -> None:
        self.terms = terms
        self.surfaces = surfaces
        self.factor = factor  # field weight over BM25 length normalization
        self.positions: dict[str, list[int]] = {}
        for i, term in enumerate(terms):
            if term in self.positions:
                self.positions[term].append(i)
            else:
                self.positions[term] = [i]
        # Joined terms covering several positions: "self-supervised" → selfsupervis.
        self.spans: dict[str, list[tuple[int, int]]] = {}

    def occurrences(self, term: str) -> list[tuple[int, int]]:
        spans = [(p, p) for p in self.positions.get(term, ())]
        return spans + self.spans.get(term, [])

    def tf(self, term: str) -> int:
        return len(self.positions.get(term, ())) + len(self.spans.get(term, ()))

    def report(self, index: int, span: tuple[int, int], found: list[tuple[int, str]]) -> None:
        found.extend((index, term) for term in self.terms[span[0] : span[1] + 1])


class _Doc:
    __slots__ = ("boost", "fields", "paper")

    def __init__(self, paper: PaperText, fields: tuple[_Field, _Field]) -> None:
        self.paper = paper
        self.fields = fields
        seen = max(paper.times_seen, 1)
        self.boost = 1.0 + min(TRENDING_STEP * math.log2(seen), TRENDING_CAP)


def _saturate(idf: float, x: float) -> float:
    return idf * x * (K1 + 1.0) / (K1 + x)


class _Matcher(Protocol):
    def evaluate(self, doc: _Doc, found: _Found) -> float | None: ...


class _TermLeaf:
    __slots__ = ("fields", "idf", "term")

    def __init__(self, term: str, fields: tuple[int, ...], idf: float) -> None:
        self.term, self.fields, self.idf = term, fields, idf

    def evaluate(self, doc: _Doc, found: _Found) -> float | None:
        x = 0.0
        for f in self.fields:
            fld = doc.fields[f]
            tf = fld.tf(self.term)
            if tf:
                x += tf * fld.factor
                if found is not None:
                    for span in fld.occurrences(self.term):
                        fld.report(f, span, found)
        return _saturate(self.idf, x) if x else None


class _PhraseLeaf:
    """Words in sequence; ``variants`` spell compounds both split and joined."""

    __slots__ = ("fields", "idf", "variants")

    def __init__(self, variants: list[list[str]], fields: tuple[int, ...], idf: float) -> None:
        self.variants, self.fields, self.idf = variants, fields, idf

    def evaluate(self, doc: _Doc, found: _Found) -> float | None:
        x = 0.0
        for f in self.fields:
            fld = doc.fields[f]
            best: list[tuple[int, int]] = []
            for words in self.variants:
                hits = _chain(fld, words)
                if len(hits) > len(best):
                    best = hits
            if best:
                x += len(best) * fld.factor
                if found is not None:
                    for span in best:
                        fld.report(f, span, found)
        return _saturate(self.idf, x) if x else None


def _chain(fld: _Field, words: list[str]) -> list[tuple[int, int]]:
    """Spans where words occur one right after the other (joined terms span several)."""
    first = fld.occurrences(words[0])
    if not first or any(word not in fld.positions and word not in fld.spans for word in words):
        return []
    open_spans = first
    for word in words[1:]:
        starts: dict[int, int] = {}
        for s, e in fld.occurrences(word):
            starts[s] = e
        open_spans = [(s, starts[e + 1]) for s, e in open_spans if e + 1 in starts]
        if not open_spans:
            return []
    return open_spans


class _PrefixLeaf:
    __slots__ = ("fields", "idf_of", "prefix")

    def __init__(
        self, prefix: str, fields: tuple[int, ...], idf_of: Callable[[str], float]
    ) -> None:
        self.prefix, self.fields, self.idf_of = prefix, fields, idf_of

    def evaluate(self, doc: _Doc, found: _Found) -> float | None:
        x, idf = 0.0, math.inf
        for f in self.fields:
            fld = doc.fields[f]
            tf = 0
            for i, surface in enumerate(fld.surfaces):
                if surface.startswith(self.prefix):
                    tf += 1
                    # The commonest expansion sets the weight: "diffus*" is no rarer than diffusion.
                    idf = min(idf, self.idf_of(fld.terms[i]))
                    if found is not None:
                        found.append((f, fld.terms[i]))
            x += tf * fld.factor
        return _saturate(idf, x) if x else None


class _All:
    __slots__ = ("bonus", "excluded", "required")

    def __init__(
        self, required: list[_Matcher], excluded: list[_Matcher], bonus: _Matcher | None = None
    ) -> None:
        self.required, self.excluded, self.bonus = required, excluded, bonus

    def evaluate(self, doc: _Doc, found: _Found) -> float | None:
        total = 0.0
        for item in self.required:
            score = item.evaluate(doc, found)
            if score is None:
                return None
            total += score
        for item in self.excluded:
            if item.evaluate(doc, None) is not None:
                return None
        if self.bonus is not None:
            total += self.bonus.evaluate(doc, found) or 0.0
        return total


class _Any:
    __slots__ = ("items",)

    def __init__(self, items: list[_Matcher]) -> None:
        self.items = items

    def evaluate(self, doc: _Doc, found: _Found) -> float | None:
        total: float | None = None
        for item in self.items:
            score = item.evaluate(doc, found)
            if score is not None:
                total = score if total is None else total + score
        return total


# An anchor: ("t", term) or ("p", prefix), with an estimated cost (document frequency).
_Anchors = tuple[float, list[tuple[str, str]]]


class _Not:
    __slots__ = ("item",)

    def __init__(self, item: _Matcher) -> None:
        self.item = item

    def evaluate(self, doc: _Doc, found: _Found) -> float | None:
        return None if self.item.evaluate(doc, None) is not None else 0.0


class _Compiler:
    """Turns interest ASTs into matchers with their anchors, asking stats only for their terms."""

    def __init__(self, stats: TermStats, analyzer: Analyzer) -> None:
        self.stats = stats
        self.analyzer = analyzer
        self.documents = max(stats.documents, 0)
        self._idf: dict[str, float] = {}
        self.join_terms: set[str] = set()
        self.join_heads: set[str] = set()

    def df(self, term: str) -> int:
        return min(self.stats.doc_freq(term), self.documents)

    def idf(self, term: str) -> float:
        idf = self._idf.get(term)
        if idf is None:
            n, df = self.documents, self.df(term)
            idf = self._idf[term] = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
        return idf

    def compile(self, node: Node) -> tuple[_Matcher, _Anchors | None]:
        if isinstance(node, Term):
            fields = _scope(node.field)
            if node.prefix:
                prefix = self.analyzer.positions(node.word).surfaces[0]
                # Unknown breadth: a prefix anchors only when nothing rarer is required.
                cost = self.documents * 0.05 + 1.0
                return _PrefixLeaf(prefix, fields, self.idf), (cost, [("p", prefix)])
            return self.words(node.word, fields)
        if isinstance(node, Phrase):
            return self.words(node.words, _scope(node.field))
        if isinstance(node, AllOf):
            required: list[tuple[_Matcher, _Anchors]] = []
            excluded: list[_Matcher] = []
            for item in node.items:
                if isinstance(item, Without):
                    excluded.append(self.compile(item.item)[0])
                    continue
                matcher, anchors = self.compile(item)
                if anchors is not None:
                    required.append((matcher, anchors))
            content = [(m, a) for m, a in required if not _is_stopword(m)]
            required = content or required
            best = min((a for _, a in required), key=lambda a: a[0], default=None)
            return _All([m for m, _ in required], excluded, self.proximity(node)), best
        if isinstance(node, AnyOf):
            matchers, keys, cost = [], [], 0.0
            for item in node.items:
                matcher, anchors = self.compile(item)
                matchers.append(matcher)
                if anchors is not None:
                    cost += anchors[0]
                    keys.extend(anchors[1])
            return _Any(matchers), (cost, keys)
        matcher, _ = self.compile(node.item)
        return _Not(matcher), None

    def proximity(self, node: AllOf) -> _Matcher | None:
        """Loose words that also occur as written, next to each other, earn a phrase's score."""
        words = [item for item in node.items if isinstance(item, Term) and not item.prefix]
        positive = [item for item in node.items if not isinstance(item, Without)]
        if len(words) < 2 or len(words) != len(positive):
            return None
        if any(w.field != words[0].field for w in words):
            return None
        matcher, _ = self.words(" ".join(w.word for w in words), _scope(words[0].field))
        return matcher

    def words(self, text: str, fields: tuple[int, ...]) -> tuple[_Matcher, _Anchors]:
        pos = self.analyzer.positions(text)
        covered = {i for s, e, _ in pos.compounds for i in range(s, e + 1)}
        for i, surface in enumerate(pos.surfaces):
            if i not in covered and len(surface) >= _MIN_JOIN:
                self._join_target(surface, pos.terms[i])
        if len(pos.terms) == 1:
            term = pos.terms[0]
            return _TermLeaf(term, fields, self.idf(term)), (self.df(term), [("t", term)])
        variants = _variants(pos.terms, pos.compounds)
        idf = sum(self.idf(term) for term in pos.terms)
        keys: list[tuple[str, str]] = []
        cost = 0.0
        for words in variants:
            rarest = min(words, key=self.df)
            cost += self.df(rarest)
            keys.append(("t", rarest))
        return _PhraseLeaf(variants, fields, idf), (cost, keys)

    def _join_target(self, surface: str, term: str) -> None:
        """Let "data set" in a paper meet "dataset" in an interest."""
        self.join_terms.add(term)
        for cut in range(2, len(surface) - 1):
            head = surface[:cut]
            if head not in STOPWORDS:
                self.join_heads.add(head)


def _is_stopword(matcher: _Matcher) -> bool:
    return isinstance(matcher, _TermLeaf) and matcher.term in STOPWORDS


def _scope(name: str | None) -> tuple[int, ...]:
    return (0, 1) if name is None else (FIELDS.index(name),)


def _variants(terms: list[str], compounds: list[tuple[int, int, str]]) -> list[list[str]]:
    """Every spelling of a phrase with each compound split or joined (at most 8)."""
    starts = {s: (e, joined) for s, e, joined in compounds}
    out: list[list[str]] = []

    def walk(i: int, sofar: list[str]) -> None:
        if len(out) >= 8:
            return
        if i == len(terms):
            out.append(sofar)
            return
        walk(i + 1, [*sofar, terms[i]])
        if i in starts:
            end, joined = starts[i]
            walk(end + 1, [*sofar, joined])

    walk(0, [])
    return out


class InterestIndex:
    """The distinct interests of all subscribers, compiled once and keyed by anchor term."""

    def __init__(self, stats: TermStats, analyzer: Analyzer = DEFAULT) -> None:
        self.analyzer = analyzer
        self.texts: list[str] = []
        self.weights: list[float] = []
        self.profiles: dict[int, tuple[int, ...]] = {}  # profile id → its interest ids
        self.invalid: list[tuple[int, str, str]] = []  # (profile id, interest, error)
        self._compiler = _Compiler(stats, analyzer)
        self._matchers: list[_Matcher] = []
        self._ids: dict[str, int] = {}
        self._terms: dict[str, list[int]] = {}
        self._prefixes: dict[str, list[tuple[str, int]]] = {}

    @classmethod
    def build(
        cls, profiles: Iterable[Profile], stats: TermStats, analyzer: Analyzer = DEFAULT
    ) -> InterestIndex:
        """Index every profile's interests; malformed ones are skipped and listed in ``invalid``."""
        index = cls(stats, analyzer)
        for profile in profiles:
            ids: list[int] = []
            for text in profile.interests:
                try:
                    qid = index.add(text)
                except InterestError as exc:
                    index.invalid.append((profile.id, text, str(exc)))
                    continue
                if qid not in ids:
                    ids.append(qid)
            index.profiles[profile.id] = tuple(ids)
        return index

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
            for kind, key in dict.fromkeys(anchors[1]):
                if kind == "t":
                    self._terms.setdefault(key, []).append(qid)
                else:
                    self._prefixes.setdefault(key[:3], []).append((key, qid))
            self._ids[interest.text] = qid
        self._ids[text] = qid
        return qid

    def _doc(self, paper: PaperText, stats: TermStats) -> _Doc:
        fields: list[_Field] = []
        averages = (stats.avg_title_len, stats.avg_abstract_len)
        heads, joins, term = (
            self._compiler.join_heads,
            self._compiler.join_terms,
            self.analyzer.term,
        )
        for i, text in enumerate((paper.title, paper.abstract)):
            pos = self.analyzer.positions(text)
            norm = 1.0 - B + B * len(pos.terms) / max(averages[i], 1.0)
            fld = _Field(pos.terms, pos.surfaces, FIELD_WEIGHTS[i] / norm)
            for s, e, joined in pos.compounds:
                fld.spans.setdefault(joined, []).append((s, e))
            surfaces = pos.surfaces
            for k in range(len(surfaces) - 1):
                if surfaces[k] in heads:
                    joined = term(surfaces[k] + surfaces[k + 1])
                    if joined in joins:
                        fld.spans.setdefault(joined, []).append((k, k + 1))
            fields.append(fld)
        return _Doc(paper, (fields[0], fields[1]))

    def _candidates(self, doc: _Doc) -> set[int]:
        found: set[int] = set()
        terms = self._terms
        for fld in doc.fields:
            for key in (fld.positions, fld.spans):
                for term in key:
                    ids = terms.get(term)
                    if ids is not None:
                        found.update(ids)
            if self._prefixes:
                for surface in set(fld.surfaces):
                    for prefix, qid in self._prefixes.get(surface[:3], ()):
                        if surface.startswith(prefix):
                            found.add(qid)
        return found

    def match(self, papers: Iterable[PaperText]) -> DayMatches:
        """Stream the day's papers past the index once; every interest's matches, best first."""
        stats = self._compiler.stats
        docs: list[_Doc] = []
        lists: dict[int, list[tuple[float, int]]] = {}
        matchers, weights = self._matchers, self.weights
        for pidx, paper in enumerate(papers):
            doc = self._doc(paper, stats)
            docs.append(doc)
            for qid in self._candidates(doc):
                score = matchers[qid].evaluate(doc, None)
                if score is not None:
                    entry = (score * weights[qid] * doc.boost, pidx)
                    if qid in lists:
                        lists[qid].append(entry)
                    else:
                        lists[qid] = [entry]
        ids = [doc.paper.id for doc in docs]
        for entries in lists.values():
            entries.sort(key=lambda entry: (-entry[0], ids[entry[1]]))
        return DayMatches(self, docs, lists)


class DayMatches:
    """One day's matches per interest, and the subscribers' top papers drawn from them."""

    def __init__(
        self, index: InterestIndex, docs: list[_Doc], lists: dict[int, list[tuple[float, int]]]
    ) -> None:
        self.index = index
        self.docs = docs
        self.lists = lists
        self.ids = [doc.paper.id for doc in docs]
        self._scores: dict[int, dict[int, float]] = {}
        self._hits: dict[tuple[int, int], InterestHit] = {}
        self._surfaces: dict[tuple[int, int], dict[str, set[str]]] = {}

    def scores(self, qid: int) -> dict[int, float]:
        """Paper index → score for one interest."""
        table = self._scores.get(qid)
        if table is None:
            table = self._scores[qid] = {p: s for s, p in self.lists.get(qid, ())}
        return table

    def top(
        self, qids: Sequence[int], limit: int, min_score: float, allowed: Callable[[int], bool]
    ) -> list[tuple[float, int]]:
        """The best (score, paper index) for a set of interests, scores summed, ties by id."""
        if limit <= 0 or not qids:
            return []
        lists = [self.lists.get(q, []) for q in qids]
        if len(qids) == 1:
            out: list[tuple[float, int]] = []
            for score, p in lists[0]:
                if score < min_score or len(out) >= limit:
                    break
                if allowed(p):
                    out.append((score, p))
            return out
        ids = self.ids
        heap: list[tuple[float, int, int]] = []
        if sum(map(len, lists)) <= 4 * limit * len(lists):
            totals: dict[int, float] = {}
            for entries in lists:
                for score, p in entries:
                    totals[p] = totals.get(p, 0.0) + score
            for p, total in totals.items():
                if total >= min_score and allowed(p):
                    _offer(heap, limit, (total, -ids[p], p))
        else:
            self._threshold_walk(qids, lists, limit, min_score, allowed, heap)
        heap.sort(reverse=True)
        return [(score, p) for score, _, p in heap]

    def _threshold_walk(
        self,
        qids: Sequence[int],
        lists: list[list[tuple[float, int]]],
        limit: int,
        min_score: float,
        allowed: Callable[[int], bool],
        heap: list[tuple[float, int, int]],
    ) -> None:
        # Fagin's threshold algorithm: walk the lists in step; a paper not yet seen can
        # score at most the sum of the scores at the current depth, so stop below that.
        tables = [self.scores(q) for q in qids]
        ids = self.ids
        seen: set[int] = set()
        depth = 0
        while True:
            threshold, active = 0.0, False
            for entries in lists:
                if depth < len(entries):
                    active = True
                    score, p = entries[depth]
                    threshold += score
                    if p not in seen:
                        seen.add(p)
                        total = 0.0
                        for table in tables:
                            total += table.get(p, 0.0)
                        if total >= min_score and allowed(p):
                            _offer(heap, limit, (total, -ids[p], p))
            depth += 1
            if not active or threshold < min_score:
                return
            if len(heap) >= limit and heap[0][0] > threshold:
                return

    def hit(self, qid: int, pidx: int) -> InterestHit:
        """The explanation of one interest matching one paper."""
        key = (qid, pidx)
        cached = self._hits.get(key)
        if cached is not None:
            return cached
        doc = self.docs[pidx]
        found: list[tuple[int, str]] = []
        self.index._matchers[qid].evaluate(doc, found)
        words: dict[str, None] = {}
        for f, term in found:
            forms = self._surface_map(pidx, f).get(term, ())
            words.update(dict.fromkeys(sorted(forms)))
        fields = tuple(FIELDS[f] for f in sorted({f for f, _ in found}))
        hit = InterestHit(self.index.texts[qid], self.scores(qid)[pidx], tuple(words), fields)
        self._hits[key] = hit
        return hit

    def _surface_map(self, pidx: int, f: int) -> dict[str, set[str]]:
        forms = self._surfaces.get((pidx, f))
        if forms is None:
            doc = self.docs[pidx]
            text = doc.paper.title if f == 0 else doc.paper.abstract
            wanted = set(doc.fields[f].terms)
            forms = self._surfaces[(pidx, f)] = self.index.analyzer.surface_forms(text, wanted)
        return forms

    def ranked(self, profile: Profile, allowed_ids: set[int] | None = None) -> list[Ranked]:
        """A profile's papers, best first, each with its explanation."""
        qids = self.index.profiles.get(profile.id, ())
        docs = self.docs
        allowed: Callable[[int], bool] = _everything
        if allowed_ids is not None:
            allowed = lambda p: docs[p].paper.id in allowed_ids  # noqa: E731
        out: list[Ranked] = []
        for score, p in self.top(qids, profile.max_items, profile.min_score, allowed):
            hits = tuple(self.hit(q, p) for q in qids if p in self.scores(q))
            out.append(Ranked(docs[p].paper.id, score, hits))
        return out


def _everything(_: int) -> bool:
    return True


def _offer(heap: list[tuple[float, int, int]], limit: int, item: tuple[float, int, int]) -> None:
    if len(heap) < limit:
        heapq.heappush(heap, item)
    elif item > heap[0]:
        heapq.heapreplace(heap, item)


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
    day = index.match(papers)
    return {
        profile.id: day.ranked(profile, None if candidates is None else candidates(profile.id))
        for profile in profiles
    }


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
