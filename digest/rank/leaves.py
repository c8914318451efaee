"""The matchers an interest compiles to: each scores a ``Doc``, BM25F-style, or says no.

Each matcher returns a score, or ``None`` when the paper does not match; given a
``found`` list it also reports its evidence: where each leaf matched, the one record both
explanations and marks are made of. Words, phrases and
prefixes are the leaves; ``AllLeaves`` (every word, softly), ``AnyLeaves`` and
``NotLeaf`` combine them; ``AliasLeaf`` widens words to the acronym they stand for, or
back. ``digest.rank.match`` builds them.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Protocol

from digest.rank.doc import Doc, Evidence, Field, Found, Span, saturate

# An acronym's expansion counts as the acronym, a little less ("LLM" over "large language
# model" when a paper writes one and not the other), and the other way round.
ALIAS_WEIGHT = 0.8
# Soft conjunction: all the words but one, and a close variant of that one, score this share.
SOFT = 0.5
# An acronym also meets the last words of its expansion ("speech recognition" for
# ASR) at this share, below a paper that writes the acronym or the whole expansion.
TAIL_WEIGHT = 0.5
# An interest's words met only in the abstract, none of them within ``NEAR`` words of the
# first one, say less than words written together or in the title: such a match scores this
# share ("code ... generation" in an abstract on something else).
SCATTERED = 0.5
NEAR = 4


class Matcher(Protocol):
    """A compiled interest or part of one."""

    def evaluate(self, doc: Doc, found: Found) -> float | None: ...


class TermLeaf:
    """One term, in some fields; inside fixed compounds only when ``company`` names them.

    ``company``: the words of the interest the term stands among (``Compiler.company``);
    ``said``: the word as the interest writes it, for the "Matched:" line.
    """

    __slots__ = ("company", "fields", "idf", "in_abstract", "in_title", "said", "term")

    def __init__(
        self,
        term: str,
        fields: tuple[int, ...],
        idf: float,
        company: frozenset[str] = frozenset(),
    ) -> None:
        self.term, self.fields, self.idf = term, fields, idf
        self.company = company
        self.in_title, self.in_abstract = 0 in fields, 1 in fields
        self.said = term

    def weighted(self, tf_title: int, tf_abstract: int, doc: Doc) -> float | None:
        """The score of the term occurring so many times in doc's title and abstract."""
        x = 0.0
        if tf_title and self.in_title:
            x += tf_title * doc.fields[0].factor
        if tf_abstract and self.in_abstract:
            x += tf_abstract * doc.fields[1].factor
        return saturate(self.idf, x) if x else None

    def evaluate(self, doc: Doc, found: Found) -> float | None:
        term, company = self.term, self.company
        title, abstract = doc.fields
        if company:
            score = self.weighted(title.tally(term, company), abstract.tally(term, company), doc)
        else:
            score = self.weighted(title.counts.get(term, 0), abstract.counts.get(term, 0), doc)
        if score is not None and found is not None:
            for f in self.fields:
                fld = doc.fields[f]
                for span in fld.places(term, company):
                    fld.report(f, span, found, self)
        return score

    def spans(self, doc: Doc) -> list[Span]:
        """Where the term occurs (for marking it in the text)."""
        term, company = self.term, self.company
        return [(f, *span) for f in self.fields for span in doc.fields[f].places(term, company)]

    def frequency(self, doc: Doc) -> float:
        """The field-weighted number of times the term occurs (0.0: never)."""
        term, company = self.term, self.company
        return sum(doc.fields[f].tally(term, company) * doc.fields[f].factor for f in self.fields)


class PhraseLeaf:
    """Words in sequence; ``variants`` spell compounds both split and joined; ``said``: the
    words as the interest writes them."""

    __slots__ = ("fields", "idf", "said", "variants")

    def __init__(self, variants: list[list[str]], fields: tuple[int, ...], idf: float) -> None:
        self.variants, self.fields, self.idf = variants, fields, idf
        self.said = " ".join(variants[0])

    def evaluate(self, doc: Doc, found: Found) -> float | None:
        x = 0.0
        for f in self.fields:
            fld = doc.fields[f]
            best = self._best(fld)
            if best:
                x += len(best) * fld.factor
                if found is not None:
                    for span in best:
                        fld.report(f, span, found, self)
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
    counts, spans, fixed = fld.counts, fld.spans, fld.fixed
    if any(word not in counts and word not in fixed for word in words):
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
    if fld.units:  # "speech tagging" is not in "part-of-speech tagging"
        named = frozenset(words)
        return [(s, e) for s, e in open_spans if not fld.cuts(s, e, named)]
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
            if surface.startswith(prefix) and i not in doc.fields[f].inside
        ]

    def _explain(self, doc: Doc, found: list[Evidence]) -> float | None:
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
            surfaces, positions, inside = fld.surfaces, fld.positions(), fld.inside
            at = sorted(
                i
                for term in terms
                for i in positions[term]
                if surfaces[i].startswith(prefix) and i not in inside
            )
            for term in terms:
                idf = min(idf, self.idf_of(term))  # "diffus*" is no rarer than diffusion
            found.extend((f, i, i, self) for i in at)
            x += len(at) * fld.factor
        return saturate(idf, x) if x else None


