"""A paper analyzed once for matching: term counts per field, positions on demand.

A ``Doc`` holds a paper's two fields (title, abstract) as terms and surfaces, with the
BM25 length normalization folded into each field's factor, the joined spans of compounds
("self-supervised", "data set" for ``dataset``), the interest prefixes it carries and its
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

# What a matching leaf reports for explanations: (field index, term).
Found = list[tuple[int, str]] | None
# Where a word or phrase occurs: (field index, first position, last position).
Span = tuple[int, int, int]


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
