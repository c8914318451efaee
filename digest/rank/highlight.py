"""What a reader is shown of why a paper was chosen: the words to mark, and why in plain words.

The rule, for each of the reader's interests that matched the paper:

* A word or phrase that is the whole interest, or one of its alternatives
  (``speech``, ``"language model"``, ``llm OR "language model"``), is marked
  wherever it occurs in the fields the interest names, in every form the
  analyzer folds together (model/models, LLM/LLMs, self-supervised/self supervised).
* Words asked for together (``language model``: all of them, in any order) are
  marked where they stand side by side as the interest writes them. In a field
  where they never do, each is marked once, where it first occurs: what matters
  is that the paper has the word, not every place a common word turns up.
* Exclusions, and the little words an all-words interest does without ("for",
  "of"), are never marked.

Marks that overlap or touch are merged into one, so nothing is wrapped twice and
the text with the marks taken out is exactly the text given.

The reasons (the "Matched:" line) name what matched in the text shown: the words
of the interest, only the alternatives that matched, the words a prefix found,
with "(in the title)" for an interest kept to one field. An interest whose match
lies in the part of the abstract not shown is given in plain words ("llm or
language model", "words starting with diffus").

Matching is the ranker's own (``digest.rank.match`` over the shared analyzer), so
what is marked is what matched; scores are left out, marking needs none. Only the
text shown is analyzed, once per paper however many readers it reaches.
"""

from __future__ import annotations

import functools
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain

from markupsafe import Markup, escape

from digest.rank.doc import Doc, Span
from digest.rank.leaves import PhraseLeaf, PrefixLeaf, TermLeaf
from digest.rank.match import STOPWORDS, Compiler
from digest.rank.query import (
    AllOf,
    AnyOf,
    InterestError,
    Node,
    Phrase,
    Term,
    Without,
    parse_interest,
)
from digest.rank.text import DEFAULT

Leaf = TermLeaf | PhraseLeaf | PrefixLeaf
TextSpan = tuple[int, int]  # characters [start, end) of a text


@dataclass(frozen=True)
class Marks:
    """Where to mark a paper's title and abstract, and the reasons in plain words."""

    title: tuple[TextSpan, ...] = ()
    abstract: tuple[TextSpan, ...] = ()
    reasons: tuple[str, ...] = ()


class _Unweighted:
    """Corpus statistics of nothing: marking asks where words are, not what they are worth."""

    documents = 1
    avg_title_len = 1.0
    avg_abstract_len = 1.0
    frequencies: dict[str, int] = {}  # noqa: RUF012 (read only)
    acronyms: dict[str, tuple[tuple[str, ...], ...]] = {}  # noqa: RUF012 (read only)

    def doc_freq(self, term: str) -> int:
        return 0


@dataclass(frozen=True)
class _Hit:
    spans: list[Span]  # (field, first word, last word)
    reason: str


class _Paper:
    """A paper analyzed once for all its readers: its words, and where each stands."""

    __slots__ = ("_located", "doc", "generation", "texts")

    def __init__(self, texts: tuple[str, str], doc: Doc, generation: int) -> None:
        self.texts = texts
        self.doc = doc
        self.generation = generation  # of the joined words it was analyzed for
        self._located: list[array[int] | None] = []

    def located(self, f: int) -> array[int] | None:
        """Start and end of each word of field ``f``, one after the other (None: unknown)."""
        if not self._located:
            for text in self.texts:
                offsets = DEFAULT.offsets(text)
                flat = array("l", chain.from_iterable(offsets)) if offsets is not None else None
                self._located.append(flat)
        return self._located[f]


