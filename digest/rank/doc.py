"""A paper analyzed once for matching: term counts per field, positions on demand.

A ``Doc`` holds a paper's two fields (title, abstract) as terms and surfaces, with the
BM25 length normalization folded into each field's factor, the joined spans of compounds
("self-supervised", "data set" for ``dataset``), the fixed compounds whose words are not
words on their own ("part-of-speech"), the interest prefixes it carries and its
trending boost. The matchers in ``digest.rank.leaves`` read it; ``Compiler.document``
builds it.
"""

from __future__ import annotations

import math
from collections import Counter
from itertools import pairwise

K1 = 1.2
B = 0.75
FIELD_WEIGHTS = (3.0, 1.0)  # title, abstract: a word in the title says more about the paper
FIELDS = ("title", "abstract")
TRENDING_STEP = 0.05  # per doubling of times_seen
TRENDING_CAP = 0.15  # so trending never overturns a match more than 15% better

# Where a word or phrase occurs: (field index, first position, last position).
Span = tuple[int, int, int]
# What a matching leaf reports, the evidence explanations and marks are made of: where it
# matched (field index, first position, last position) and the leaf that matched there.
Evidence = tuple[int, int, int, object]
Found = list[Evidence] | None


class Field:
    """One field of one paper, analyzed for matching."""

    __slots__ = (
        "_bigrams", "_positions", "counts", "factor", "fixed", "inside", "spans", "surfaces",
        "terms", "units",
    )  # fmt: skip

    def __init__(self, terms: list[str], surfaces: list[str], factor: float) -> None:
        self.terms = terms
        self.surfaces = surfaces
        self.factor = factor  # field weight over BM25 length normalization
        # Words on their own: joined spans are counted in, words inside fixed compounds not.
        self.counts: dict[str, int] = Counter(terms)
        # Joined terms covering several positions: "self-supervised" → selfsupervis.
        self.spans: dict[str, list[tuple[int, int]]] = {}
        # Fixed compounds ("part-of-speech"): (first, last position, own words) of each, the
        # positions they cover, and each word inside one → (its position, the own words).
        self.units: list[tuple[int, int, frozenset[str]]] = []
        self.inside: frozenset[int] = frozenset()
        self.fixed: dict[str, list[tuple[int, frozenset[str]]]] = {}
        self._positions: dict[str, list[int]] | None = None
        self._bigrams: set[tuple[str, str]] | None = None

    def fix(self, units: list[tuple[int, int]], little: frozenset[str]) -> None:
        """Take the words of fixed compounds out of the words on their own.

        A unit's own words are its parts less the ``little`` ones that join them:
        {part, speech} for "part-of-speech", {end} for "end-to-end".
        """
        terms, counts, fixed = self.terms, self.counts, self.fixed
        inside: set[int] = set()
        for first, last in units:
            own = frozenset(t for t in terms[first : last + 1] if t not in little)
            for i in range(first, last + 1):
                term = terms[i]
                left = counts[term] - 1
                if left:
                    counts[term] = left
                else:
                    del counts[term]
                fixed.setdefault(term, []).append((i, own))
                inside.add(i)
            self.units.append((first, last, own))
        self.inside = frozenset(inside)

    def tally(self, term: str, company: frozenset[str]) -> int:
        """How often term occurs as a word for an interest with the words ``company``: on
        its own, or inside a fixed compound all of whose own words the interest has."""
        count = self.counts.get(term, 0)
        if company and term in self.fixed:
            count += sum(1 for _, own in self.fixed[term] if own <= company)
        return count

    def places(self, term: str, company: frozenset[str] = frozenset()) -> list[tuple[int, int]]:
        """``occurrences`` of term as a word for an interest with the words ``company``."""
        if term not in self.fixed:
            return self.occurrences(term)
        allowed = {i for i, own in self.fixed[term] if company and own <= company}
        inside = self.inside
        spans = [(p, p) for p in self.positions().get(term, ()) if p not in inside or p in allowed]
        return spans + self.spans.get(term, [])

    def cuts(self, first: int, last: int, words: frozenset[str] = frozenset()) -> bool:
        """Whether positions first..last take in part of a fixed compound, not all of it,
        and ``words`` (a phrase's) do not name it: "speech tagging" cuts "part-of-speech
        tagging", "code search" does not cut "code-to-code search"."""
        return any(
            first <= end and last >= start and (first > start or last < end) and not own <= words
            for start, end, own in self.units
        )

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
        """Spans (first, last position) where term occurs, plain or joined (fixed or not)."""
        spans = [(p, p) for p in self.positions().get(term, ())]
        return spans + self.spans.get(term, [])

    @staticmethod
    def report(index: int, span: tuple[int, int], found: list[Evidence], leaf: object) -> None:
        """Add where ``leaf`` matched (field ``index``, ``span``) to the evidence."""
        found.append((index, span[0], span[1], leaf))


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
