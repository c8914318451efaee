"""What goes into the rank stage and what comes out of it.

A ``Profile`` (a reader's interests and limits) and papers (anything with the
``PaperText`` fields, such as a store row) go in with ``CorpusStats``; each
reader gets ``Ranked`` papers, each explained by one ``InterestHit`` per
matching interest. Hits are stored and printed as JSON through one codec
(``hits_to_json``, ``hits_from_json``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from digest.rank.acronyms import AcronymCounter, Acronyms
from digest.rank.explain import Words
from digest.rank.highlight import HitMarks
from digest.rank.match import Entry
from digest.rank.text import DEFAULT, Analyzer
from digest.store.subscription import Subscription, default, stored_interests

__all__ = [
    "SUMMED",
    "Answers",
    "CorpusStats",
    "Explain",
    "InterestHit",
    "Interests",
    "Key",
    "PaperText",
    "PlainPaper",
    "Profile",
    "Ranked",
    "TermCounts",
    "hits_from_json",
    "hits_to_json",
    "marks_from_json",
]

SUMMED = -1  # an entry summed over several interests, before its group is known
# What readers with the same answer share: (interest ids, max items, min score).
Key = tuple[tuple[int, ...], int, float]
# Explanations of (interest id, paper index) pairs.
Explain = Callable[[Sequence[tuple[int, int]]], list[Words]]


@dataclass(frozen=True, slots=True)
class Profile:
    """What the ranker reads of a reader: interests and limits, nothing else.

    A small read-only view rather than the subscriber itself: readers with the same view
    share their work (``Key``), a search ranks for no subscriber at all, and the matching
    hot path reads plain slots. A subscriber's profile is made in one place, ``of``.
    """

    id: int
    interests: tuple[str, ...]
    max_items: int = default("max_items")
    min_score: float = default("min_score")

    @classmethod
    def of(cls, subscriber: Subscription) -> Profile:
        """The profile of a subscriber."""
        return cls(subscriber.id, subscriber.interests, subscriber.max_items, subscriber.min_score)

    @classmethod
    def stored(cls, row: Any, decoded: dict[str, tuple[str, ...]]) -> Profile:
        """The profile ``of`` gives for a stored row (a ``Subscriber``, or a plain row of its
        columns), read straight off the row: planning reads every due reader's, and making
        each one's ``Subscription`` first cost more than the rest of reading them.
        ``decoded``: each distinct interests text, decoded once (readers share them)."""
        interests = decoded.get(row.interests)
        if interests is None:
            interests = decoded[row.interests] = stored_interests(row.interests)
        return cls(int(row.id or 0), interests, row.max_items, row.min_score)


class PaperText(Protocol):
    """A paper as the ranker sees it (a store row has these fields)."""

    @property
    def id(self) -> int: ...
    @property
    def title(self) -> str: ...
    @property
    def abstract(self) -> str: ...
    @property
    def times_seen(self) -> int: ...


@dataclass(frozen=True, slots=True)
class PlainPaper:
    """A ``PaperText`` made by hand (no store row at hand)."""

    id: int
    title: str
    abstract: str
    times_seen: int = 1


class Interests(Protocol):
    """What the fan-out needs of the compiled interests."""

    @property
    def texts(self) -> Sequence[str]:
        """Interest id → its text."""
        ...

    @property
    def profiles(self) -> Mapping[int, tuple[int, ...]]:
        """Profile id → its interest ids."""
        ...


class Answers(Protocol):
    """A day's top-k answers, as a worker process serves them."""

    @property
    def groups(self) -> list[tuple[int, ...]]:
        """The groups of interests named so far (summed entries refer to them)."""
        ...

    def prepare(self) -> None:
        """Build what every answer needs now rather than on first use."""

    def best(
        self,
        qids: Sequence[int],
        limit: int,
        min_score: float,
        allowed: Collection[int] | None = None,
    ) -> list[Entry]:
        """The exact top ``limit`` entries for a set of interests, scores summed."""
        ...


@dataclass(frozen=True, slots=True)
class InterestHit:
    """Why a paper matched one interest: words as written in the paper, and where;
    ``marks``: what its readers are shown marked, and the reason (``highlight.evidence``
    of the matcher that ranked it; None: not recorded)."""

    interest: str
    score: float
    terms: tuple[str, ...]
    fields: tuple[str, ...]
    marks: HitMarks | None = None


@dataclass(frozen=True, slots=True)
class Ranked:
    """A paper chosen for someone, with its score and one hit per matching interest;
    ``because``: the title of a paper they liked that this one was chosen for."""

    paper_id: int
    score: float
    hits: tuple[InterestHit, ...]
    because: str = ""


@dataclass(frozen=True)
class CorpusStats:
    """Store-wide term statistics: document count, mean field lengths, document frequencies,
    and the acronyms the papers define (``digest.rank.acronyms``)."""

    documents: int
    avg_title_len: float
    avg_abstract_len: float
    frequencies: Mapping[str, int] = field(default_factory=dict)
    acronyms: Acronyms = field(default_factory=dict)

    def doc_freq(self, term: str) -> int:
        """Number of documents containing term."""
        return self.frequencies.get(term, 0)

    @classmethod
    def from_texts(
        cls, papers: Iterable[tuple[str, str]], analyzer: Analyzer = DEFAULT
    ) -> CorpusStats:
        """Statistics of (title, abstract) pairs, counted the way the matcher sees them."""
        return TermCounts.of(papers, analyzer).stats()


