"""Compiled interests: whether a paper meets one interest, and how well.

An interest's AST becomes a tree of small matchers over a ``Doc``, a paper
analyzed once (term counts per field, positions on demand for phrases, the
interest prefixes it carries). Each matcher returns a BM25F-style score, or
``None`` when the paper does not match; given a ``found`` list it also reports
which words matched, for explanations. The ``Compiler`` also picks each
interest's *anchor*: the rarest term (or prefix) a match cannot do without,
which is what the index in ``digest.rank.index`` keys interests by.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from itertools import pairwise
from typing import Protocol

from digest.rank.acronyms import Acronyms
from digest.rank.query import AllOf, AnyOf, Node, Phrase, Term, Without
from digest.rank.text import Analyzer, Positions, inflected

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
# Prefixes are looked up by their first letters; the parser refuses prefixes shorter than this.
PREFIX_KEY = 3
# An acronym's expansion counts as the acronym, a little less ("LLM" over "large language
# model" when a paper writes one and not the other), and the other way round.
ALIAS_WEIGHT = 0.8
# Soft conjunction: all the words but one, and a close variant of that one, score this share.
SOFT = 0.5
# An acronym also meets the last words of its expansion ("speech recognition" for
# ASR) at this share, below a paper that writes the acronym or the whole expansion.
TAIL_WEIGHT = 0.5
# A soft match may also lack one in so many of an interest's words outright, never its
# ``KEEP`` rarest: "decoding methods for large language models" needs two of its three.
SPARE_PER = 3
KEEP = 2
_VARIANT_MIN = 5  # shorter words have no variants ("model" would meet "modeled")
# Explanations carry an alias match as one entry: this mark, the interest's word, the span.
ALIAS_MARK = "\x00"


class TermStats(Protocol):
    """Store-wide statistics the ranker needs; the store implements it over its own tables."""

    @property
    def documents(self) -> int: ...
    @property
    def avg_title_len(self) -> float: ...
    @property
    def avg_abstract_len(self) -> float: ...
    @property
    def frequencies(self) -> Mapping[str, int]: ...
    @property
    def acronyms(self) -> Acronyms: ...
    def doc_freq(self, term: str) -> int: ...


# What a matching leaf reports for explanations: (field index, term).
Found = list[tuple[int, str]] | None
# Where a word or phrase occurs: (field index, first position, last position).
Span = tuple[int, int, int]
# A match in an interest's list: (score, -paper index, interest id). Papers are indexed in
# id order, so sorting these in reverse gives best first with ties to the lower paper id.
Entry = tuple[float, int, int]


class Field:
    """One field of one paper, analyzed for matching."""

    __slots__ = ("_bigrams", "_positions", "counts", "factor", "spans", "surfaces", "terms")

    def __init__(self, terms: list[str], surfaces: list[str], factor: float) -> None:
        self.terms = terms
        self.surfaces = surfaces
        self.factor = factor  # field weight over BM25 length normalization
        self.counts: dict[str, int] = Counter(terms)  # joined spans are counted in too
        # Joined terms covering several positions: "self-supervised" → selfsupervis.
        self.spans: dict[str, list[tuple[int, int]]] = {}
        self._positions: dict[str, list[int]] | None = None
        self._bigrams: set[tuple[str, str]] | None = None

    def add_span(self, joined: str, start: int, end: int) -> None:
        """Record a joined term over positions start..end."""
        self.spans.setdefault(joined, []).append((start, end))
        self.counts[joined] = self.counts.get(joined, 0) + 1

    def positions(self) -> dict[str, list[int]]:
        """Term → its positions, built on first use (only phrases need them)."""
        if self._positions is None:
            positions: dict[str, list[int]] = {}
            for i, term in enumerate(self.terms):
                if term in positions:
                    positions[term].append(i)
                else:
                    positions[term] = [i]
            self._positions = positions
        return self._positions

    def adjacent(self, first: str, second: str) -> bool:
        """Whether two plain terms occur side by side (a cheap test before chaining)."""
        if self._bigrams is None:
            self._bigrams = set(pairwise(self.terms))
        return (first, second) in self._bigrams

    def occurrences(self, term: str) -> list[tuple[int, int]]:
        """Spans (first, last position) where term occurs, plain or joined."""
        spans = [(p, p) for p in self.positions().get(term, ())]
        return spans + self.spans.get(term, [])

    def report(self, index: int, span: tuple[int, int], found: list[tuple[int, str]]) -> None:
        """Add the terms under span to an explanation."""
        found.extend((index, term) for term in self.terms[span[0] : span[1] + 1])


class Doc:
    """A paper analyzed once: its two fields, trending boost and the prefixes it carries."""

    __slots__ = ("boost", "fields", "prefixed")

    def __init__(self, fields: tuple[Field, Field], times_seen: int) -> None:
        self.fields = fields
        self.boost = 1.0 + min(TRENDING_STEP * math.log2(max(times_seen, 1)), TRENDING_CAP)
        # prefix → [(field index, occurrences, term)] for the interest prefixes in this paper
        self.prefixed: dict[str, list[tuple[int, int, str]]] = {}


def saturate(idf: float, x: float) -> float:
    """BM25 term-frequency saturation of a field-weighted frequency x."""
    return idf * x * (K1 + 1.0) / (K1 + x)


class Matcher(Protocol):
    """A compiled interest or part of one."""

    def evaluate(self, doc: Doc, found: Found) -> float | None: ...


class TermLeaf:
    """One term, in some fields."""

    __slots__ = ("fields", "idf", "in_abstract", "in_title", "term")

    def __init__(self, term: str, fields: tuple[int, ...], idf: float) -> None:
        self.term, self.fields, self.idf = term, fields, idf
        self.in_title, self.in_abstract = 0 in fields, 1 in fields

    def weighted(self, tf_title: int, tf_abstract: int, doc: Doc) -> float | None:
        """The score of the term occurring so many times in doc's title and abstract."""
        x = 0.0
        if tf_title and self.in_title:
            x += tf_title * doc.fields[0].factor
        if tf_abstract and self.in_abstract:
            x += tf_abstract * doc.fields[1].factor
        return saturate(self.idf, x) if x else None

    def evaluate(self, doc: Doc, found: Found) -> float | None:
        term = self.term
        title, abstract = doc.fields
        score = self.weighted(title.counts.get(term, 0), abstract.counts.get(term, 0), doc)
        if score is not None and found is not None:
            for f in self.fields:
                fld = doc.fields[f]
                if fld.counts.get(term, 0):
                    for span in fld.occurrences(term):
                        fld.report(f, span, found)
        return score

    def spans(self, doc: Doc) -> list[Span]:
        """Where the term occurs (for marking it in the text)."""
        return [(f, *span) for f in self.fields for span in doc.fields[f].occurrences(self.term)]

    def frequency(self, doc: Doc) -> float:
        """The field-weighted number of times the term occurs (0.0: never)."""
        return sum(
            doc.fields[f].counts.get(self.term, 0) * doc.fields[f].factor for f in self.fields
        )