class AllLeaves:
    """Every required item, none of the excluded ones; ``bonus`` rewards words written as a phrase.

    ``variants`` (one per required item, or ``None``) make the conjunction soft: a paper
    missing one required item that has a close variant of it, and one of the others in its
    title, still matches, at ``SOFT`` times the score of what it has. Up to ``lack`` of the
    ``spare`` items (in interests of three words or more, all but the ``KEEP`` rarest) may be
    missing too, with no variant at all.

    ``apart``: the required items again, when they are all words, phrases or prefixes: a
    match that has them all in the abstract only, scattered (``scattered``), scores
    ``SCATTERED`` of what they give. Empty: no such check.

    ``said``: loose words of one field as the interest writes them ("agents for science"),
    for the "Matched:" line; empty for other groups, said part by part.
    """

    __slots__ = (
        "apart", "bonus", "excluded", "lack", "order", "required", "said", "spare", "variants",
    )  # fmt: skip

    def __init__(
        self,
        required: list[Matcher],
        excluded: list[Matcher],
        bonus: Matcher | None = None,
        variants: list[Matcher | None] | None = None,
        order: list[int] | None = None,
        spare: frozenset[int] = frozenset(),
        lack: int = 0,
        *,
        apart: Sequence[TermLeaf | PhraseLeaf | PrefixLeaf] = (),
    ) -> None:
        self.required, self.excluded, self.bonus = required, excluded, bonus
        self.apart = apart
        self.said = ""
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
        kept = 0 if found is None else len(found)  # evidence of a failed match is taken back
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
                    return _failed(found, kept)
                soft = True
            total += score
        for item in self.excluded:
            if item.evaluate(doc, None) is not None:
                return _failed(found, kept)
        if soft:
            return SOFT * total if self._titled(doc) else _failed(found, kept)
        if self.bonus is not None:
            written = self.bonus.evaluate(doc, found)
            if written is not None:  # side by side somewhere: not scattered
                return total + written
        if self.apart and scattered(self.apart, doc):
            total *= SCATTERED
        return total

    def _titled(self, doc: Doc) -> bool:
        """Whether the title has one of the words: a soft match must be about them."""
        seen: list[Evidence] = []
        for item in self.required:
            item.evaluate(doc, seen)
        return any(evidence[0] == 0 for evidence in seen)


def _failed(found: Found, kept: int) -> float | None:
    """No match (None): the evidence reported since ``kept`` was not used."""
    if found is not None:
        del found[kept:]
    return None


def scattered(items: Sequence[TermLeaf | PhraseLeaf | PrefixLeaf], doc: Doc) -> bool:
    """Whether items all occur in the abstract only, and nowhere do all the others stand
    within ``NEAR`` words of the first."""
    title, abstract = doc.fields
    for item in items:  # a word in the title, the commonest way out, costs one look-up
        if isinstance(item, TermLeaf) and item.in_title and item.term in title.counts:
            return False
    positions = abstract.positions()
    starts: list[Sequence[int]] = []
    for item in items:
        at: Sequence[int]
        if isinstance(item, TermLeaf) and (item.company or abstract.units):
            spans = item.spans(doc)
            if any(f == 0 for f, _, _ in spans):
                return False
            at = sorted(first for _, first, _ in spans)
        elif isinstance(item, TermLeaf):
            at = positions.get(item.term, ()) if item.in_abstract else ()
            joined = abstract.spans.get(item.term)
            if joined:
                at = sorted([*at, *(first for first, _ in joined)])
        else:
            spans = item.spans(doc)
            if any(f == 0 for f, _, _ in spans):
                return False
            at = sorted(first for _, first, _ in spans)
        starts.append(at)
    first, others = starts[0], starts[1:]
    for i in first:
        for other in others:  # the nearest place at or after i - NEAR, if within i + NEAR
            j = bisect_left(other, i - NEAR)
            if j == len(other) or other[j] > i + NEAR:
                break
        else:
            return False
    return True


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
                        for span in fld.places(term):
                            fld.report(f, span, found, self)
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
            found.extend((*span, self) for alias in leaves for span in alias.spans(doc))
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
WORDS = (TermLeaf, PhraseLeaf, AliasLeaf)