@dataclass
class TermCounts:
    """What ``CorpusStats`` are made of, for some papers: counts that add up, so that parts
    of a sample can be counted apart (in processes of their own) and summed."""

    documents: int = 0
    title_terms: int = 0
    abstract_terms: int = 0
    frequencies: Counter[str] = field(default_factory=Counter)
    acronyms: Counter[tuple[str, tuple[str, ...]]] = field(default_factory=Counter)

    @classmethod
    def of(cls, papers: Iterable[tuple[str, str]], analyzer: Analyzer = DEFAULT) -> TermCounts:
        """The counts of (title, abstract) pairs, each paper's terms as the matcher sees
        them (a joined compound counts beside its parts)."""
        out = cls()
        counts = out.frequencies
        acronyms = AcronymCounter(analyzer)
        for title, abstract in papers:
            title_pos, abstract_pos = analyzer.positions(title), analyzer.positions(abstract)
            out.documents += 1
            acronyms.add(title, abstract)
            out.title_terms += len(title_pos.terms)
            out.abstract_terms += len(abstract_pos.terms)
            terms = set(title_pos.terms) | set(abstract_pos.terms)
            terms.update(joined for _, _, joined in title_pos.compounds)
            terms.update(joined for _, _, joined in abstract_pos.compounds)
            counts.update(terms)
        out.acronyms = acronyms.counts
        return out

    def __add__(self, other: TermCounts) -> TermCounts:
        return TermCounts(
            self.documents + other.documents,
            self.title_terms + other.title_terms,
            self.abstract_terms + other.abstract_terms,
            self.frequencies + other.frequencies,
            self.acronyms + other.acronyms,
        )

    def __sub__(self, other: TermCounts) -> TermCounts:
        """These counts less those of papers counted in them (``other``'s papers must be
        among these': a term none of the rest has is gone, as if never counted)."""
        return TermCounts(
            self.documents - other.documents,
            self.title_terms - other.title_terms,
            self.abstract_terms - other.abstract_terms,
            self.frequencies - other.frequencies,
            self.acronyms - other.acronyms,
        )

    def as_json(self) -> dict[str, Any]:
        """The counts as JSON values (``from_json`` reads them back the same)."""
        return {
            "documents": self.documents,
            "title_terms": self.title_terms,
            "abstract_terms": self.abstract_terms,
            "frequencies": self.frequencies,
            "acronyms": [[short, list(terms), n] for (short, terms), n in self.acronyms.items()],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TermCounts:
        return cls(
            int(data["documents"]),
            int(data["title_terms"]),
            int(data["abstract_terms"]),
            Counter(data["frequencies"]),
            Counter({(str(short), tuple(terms)): int(n) for short, terms, n in data["acronyms"]}),
        )

    def stats(self, analyzer: Analyzer = DEFAULT) -> CorpusStats:
        """The statistics these counts give."""
        n = max(self.documents, 1)
        acronyms = AcronymCounter(analyzer)
        acronyms.counts = self.acronyms
        return CorpusStats(
            self.documents,
            self.title_terms / n,
            self.abstract_terms / n,
            dict(self.frequencies),
            acronyms.pairs(),
        )


def _distinct(words: Iterable[str]) -> list[str]:
    """Each matched word once, as first written ("Federated" and "federated" are one)."""
    seen: dict[str, str] = {}
    for word in words:
        seen.setdefault(word.casefold(), word)
    return list(seen.values())


def hits_to_json(hits: Iterable[InterestHit]) -> list[dict[str, Any]]:
    """An explanation as stored and printed: interest, matched words, fields, score, and
    what to mark (``marks``: [field, start, end] characters of the title and abstract) with
    the reason said (``said``)."""
    out: list[dict[str, Any]] = []
    for hit in hits:
        row: dict[str, Any] = {
            "interest": hit.interest,
            "terms": _distinct(hit.terms),
            "fields": list(hit.fields),
            "score": round(hit.score, 4),
        }
        if hit.marks is not None:
            row["marks"] = [list(span) for span in hit.marks[0]]
            row["said"] = hit.marks[1]
        out.append(row)
    return out


def marks_from_json(row: Mapping[str, Any]) -> HitMarks | None:
    """A stored hit's marks and reason (``hits_to_json``); None when it has none."""
    if "said" not in row:
        return None
    spans: tuple[tuple[int, int, int], ...] = tuple(map(tuple, row.get("marks", ())))
    return spans, str(row["said"])


def hits_from_json(data: str | Sequence[Mapping[str, Any]]) -> tuple[InterestHit, ...]:
    """Hits back from what ``hits_to_json`` made (parsed, or as the stored JSON text); rows
    that are not hits (``{"liked": title}``, a reason from feedback) are left out."""
    rows = json.loads(data) if isinstance(data, str) else data
    return tuple(
        InterestHit(
            str(row["interest"]),
            float(row.get("score", 0.0)),
            tuple(row.get("terms", ())),
            tuple(row.get("fields", ())),
            marks_from_json(row),
        )
        for row in rows
        if "interest" in row
    )