class PhraseLeaf:
    """Words in sequence; ``variants`` spell compounds both split and joined."""

    __slots__ = ("fields", "idf", "variants")

    def __init__(self, variants: list[list[str]], fields: tuple[int, ...], idf: float) -> None:
        self.variants, self.fields, self.idf = variants, fields, idf

    def evaluate(self, doc: Doc, found: Found) -> float | None:
        x = 0.0
        for f in self.fields:
            fld = doc.fields[f]
            best = self._best(fld)
            if best:
                x += len(best) * fld.factor
                if found is not None:
                    for span in best:
                        fld.report(f, span, found)
        return saturate(self.idf, x) if x else None

    def frequency(self, doc: Doc) -> float:
        """The field-weighted number of times the phrase occurs (0.0: never)."""
        return sum(len(self._best(doc.fields[f])) * doc.fields[f].factor for f in self.fields)

    def _best(self, fld: Field) -> list[tuple[int, int]]:
        """The occurrences of the spelling met most often in the field."""
        best: list[tuple[int, int]] = []
        for words in self.variants:
            hits = _chain(fld, words)
            if len(hits) > len(best):
                best = hits
        return best

    def spans(self, doc: Doc) -> list[Span]:
        """Where the phrase occurs (for marking it in the text)."""
        return [(f, *span) for f in self.fields for span in self._best(doc.fields[f])]