class _Interests:
    """Interests parsed and compiled once, whoever holds them, all into one compiler.

    One compiler, because a paper is analyzed for the joined words ("data set" for
    ``dataset``) its interests look for, and marking needs no scores. What an interest
    marks in a paper is kept (a paper reaches many readers who share interests), and so
    are the ``PAPERS`` papers analyzed last; one analyzed before an interest brought more
    joined words gets those added when next used. A long-running process starts afresh
    now and then, so what it keeps stays bounded.
    """

    LIMIT = 20_000
    PAPERS = 2048  # about 15 KB each (a title and the shown part of an abstract)
    MARKED = 200_000  # a few hundred bytes each

    def __init__(self) -> None:
        self.compiler = Compiler(_Unweighted(), DEFAULT)
        self.queries: dict[str, Node | None] = {}
        self.leaves: dict[tuple[Node, frozenset[str]], Leaf] = {}
        self.near: dict[AllOf, Leaf | None] = {}
        self.papers: dict[tuple[str, str], _Paper] = {}  # in order of use, oldest first
        self.generation = 0
        self.marked: dict[tuple[str, str, str], _Marked] = {}

    def marks(self, title: str, abstract: str, written: str) -> _Marked:
        """What the interest ``written`` marks in the paper."""
        key = (title, abstract, written)
        found = self.marked.get(key)
        if found is None:
            if len(self.marked) >= self.MARKED:
                self.marked.clear()
            found = self.marked[key] = self._marks_of(title, abstract, written)
        return found

    def _marks_of(self, title: str, abstract: str, written: str) -> _Marked:
        parsed = self.query(written)
        if parsed is None:
            return _Marked((), (), written, written.casefold())
        paper = self.paper(title, abstract)
        hit = _Walk(self, paper.doc).visit(parsed, together=False)
        if hit is None:  # what matched is not in the text shown: the interest in plain words
            reason = _plain(parsed)
            return _Marked((), (), reason, " ".join(DEFAULT(reason)))
        by_field: tuple[list[TextSpan], list[TextSpan]] = ([], [])
        for f in (0, 1):
            mine = [(first, last) for field, first, last in hit.spans if field == f]
            where = paper.located(f) if mine else None
            if where is not None:
                by_field[f].extend((where[2 * a], where[2 * b + 1]) for a, b in mine)
        says = " ".join(DEFAULT(hit.reason)) or hit.reason.casefold()
        return _Marked(tuple(by_field[0]), tuple(by_field[1]), hit.reason, says)

    def paper(self, title: str, abstract: str) -> _Paper:
        """The paper analyzed for every interest compiled so far."""
        key = (title, abstract)
        found = self.papers.pop(key, None)
        if found is None:
            texts = (DEFAULT.positions(title), DEFAULT.positions(abstract))
            doc = self.compiler.analyzed(texts, 1, prefixes=False)
            found = _Paper(key, doc, self.generation)
            if len(self.papers) >= self.PAPERS:
                del self.papers[next(iter(self.papers))]
        elif found.generation != self.generation:
            for fld in found.doc.fields:
                self.compiler.add_joins(fld, again=True)
            found.generation = self.generation
        self.papers[key] = found
        return found

    def query(self, written: str) -> Node | None:
        """The interest's parsed form (None: the grammar no longer takes it)."""
        if written not in self.queries:
            try:
                query: Node | None = parse_interest(written).query
            except InterestError:  # saved under an older grammar: shown as written, no marks
                query = None
            if query is not None:
                compiler = self.compiler
                joins = len(compiler.join_terms), len(compiler.join_heads)
                compiler.compile(query)
                if joins != (len(compiler.join_terms), len(compiler.join_heads)):
                    self.generation += 1
            self.queries[written] = query
        return self.queries[written]


@dataclass(frozen=True)
class _Marked:
    """What one interest marks in one paper, and why in plain words."""

    title: tuple[TextSpan, ...]
    abstract: tuple[TextSpan, ...]
    reason: str
    says: str  # the reason's terms: "model" and "models" say the same


_compiled = [_Interests()]


def _interests() -> _Interests:
    if len(_compiled[0].queries) >= _Interests.LIMIT:
        _compiled[0] = _Interests()
    return _compiled[0]


def prepare_marks(title: str, abstract: str, interests: Iterable[str]) -> None:
    """Work out ahead what each interest marks in the paper (``find_marks`` then finds it)."""
    compiled = _interests()
    for written in interests:
        compiled.marks(title, abstract, written)


@functools.lru_cache(maxsize=8192)  # a few hundred bytes each
def find_marks(title: str, abstract: str, interests: tuple[str, ...]) -> Marks:
    """What to mark in ``title`` and ``abstract`` (the text shown) for the interests that
    chose the paper, and the reasons."""
    if not interests:
        return Marks()
    compiled = _interests()
    title_spans: list[TextSpan] = []
    abstract_spans: list[TextSpan] = []
    reasons: dict[str, str] = {}
    for written in interests:
        found = compiled.marks(title, abstract, written)
        title_spans.extend(found.title)
        abstract_spans.extend(found.abstract)
        if found.reason:
            reasons.setdefault(found.says, found.reason)
    return Marks(merge(title_spans), merge(abstract_spans), tuple(reasons.values()))


def merge(spans: Sequence[TextSpan]) -> tuple[TextSpan, ...]:
    """Spans in order, those that overlap or touch made one."""
    out: list[TextSpan] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return tuple(out)


def mark(text: str, spans: Sequence[TextSpan], open_tag: str, close_tag: str) -> Markup:
    """``text`` escaped for HTML with each span wrapped in the tags (spans from ``merge``)."""
    # Escaped piece by piece: escaping first would shift the spans and could cut "&amp;".
    pieces: list[str] = []
    position = 0
    for start, end in spans:
        if start < position or end > len(text):
            continue
        pieces.append(str(escape(text[position:start])))
        pieces.append(open_tag + str(escape(text[start:end])) + close_tag)
        position = end
    pieces.append(str(escape(text[position:])))
    return Markup("".join(pieces))


