"""Compiled interests: an interest's AST turned into matchers, and papers into ``Doc``s.

An interest's AST becomes a tree of the small matchers of ``digest.rank.leaves`` over a
``Doc`` (``digest.rank.doc``), widened by the acronyms mined from the store and by the
words' close variants (the soft conjunction). The ``Compiler`` also picks each
interest's *anchor*: the rarest term (or prefix) a match cannot do without, which is
what the index in ``digest.rank.index`` keys interests by.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from typing import Protocol

from digest.rank.acronyms import Acronyms
from digest.rank.doc import FIELD_WEIGHTS, FIELDS, B, Doc, Field
from digest.rank.leaves import (
    WORDS,
    AliasLeaf,
    AllLeaves,
    AnyLeaves,
    Matcher,
    NotLeaf,
    PhraseLeaf,
    PrefixLeaf,
    TermLeaf,
    VariantLeaf,
)
from digest.rank.query import AllOf, AnyOf, Node, Phrase, Term, Without
from digest.rank.text import LINKING, Analyzer, Positions, inflected

# Dropped from all-words interests ("agents for science"), kept in phrases.
_STOPWORDS_WORDS = "a an and are as at by for from in is of on or the to via with"
STOPWORDS = frozenset(_STOPWORDS_WORDS.split())
_MIN_JOIN = 5  # shortest interest word we also look for split in two ("data set")
# Prefixes are looked up by their first letters; the parser refuses prefixes shorter than this.
PREFIX_KEY = 3
# A soft match may also lack one in so many of an interest's words outright, never its
# ``KEEP`` rarest: "decoding methods for large language models" needs two of its three.
SPARE_PER = 3
KEEP = 2
_VARIANT_MIN = 5  # shorter words have no variants ("model" would meet "modeled")


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


# A match in an interest's list: (score, -paper index, interest id). Papers are indexed in
# id order, so sorting these in reverse gives best first with ties to the lower paper id.
Entry = tuple[float, int, int]

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
        self.prefix_count = 0  # how many prefixes: a Doc analyzed before a new one lacks it
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

    def compile(
        self, node: Node, company: frozenset[str] = frozenset()
    ) -> tuple[Matcher, Anchors | None]:
        """A node's matcher and anchors (``None``: it cannot anchor, like an exclusion).

        ``company``: the words of the all-words interest the node stands in (``company``).
        """
        if isinstance(node, Term):
            fields = _scope(node.field)
            if node.prefix:
                prefix = self.analyzer.positions(node.word).surfaces[0]
                known = self.prefixes.setdefault(prefix[:PREFIX_KEY], [])
                if prefix not in known:
                    known.append(prefix)
                    self.prefix_count += 1
                # Unknown breadth: a prefix anchors only when nothing rarer is required.
                cost = self.documents * 0.05 + 1.0
                return PrefixLeaf(prefix, fields, self.idf), (cost, [("p", prefix)])
            return self.aliased(node.word, fields, *self.said(node.word, fields, company))
        if isinstance(node, Phrase):
            fields = _scope(node.field)
            return self.aliased(node.words, fields, *self.said(node.words, fields))
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

    def company(self, node: AllOf) -> frozenset[str]:
        """The words of an all-words interest that let its words meet inside fixed compounds.

        A word inside "mixture-of-experts" is no word on its own, but an interest that has
        all of the compound's own words (``mixture of experts``, ``end to end``) names it.
        Two words at least: a lone ``end`` must not meet "end-to-end".
        """
        words = [
            term
            for item in node.items
            if isinstance(item, Term) and not item.prefix
            for term in self.analyzer.positions(item.word).terms
            if term not in STOPWORDS
        ]
        return frozenset(words) if len(words) >= 2 else frozenset()

    def _all(self, node: AllOf) -> tuple[Matcher, Anchors | None]:
        company = self.company(node)
        required, excluded = self._parts(node, company)
        content = [(m, a) for m, a in required if not _is_stopword(m)]
        required = content or required
        soft = [self.variant(m) for m, _ in content] if len(content) >= 2 else []
        variants = [None if v is None else v[0] for v in soft] if any(soft) else None
        spare, lack = _spare(content)
        rarest = min(range(len(required)), key=lambda i: required[i][1][0], default=None)
        best = None if rarest is None else required[rarest][1]
        if rarest is not None and best is not None and variants is not None:
            # A soft match may lack the rarest item: it then has one of its variants.
            variant = soft[rarest]
            if variant is not None:
                best = (best[0] + variant[1][0], best[1] + variant[1][1])
        order = sorted(range(len(required)), key=lambda i: (i == rarest, required[i][1][0]))
        items = [m for m, _ in required]
        spanned = [m for m in items if isinstance(m, TermLeaf | PhraseLeaf | PrefixLeaf)]
        apart = spanned if len(items) >= 2 and len(spanned) == len(items) else []
        group = AllLeaves(
            items, [], self.proximity(node), variants, order, spare, lack, apart=apart
        )
        if len(content) >= 2:
            group.said = _loose(node)
        matcher: Matcher = group
        if best is not None:
            matcher, best = self._all_aliased(node, matcher, best)
        if isinstance(matcher, AllLeaves):
            matcher.excluded = excluded
        elif excluded:  # the acronym, as the words, must come without what is excluded
            matcher = AllLeaves([matcher], excluded)
        return matcher, best

    def _parts(
        self, node: AllOf, company: frozenset[str]
    ) -> tuple[list[tuple[Matcher, Anchors]], list[Matcher]]:
        """An all-words interest's required items (an acronym's expansion among them as
        one) and its excluded ones."""
        required: list[tuple[Matcher, Anchors]] = []
        excluded: list[Matcher] = []
        run = self._expansion_run(node)
        for i, item in enumerate(node.items):
            if run is not None and run[0] <= i < run[1]:
                if i == run[0]:  # "large language model decoding": the first three, or LLM
                    required.append(self._run(node.items[run[0] : run[1]], company))
                continue
            if isinstance(item, Without):
                excluded.append(self.compile(item.item)[0])
                continue
            part, anchors = self.compile(item, company)
            if anchors is not None:
                required.append((part, anchors))
        return required, excluded

    def _all_aliased(self, node: AllOf, matcher: Matcher, best: Anchors) -> tuple[Matcher, Anchors]:
        """Loose words of one field that are an acronym's expansion, or an acronym, widened
        to the other spelling as a whole."""
        words = [item for item in node.items if isinstance(item, Term) and not item.prefix]
        positive = [item for item in node.items if not isinstance(item, Without)]
        if len(words) != len(positive) or len(words) < 2 or len({w.field for w in words}) != 1:
            return matcher, best
        written = " ".join(w.word for w in words)
        return self.aliased(written, _scope(words[0].field), matcher, best)

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

    def _run(self, items: tuple[Node, ...], company: frozenset[str]) -> tuple[Matcher, Anchors]:
        """Words that spell an acronym's expansion, as one required item that it also meets."""
        parts = [self.compile(item, company) for item in items]
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
            return self._alias_variant(matcher)
        if not isinstance(matcher, TermLeaf):
            return None
        term = matcher.term
        if len(term) < _VARIANT_MIN or not term.isalpha():
            return None
        found = [other for other in self.heads().get(inflected(term), ()) if other != term]
        if not found:
            return None
        cost = float(sum(self.df(other) for other in found))
        return VariantLeaf(found, matcher.fields, matcher.idf), (cost, [("t", t) for t in found])

    def heads(self) -> dict[str, list[str]]:
        """The store's words (long enough to have variants) by their inflection's head."""
        if self._heads is None:
            heads: dict[str, list[str]] = {}
            for known in self.stats.frequencies:
                if len(known) >= _VARIANT_MIN and known.isalpha():
                    heads.setdefault(inflected(known), []).append(known)
            self._heads = heads
        return self._heads

    def _alias_variant(self, matcher: AliasLeaf) -> tuple[Matcher, Anchors] | None:
        """An acronym's (or its expansion's) variant: the expansion less its first word."""
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

    def said(
        self, text: str, fields: tuple[int, ...], company: frozenset[str] = frozenset()
    ) -> tuple[Matcher, Anchors]:
        """``words`` of an interest, the leaf keeping them as written for "Matched:"."""
        leaf, anchors = self.words(text, fields, company)
        assert isinstance(leaf, TermLeaf | PhraseLeaf)
        leaf.said = " ".join(text.split())
        return leaf, anchors

    def words(
        self, text: str, fields: tuple[int, ...], company: frozenset[str] = frozenset()
    ) -> tuple[Matcher, Anchors]:
        """A word (a term leaf) or several (a phrase leaf with its spellings)."""
        pos = self.analyzer.positions(text)
        covered = {i for s, e, _ in pos.compounds for i in range(s, e + 1)}
        for i, surface in enumerate(pos.surfaces):
            if i not in covered and len(surface) >= _MIN_JOIN:
                self._join_target(surface, pos.terms[i])
        if len(pos.terms) == 1:
            term = pos.terms[0]
            leaf = TermLeaf(term, fields, self.idf(term), company)
            return leaf, (self.df(term), [("t", term)])
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
            if pos.fixed:
                fld.fix(pos.fixed, LINKING)
            self.add_joins(fld)
            fields.append(fld)
        doc = Doc((fields[0], fields[1]), times_seen)
        if self.prefixes and prefixes:
            self.find_prefixes(doc)
        return doc

    def add_joins(self, fld: Field, *, again: bool = False) -> None:
        """Record the interests' words the field writes in two ("data set" for ``dataset``).

        ``again``: the field was analyzed before more interests were compiled; add only
        what is missing.
        """
        heads, joins, term, spans = self.join_heads, self.join_terms, self.analyzer.term, fld.spans
        surfaces = fld.surfaces
        for k in range(len(surfaces) - 1):
            if surfaces[k] in heads and not (fld.units and fld.cuts(k, k + 1)):
                joined = term(surfaces[k] + surfaces[k + 1])
                if joined in joins and not (again and (k, k + 1) in spans.get(joined, ())):
                    fld.add_span(joined, k, k + 1)

    def find_prefixes(self, doc: Doc) -> None:
        """Note the interests' prefixes the paper's words start with (``Doc.prefixed``)."""
        prefixes, prefixed, term = self.prefixes, doc.prefixed, self.analyzer.term
        for f, fld in enumerate(doc.fields):
            surfaces = fld.surfaces
            if fld.inside:  # words inside fixed compounds are no words of their own
                surfaces = [s for i, s in enumerate(surfaces) if i not in fld.inside]
            for surface, count in Counter(surfaces).items():
                for prefix in prefixes.get(surface[:PREFIX_KEY], ()):
                    if surface.startswith(prefix):
                        prefixed.setdefault(prefix, []).append((f, count, term(surface)))


def _loose(node: AllOf) -> str:
    """Loose words of one field said as the interest writes them ("" when it has more)."""
    words = [item for item in node.items if isinstance(item, Term) and not item.prefix]
    positive = [item for item in node.items if not isinstance(item, Without)]
    if len(words) != len(positive) or len({w.field for w in words}) != 1:
        return ""
    where = f" (in the {words[0].field})" if words[0].field else ""
    return " ".join(w.word for w in words) + where


def _spare(content: list[tuple[Matcher, Anchors]]) -> tuple[frozenset[int], int]:
    """The items a soft match may lack outright, and how many of them at most: the
    commonest words say least about an interest."""
    plain = sorted(
        (i for i, (m, _) in enumerate(content) if isinstance(m, WORDS)),
        key=lambda i: _idf_of(content[i][0]),
    )
    lack = len(content) // SPARE_PER
    return frozenset(plain[: max(len(plain) - KEEP, 0)] if lack else ()), lack


def _idf_of(matcher: Matcher) -> float:
    assert isinstance(matcher, WORDS)
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