def _chain(fld: Field, words: list[str]) -> list[tuple[int, int]]:
    """Spans where words occur one right after the other (joined terms span several)."""
    counts, spans = fld.counts, fld.spans
    if any(word not in counts for word in words):
        return []
    # Two plain terms in a row must be a bigram of the field: most candidates stop here.
    for first, second in pairwise(words):
        if first not in spans and second not in spans and not fld.adjacent(first, second):
            return []
    open_spans = fld.occurrences(words[0])
    for word in words[1:]:
        starts: dict[int, int] = {}
        for s, e in fld.occurrences(word):
            starts[s] = e
        open_spans = [(s, starts[e + 1]) for s, e in open_spans if e + 1 in starts]
        if not open_spans:
            return []
    return open_spans


class PrefixLeaf:
    """Words starting with a prefix; the commonest expansion sets the weight."""

    __slots__ = ("fields", "idf_of", "prefix")

    def __init__(
        self, prefix: str, fields: tuple[int, ...], idf_of: Callable[[str], float]
    ) -> None:
        self.prefix, self.fields, self.idf_of = prefix, fields, idf_of

    def evaluate(self, doc: Doc, found: Found) -> float | None:
        if found is not None:
            return self._explain(doc, found)
        x, idf = 0.0, math.inf
        matches = doc.prefixed.get(self.prefix, ())
        for f in self.fields:
            tf = 0
            for field, count, term in matches:
                if field == f:
                    tf += count
                    idf = min(idf, self.idf_of(term))
            x += tf * doc.fields[f].factor
        return saturate(idf, x) if x else None

    def spans(self, doc: Doc) -> list[Span]:
        """Where words with the prefix occur (for marking them in the text)."""
        prefix = self.prefix
        return [
            (f, i, i)
            for f in self.fields
            for i, surface in enumerate(doc.fields[f].surfaces)
            if surface.startswith(prefix)
        ]

    def _explain(self, doc: Doc, found: list[tuple[int, str]]) -> float | None:
        # Word by word, so the explanation lists words in the order the paper has them. The
        # words are found through the terms the Doc already carries, not by scanning the field.
        prefix = self.prefix
        x, idf = 0.0, math.inf
        matches = doc.prefixed.get(prefix, ())
        for f in self.fields:
            fld = doc.fields[f]
            terms = dict.fromkeys(term for field, _, term in matches if field == f)
            if not terms:
                continue
            surfaces, positions = fld.surfaces, fld.positions()
            at = sorted(
                i for term in terms for i in positions[term] if surfaces[i].startswith(prefix)
            )
            for term in terms:
                idf = min(idf, self.idf_of(term))  # "diffus*" is no rarer than diffusion
            found.extend((f, fld.terms[i]) for i in at)
            x += len(at) * fld.factor
        return saturate(idf, x) if x else None