class _Walk:
    """One paper: which parts of an interest matched it, where, and how to say so."""

    def __init__(self, interests: _Interests, doc: Doc) -> None:
        self.compiler = interests.compiler
        self.leaves = interests.leaves
        self.nearby = interests.near
        self.doc = doc

    def leaf(self, node: Term | Phrase, company: frozenset[str] = frozenset()) -> Leaf:
        """The node's matcher; ``company``: the words it stands among (``Compiler.company``)."""
        found = self.leaves.get((node, company))
        if found is None:
            matcher = self.compiler.compile(node, company)[0]
            assert isinstance(matcher, TermLeaf | PhraseLeaf | PrefixLeaf)
            found = self.leaves[(node, company)] = matcher
        return found

    def near(self, node: AllOf) -> Leaf | None:
        """The interest's loose words as the phrase they were written as, if they make one."""
        if node not in self.nearby:
            matcher = self.compiler.proximity(node)
            self.nearby[node] = matcher if isinstance(matcher, TermLeaf | PhraseLeaf) else None
        return self.nearby[node]

    def visit(
        self, node: Node, *, together: bool, company: frozenset[str] = frozenset()
    ) -> _Hit | None:
        """What of ``node`` matched (None: it did not); ``together``: among other words,
        ``company``."""
        if isinstance(node, Term | Phrase):
            leaf = self.leaf(node, company)
            spans = leaf.spans(self.doc)
            if not spans:
                return None
            if together and not isinstance(leaf, PhraseLeaf):
                spans = _first_in_each_field(spans)
            return _Hit(spans, self._reason(node, leaf, spans))
        if isinstance(node, AnyOf):
            hits = [hit for item in node.items if (hit := self.visit(item, together=together))]
            if not hits:
                return None
            return _Hit([span for hit in hits for span in hit.spans], _join(h.reason for h in hits))
        if isinstance(node, Without):
            return None
        return self._all(node, together)

    def _all(self, node: AllOf, together: bool) -> _Hit | None:
        positive = [item for item in node.items if not isinstance(item, Without)]
        content = [item for item in positive if not self._little(item)] or positive
        for item in node.items:
            if isinstance(item, Without) and self.visit(item.item, together=False):
                return None
        if not content:
            return _Hit([], "")
        company = self.compiler.company(node)
        if len(content) == 1:
            return self.visit(content[0], together=together, company=company)
        hits = [self.visit(item, together=True, company=company) for item in content]
        found = [hit for hit in hits if hit is not None]
        if len(found) < len(hits):
            return None
        return _Hit(self._side_by_side(node, found), _all_reason(positive, found))

    def _side_by_side(self, node: AllOf, found: list[_Hit]) -> list[Span]:
        """Where the words stand together as written; in the other fields, each word's own
        marks."""
        spans = [span for hit in found for span in hit.spans]
        near = self.near(node)
        if near is None:
            return spans
        side_by_side = near.spans(self.doc)
        fields = {f for f, _, _ in side_by_side}
        return side_by_side + [span for span in spans if span[0] not in fields]

    def _little(self, item: Node) -> bool:
        """A word an all-words interest does without ("for" in ``agents for science``)."""
        if not isinstance(item, Term | Phrase) or (isinstance(item, Term) and item.prefix):
            return False
        leaf = self.leaf(item)
        return isinstance(leaf, TermLeaf) and leaf.term in STOPWORDS

    def _reason(self, node: Term | Phrase, leaf: Leaf, spans: list[Span]) -> str:
        if isinstance(node, Phrase):
            return " ".join(node.words.split()) + _where(node.field)
        if isinstance(leaf, PrefixLeaf):  # the words it found, not the query's "diffus*"
            fields = self.doc.fields
            words = dict.fromkeys(fields[f].surfaces[first] for f, first, _ in sorted(spans))
            return _join(words) + _where(node.field)
        return node.word + _where(node.field)


def _all_reason(positive: Sequence[Node], found: list[_Hit]) -> str:
    """Loose words of one field said as the interest writes them, else the parts' reasons."""
    words = [item for item in positive if isinstance(item, Term) and not item.prefix]
    if len(words) == len(positive) and len({w.field for w in words}) == 1:
        return " ".join(w.word for w in words) + _where(words[0].field)
    return " and ".join(hit.reason for hit in found if hit.reason)


def _first_in_each_field(spans: list[Span]) -> list[Span]:
    first: dict[int, Span] = {}
    for span in sorted(spans):
        first.setdefault(span[0], span)
    return list(first.values())


def _where(field: str | None) -> str:
    return f" (in the {field})" if field else ""


def _join(reasons: Iterable[str]) -> str:
    return ", ".join(dict.fromkeys(r for r in reasons if r))


def _plain(node: Node) -> str:
    """An interest in plain words, for when what it matched is not in the text shown."""
    if isinstance(node, Term):
        word = f"words starting with {node.word}" if node.prefix else node.word
        return word + _where(node.field)
    if isinstance(node, Phrase):
        return " ".join(node.words.split()) + _where(node.field)
    if isinstance(node, Without):
        return ""
    parts = [part for part in map(_plain, node.items) if part]
    if isinstance(node, AnyOf):
        return " or ".join(parts)
    positive = [item for item in node.items if not isinstance(item, Without)]
    words = all(isinstance(item, Term) and not item.prefix for item in positive)
    return (" " if words else " and ").join(parts)