class AllLeaves:
    """Every required item, none of the excluded ones; ``bonus`` rewards words written as a phrase.

    ``variants`` (one per required item, or ``None``) make the conjunction soft: a paper
    missing one required item that has a close variant of it, and one of the others in its
    title, still matches, at ``SOFT`` times the score of what it has. Up to ``lack`` of the
    ``spare`` items (in interests of three words or more, all but the ``KEEP`` rarest) may be
    missing too, with no variant at all.
    """

    __slots__ = ("bonus", "excluded", "lack", "order", "required", "spare", "variants")

    def __init__(
        self,
        required: list[Matcher],
        excluded: list[Matcher],
        bonus: Matcher | None = None,
        variants: list[Matcher | None] | None = None,
        order: list[int] | None = None,
        spare: frozenset[int] = frozenset(),
        lack: int = 0,
    ) -> None:
        self.required, self.excluded, self.bonus = required, excluded, bonus
        self.variants = variants
        self.spare = spare  # the items a soft match may lack with no variant at all
        self.lack = lack  # how many of them at most
        # The order to try the items in when only the score is asked for: the likeliest to
        # fail first (the anchor, which found the paper, last). Explanations keep the
        # interest's order.
        self.order = list(range(len(required))) if order is None else order

    def evaluate(self, doc: Doc, found: Found) -> float | None:
        total = 0.0
        soft = varied = False
        lacking = 0
        required = self.required
        for i in self.order if found is None else range(len(required)):
            item = required[i]
            score = item.evaluate(doc, found)
            if score is None:
                # The variant is looked at first: without it, nothing else needs evaluating.
                variant = None if varied or self.variants is None else self.variants[i]
                score = None if variant is None else variant.evaluate(doc, found)
                if score is not None:
                    varied = True
                elif i in self.spare and lacking < self.lack:
                    lacking, score = lacking + 1, 0.0
                else:
                    return None
                soft = True
            total += score
        for item in self.excluded:
            if item.evaluate(doc, None) is not None:
                return None
        if soft:
            return SOFT * total if self._titled(doc) else None
        if self.bonus is not None:
            total += self.bonus.evaluate(doc, found) or 0.0
        return total

    def _titled(self, doc: Doc) -> bool:
        """Whether the title has one of the words: a soft match must be about them."""
        seen: list[tuple[int, str]] = []
        for item in self.required:
            item.evaluate(doc, seen)
        return any(f == 0 for f, _ in seen)


class VariantLeaf:
    """Close variants of a word (``decoder`` for ``decoding``), scored as that word."""

    __slots__ = ("fields", "idf", "terms")

    def __init__(self, terms: list[str], fields: tuple[int, ...], idf: float) -> None:
        self.terms, self.fields, self.idf = terms, fields, idf

    def evaluate(self, doc: Doc, found: Found) -> float | None:
        x = 0.0
        for f in self.fields:
            fld = doc.fields[f]
            for term in self.terms:
                count = fld.counts.get(term, 0)
                if count:
                    x += count * fld.factor
                    if found is not None:
                        for span in fld.occurrences(term):
                            fld.report(f, span, found)
        return saturate(self.idf, x) if x else None


class AliasLeaf:
    """An interest's words or what they stand for: an acronym for its expansion, or back.

    The interest's own words score as usual, the other spelling ``ALIAS_WEIGHT`` of a term
    as rare as the interest's words, so a paper writing only "large language models"
    matches ``LLM`` a little below one writing "LLM". A paper writing both gets the better
    of the two: most papers that use an acronym define it, and one concept counted twice
    would put them above papers that name it in their title.
    """

    __slots__ = ("aliases", "idf", "primary", "tails", "written")

    def __init__(
        self,
        primary: Matcher,
        aliases: list[TermLeaf | PhraseLeaf],
        idf: float,
        written: str,
        tails: list[PhraseLeaf] | None = None,
    ) -> None:
        self.primary, self.aliases, self.idf, self.written = primary, aliases, idf, written
        self.tails = tails or []  # an acronym's last words, counted only without the rest

    def evaluate(self, doc: Doc, found: Found) -> float | None:
        score = self.primary.evaluate(doc, found)
        x = 0.0
        for alias in self.aliases:
            x += alias.frequency(doc)
        weight = ALIAS_WEIGHT
        leaves: Sequence[TermLeaf | PhraseLeaf] = self.aliases
        if not x and score is None and self.tails:
            weight, leaves = TAIL_WEIGHT, self.tails
            x = sum(tail.frequency(doc) for tail in self.tails)
        if not x:
            return score
        if found is not None:
            # One entry per place, read back by the explainer as "LLM, written as ...".
            for f, first, last in (span for alias in leaves for span in alias.spans(doc)):
                found.append((f, f"{ALIAS_MARK}{self.written}{ALIAS_MARK}{first}:{last}"))
        other = weight * saturate(self.idf, x)
        return other if score is None else max(score, other)


class AnyLeaves:
    """At least one item; the scores of those that match are summed."""

    __slots__ = ("items",)

    def __init__(self, items: list[Matcher]) -> None:
        self.items = items

    def evaluate(self, doc: Doc, found: Found) -> float | None:
        total: float | None = None
        for item in self.items:
            score = item.evaluate(doc, found)
            if score is not None:
                total = score if total is None else total + score
        return total


class NotLeaf:
    """Matches (scoring nothing) where its item does not."""

    __slots__ = ("item",)

    def __init__(self, item: Matcher) -> None:
        self.item = item

    def evaluate(self, doc: Doc, found: Found) -> float | None:
        return None if self.item.evaluate(doc, None) is not None else 0.0


# What a soft match may lack outright: words, phrases, acronyms (not prefixes or groups).
_WORDS = (TermLeaf, PhraseLeaf, AliasLeaf)

# Anchors: an estimated cost (document frequency) and keys ("t", term) or ("p", prefix).
Anchors = tuple[float, list[tuple[str, str]]]


class Compiler:
    """Turns interest ASTs into matchers with their anchors, and papers into ``Doc``s."""

    def __init__(self, stats: TermStats, analyzer: Analyzer) -> None:
        self.stats = stats
        self.analyzer = analyzer
        self.documents = max(stats.documents, 0)
        self._idf: dict[str, float] = {}
        self.join_terms: set[str] = set()
        self.join_heads: set[str] = set()
        # Every prefix any interest uses, by its first letters, so a Doc can carry its matches.
        self.prefixes: dict[str, list[str]] = {}
        self.acronyms = stats.acronyms
        # An expansion's words run together, or its last two words or more → the acronyms:
        # "speech recognition" stands for what ASR does, "language model" for LLM and LM.
        self.stands: dict[str, list[str]] = {}
        # Every whole expansion, less its little words: a tail that is one names its own topic.
        self.whole: set[tuple[str, ...]] = set()
        for short, expansions in self.acronyms.items():
            for expansion in expansions:
                self.whole.add(tuple(term for term in expansion if term not in STOPWORDS))
                content = [term for term in expansion if term not in STOPWORDS]
                for start in range(len(content) - 1):
                    self.stands.setdefault("".join(content[start:]), []).append(short)
        self._heads: dict[str, list[str]] | None = None

    def df(self, term: str) -> int:
        """Document frequency, capped at the number of documents."""
        return min(self.stats.doc_freq(term), self.documents)

    def idf(self, term: str) -> float:
        """BM25 inverse document frequency (always positive)."""
        idf = self._idf.get(term)
        if idf is None:
            n, df = self.documents, self.df(term)
            idf = self._idf[term] = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
        return idf

    def compile(self, node: Node) -> tuple[Matcher, Anchors | None]:
        """A node's matcher and anchors (``None``: it cannot anchor, like an exclusion)."""
        if isinstance(node, Term):
            fields = _scope(node.field)
            if node.prefix:
                prefix = self.analyzer.positions(node.word).surfaces[0]
                known = self.prefixes.setdefault(prefix[:PREFIX_KEY], [])
                if prefix not in known:
                    known.append(prefix)
                # Unknown breadth: a prefix anchors only when nothing rarer is required.
                cost = self.documents * 0.05 + 1.0
                return PrefixLeaf(prefix, fields, self.idf), (cost, [("p", prefix)])
            return self.aliased(node.word, fields, *self.words(node.word, fields))
        if isinstance(node, Phrase):
            fields = _scope(node.field)
            return self.aliased(node.words, fields, *self.words(node.words, fields))
        if isinstance(node, AllOf):
            return self._all(node)
        if isinstance(node, AnyOf):
            matchers, keys, cost = [], [], 0.0
            for item in node.items:
                matcher, anchors = self.compile(item)
                matchers.append(matcher)
                if anchors is not None:
                    cost += anchors[0]
                    keys.extend(anchors[1])
            return AnyLeaves(matchers), (cost, keys)
        matcher, _ = self.compile(node.item)
        return NotLeaf(matcher), None

    def _all(self, node: AllOf) -> tuple[Matcher, Anchors | None]:
        required: list[tuple[Matcher, Anchors]] = []
        excluded: list[Matcher] = []
        run = self._expansion_run(node)
        for i, item in enumerate(node.items):
            if run is not None and run[0] <= i < run[1]:
                if i == run[0]:  # "large language model decoding": the first three, or LLM
                    required.append(self._run(node.items[run[0] : run[1]]))
                continue
            if isinstance(item, Without):
                excluded.append(self.compile(item.item)[0])
                continue
            part, anchors = self.compile(item)
            if anchors is not None:
                required.append((part, anchors))
        content = [(m, a) for m, a in required if not _is_stopword(m)]
        required = content or required
        variants: list[Matcher | None] | None = None
        soft: list[tuple[Matcher, Anchors] | None] = []
        if len(content) >= 2:
            soft = [self.variant(m) for m, _ in content]
            if any(soft):
                variants = [None if v is None else v[0] for v in soft]
        # The commonest words say least about an interest: a soft match may lack them.
        plain = sorted(
            (i for i, (m, _) in enumerate(content) if isinstance(m, _WORDS)),
            key=lambda i: _idf_of(content[i][0]),
        )
        lack = len(content) // SPARE_PER
        spare = frozenset(plain[: max(len(plain) - KEEP, 0)] if lack else ())
        rarest = min(range(len(required)), key=lambda i: required[i][1][0], default=None)
        best = None if rarest is None else required[rarest][1]
        if rarest is not None and best is not None and variants is not None:
            # A soft match may lack the rarest item: it then has one of its variants.
            variant = soft[rarest]
            if variant is not None:
                best = (best[0] + variant[1][0], best[1] + variant[1][1])
        order = sorted(range(len(required)), key=lambda i: (i == rarest, required[i][1][0]))
        matcher: Matcher = AllLeaves(
            [m for m, _ in required], [], self.proximity(node), variants, order, spare, lack
        )
        words = [item for item in node.items if isinstance(item, Term) and not item.prefix]
        positive = [item for item in node.items if not isinstance(item, Without)]
        if best is not None and len(words) == len(positive) >= 2:
            fields = {w.field for w in words}
            if len(fields) == 1:
                written = " ".join(w.word for w in words)
                matcher, best = self.aliased(written, _scope(words[0].field), matcher, best)
        if isinstance(matcher, AllLeaves):
            matcher.excluded = excluded
        elif excluded:  # the acronym, as the words, must come without what is excluded
            matcher = AllLeaves([matcher], excluded)
        return matcher, best

    def _expansion_run(self, node: AllOf) -> tuple[int, int] | None:
        """Where an acronym's expansion stands among more words: (start, end) of the items."""
        if not self.stands:
            return None
        terms: list[str | None] = []
        for item in node.items:
            plain = isinstance(item, Term) and not item.prefix and item.field is None
            words = self.analyzer.positions(item.word).terms if isinstance(item, Term) else []
            terms.append(words[0] if plain and len(words) == 1 else None)
        positive = sum(not isinstance(item, Without) for item in node.items)
        for size in range(len(terms) - 1, 1, -1):
            if size >= positive:
                continue  # the whole interest is an expansion: ``aliased`` sees to it
            for start in range(len(terms) - size + 1):
                window = terms[start : start + size]
                if None in window or window[0] in STOPWORDS:
                    continue
                key = "".join(t for t in window if t is not None and t not in STOPWORDS)
                if key in self.stands:
                    return start, start + size
        return None

    def _run(self, items: tuple[Node, ...]) -> tuple[Matcher, Anchors]:
        """Words that spell an acronym's expansion, as one required item that it also meets."""
        parts = [self.compile(item) for item in items]
        content = [(m, a) for m, a in parts if a is not None and not _is_stopword(m)]
        best = min((a for _, a in content), key=lambda a: a[0])
        written = " ".join(item.word for item in items if isinstance(item, Term))
        group = AllLeaves([m for m, _ in content], [])
        return self.aliased(written, (0, 1), group, best)

    def aliased(
        self, written: str, fields: tuple[int, ...], matcher: Matcher, anchors: Anchors
    ) -> tuple[Matcher, Anchors]:
        """The matcher of words, widened to the acronym they stand for, or its expansion."""
        if not self.acronyms:
            return matcher, anchors
        terms = self.analyzer.positions(written).terms
        aliases: list[tuple[Matcher, Anchors]] = []
        tails: list[tuple[Matcher, Anchors]] = []
        if len(terms) == 1:
            for expansion in self.acronyms.get(terms[0], ()):
                aliases.append(self.words(" ".join(expansion), fields))
                tails.extend(self.words(tail, fields) for tail in self._tails(expansion))
        content = [term for term in terms if term not in STOPWORDS]
        # Two words at least: "autoencoder" alone is no "masked auto encoder" (MAE).
        for short in self.stands.get("".join(content), ()) if len(content) >= 2 else ():
            aliases.append(self.words(short, fields))
        if not aliases:
            return matcher, anchors
        cost, keys = anchors[0], list(anchors[1])
        leaves: list[TermLeaf | PhraseLeaf] = []
        tail_leaves: list[PhraseLeaf] = []
        for i, (leaf, (more, their)) in enumerate(aliases + tails):
            if i < len(aliases):
                assert isinstance(leaf, TermLeaf | PhraseLeaf)
                leaves.append(leaf)
            else:
                assert isinstance(leaf, PhraseLeaf)
                tail_leaves.append(leaf)
            cost += more
            keys.extend(their)
        idf = sum(self.idf(term) for term in content or terms)
        return AliasLeaf(matcher, leaves, idf, written, tail_leaves), (cost, keys)

    def _tails(self, expansion: tuple[str, ...]) -> list[str]:
        """The last two or more words of an expansion the acronym also meets.

        Not a tail that is itself another acronym's whole expansion: "language model" (LM)
        is what VLM and LLM are kinds of, a broader topic, while "speech recognition" is
        what ASR names.
        """
        content = [term for term in expansion if term not in STOPWORDS]
        out: list[str] = []
        for start in range(1, len(content) - 1):
            tail = content[start:]
            if tuple(tail) not in self.whole:
                out.append(" ".join(tail))
        return out

    def variant(self, matcher: Matcher) -> tuple[Matcher, Anchors] | None:
        """What stands in for a required item in a soft match, and its anchors (None: nothing).

        A word's other inflections the store knows ("decoded", "decode" for ``decoding``,
        by ``text.inflected``; "decoder" is another word); an acronym's expansion without
        its first word ("language model" for ``LLM``, or for ``large language models``
        among more words: what it is a kind of).
        """
        if isinstance(matcher, AliasLeaf):
            if isinstance(matcher.primary, TermLeaf):  # the acronym, as written
                fields, shorts = matcher.primary.fields, [matcher.primary.term]
            else:  # its expansion among more words ("large language model decoding")
                terms = self.analyzer.positions(matcher.written).terms
                fields = (0, 1)
                shorts = self.stands.get("".join(t for t in terms if t not in STOPWORDS), [])
            tails: list[tuple[Matcher, Anchors]] = []
            for expansion in (e for short in shorts for e in self.acronyms.get(short, ())):
                content = [term for term in expansion if term not in STOPWORDS]
                for start in range(1, len(content) - 1):
                    tails.append(self.words(" ".join(content[start:]), fields))
            if not tails:
                return None
            if len(tails) == 1:
                return tails[0]
            cost = sum(a[0] for _, a in tails)
            return AnyLeaves([m for m, _ in tails]), (cost, [k for _, a in tails for k in a[1]])
        if not isinstance(matcher, TermLeaf):
            return None
        term = matcher.term
        if len(term) < _VARIANT_MIN or not term.isalpha():
            return None
        if self._heads is None:
            heads: dict[str, list[str]] = {}
            for known in self.stats.frequencies:
                if len(known) >= _VARIANT_MIN and known.isalpha():
                    heads.setdefault(inflected(known), []).append(known)
            self._heads = heads
        found = [other for other in self._heads.get(inflected(term), ()) if other != term]
        if not found:
            return None
        cost = float(sum(self.df(other) for other in found))
        return VariantLeaf(found, matcher.fields, matcher.idf), (cost, [("t", t) for t in found])

    def proximity(self, node: AllOf) -> Matcher | None:
        """Loose words that also occur as written, next to each other, earn a phrase's score."""
        words = [item for item in node.items if isinstance(item, Term) and not item.prefix]
        positive = [item for item in node.items if not isinstance(item, Without)]
        if len(words) < 2 or len(words) != len(positive):
            return None
        if any(w.field != words[0].field for w in words):
            return None
        matcher, _ = self.words(" ".join(w.word for w in words), _scope(words[0].field))
        return matcher

    def words(self, text: str, fields: tuple[int, ...]) -> tuple[Matcher, Anchors]:
        """A word (a term leaf) or several (a phrase leaf with its spellings)."""
        pos = self.analyzer.positions(text)
        covered = {i for s, e, _ in pos.compounds for i in range(s, e + 1)}
        for i, surface in enumerate(pos.surfaces):
            if i not in covered and len(surface) >= _MIN_JOIN:
                self._join_target(surface, pos.terms[i])
        if len(pos.terms) == 1:
            term = pos.terms[0]
            return TermLeaf(term, fields, self.idf(term)), (self.df(term), [("t", term)])
        variants = _variants(pos.terms, pos.compounds)
        idf = sum(self.idf(term) for term in pos.terms)
        keys: list[tuple[str, str]] = []
        cost = 0.0
        for words in variants:
            rarest = min(words, key=self.df)
            cost += self.df(rarest)
            keys.append(("t", rarest))
        return PhraseLeaf(variants, fields, idf), (cost, keys)

    def _join_target(self, surface: str, term: str) -> None:
        """Let "data set" in a paper meet "dataset" in an interest."""
        self.join_terms.add(term)
        for cut in range(2, len(surface) - 1):
            head = surface[:cut]
            if head not in STOPWORDS:
                self.join_heads.add(head)

    def document(self, title: str, abstract: str, times_seen: int) -> Doc:
        """A paper analyzed for matching against everything compiled so far."""
        positions = self.analyzer.positions
        return self.analyzed((positions(title), positions(abstract)), times_seen)

    def analyzed(
        self, texts: tuple[Positions, Positions], times_seen: int, *, prefixes: bool = True
    ) -> Doc:
        """``document`` of a title and an abstract already analyzed (they are only read).

        ``prefixes=False`` leaves out what scoring prefixes needs (``Doc.prefixed``): the
        leaves' ``spans`` find prefixed words without it.
        """
        stats = self.stats
        averages = (stats.avg_title_len, stats.avg_abstract_len)
        fields: list[Field] = []
        for i, pos in enumerate(texts):
            norm = 1.0 - B + B * len(pos.terms) / max(averages[i], 1.0)
            fld = Field(pos.terms, pos.surfaces, FIELD_WEIGHTS[i] / norm)
            for s, e, joined in pos.compounds:
                fld.add_span(joined, s, e)
            self.add_joins(fld)
            fields.append(fld)
        doc = Doc((fields[0], fields[1]), times_seen)
        if self.prefixes and prefixes:
            self._find_prefixes(doc)
        return doc

    def add_joins(self, fld: Field, *, again: bool = False) -> None:
        """Record the interests' words the field writes in two ("data set" for ``dataset``).

        ``again``: the field was analyzed before more interests were compiled; add only
        what is missing.
        """
        heads, joins, term, spans = self.join_heads, self.join_terms, self.analyzer.term, fld.spans
        surfaces = fld.surfaces
        for k in range(len(surfaces) - 1):
            if surfaces[k] in heads:
                joined = term(surfaces[k] + surfaces[k + 1])
                if joined in joins and not (again and (k, k + 1) in spans.get(joined, ())):
                    fld.add_span(joined, k, k + 1)

    def _find_prefixes(self, doc: Doc) -> None:
        prefixes, prefixed, term = self.prefixes, doc.prefixed, self.analyzer.term
        for f, fld in enumerate(doc.fields):
            for surface, count in Counter(fld.surfaces).items():
                for prefix in prefixes.get(surface[:PREFIX_KEY], ()):
                    if surface.startswith(prefix):
                        prefixed.setdefault(prefix, []).append((f, count, term(surface)))


def _idf_of(matcher: Matcher) -> float:
    assert isinstance(matcher, _WORDS)
    return matcher.idf


def _is_stopword(matcher: Matcher) -> bool:
    return isinstance(matcher, TermLeaf) and matcher.term in STOPWORDS


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
