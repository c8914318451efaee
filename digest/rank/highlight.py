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

Matching is the ranker's own: the interest compiled by ``digest.rank.match`` is
evaluated over the paper, and what is marked is the evidence its leaves report (where
each matched), the reasons the words kept on those leaves. The ranker records both with
each explanation (``evidence``, through ``explain.Explainer``), from the very matcher that
ranked the paper, compiled with the store's acronyms and word variants; what is shown of
them is marked (``digest.present.paper.shown``). A paper whose ranking recorded nothing
(a view made by hand, an older outbox row) is marked by the same rules with an interest
compiled here, without the store's statistics (``marks_of``), analyzed once per paper
however many readers it reaches.
"""

from __future__ import annotations

import functools
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain

from markupsafe import Markup, escape

from digest.rank.doc import FIELDS, Doc, Evidence, Span
from digest.rank.leaves import (
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
from digest.rank.match import Compiler
from digest.rank.query import AnyOf, InterestError, Node, Phrase, Term, Without, parse_interest
from digest.rank.text import DEFAULT

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
            self._located = [located(text) for text in self.texts]
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
        self.queries: dict[str, tuple[Node, _Plan] | None] = {}
        self.papers: dict[tuple[str, str], _Paper] = {}  # in order of use, oldest first
        self.generation = 0
        self.marked: dict[tuple[str, str, str], Marked] = {}

    def marks(self, title: str, abstract: str, written: str) -> Marked:
        """What the interest ``written`` marks in the paper."""
        key = (title, abstract, written)
        found = self.marked.get(key)
        if found is None:
            if len(self.marked) >= self.MARKED:
                self.marked.clear()
            found = self.marked[key] = self._marks_of(title, abstract, written)
        return found

    def _marks_of(self, title: str, abstract: str, written: str) -> Marked:
        compiled = self.query(written)
        if compiled is None:
            return Marked((), (), written, written.casefold())
        _, plan = compiled
        paper = self.paper(title, abstract)
        found = evidence(plan, paper.doc, paper.located)
        if found is None:
            # What matched is not in the text: the interest in plain words.
            return Marked((), (), *said_as(plain_reason(written)))
        spans, reason = found
        by_field: tuple[list[TextSpan], list[TextSpan]] = ([], [])
        for f, start, end in spans:
            by_field[f].append((start, end))
        return Marked(tuple(by_field[0]), tuple(by_field[1]), *said_as(reason))

    def paper(self, title: str, abstract: str) -> _Paper:
        """The paper analyzed for every interest compiled so far."""
        key = (title, abstract)
        found = self.papers.pop(key, None)
        if found is None:
            texts = (DEFAULT.positions(title), DEFAULT.positions(abstract))
            doc = self.compiler.analyzed(texts, 1)
            found = _Paper(key, doc, self.generation)
            if len(self.papers) >= self.PAPERS:
                del self.papers[next(iter(self.papers))]
        elif found.generation != self.generation:
            for fld in found.doc.fields:
                self.compiler.add_joins(fld, again=True)
            found.doc.prefixed.clear()  # and the prefixes compiled since
            self.compiler.find_prefixes(found.doc)
            found.generation = self.generation
        self.papers[key] = found
        return found

    def query(self, written: str) -> tuple[Node, _Plan] | None:
        """The interest parsed and compiled (None: the grammar no longer takes it)."""
        if written not in self.queries:
            try:
                query: Node | None = parse_interest(written).query
            except InterestError:  # saved under an older grammar: shown as written, no marks
                query = None
            compiled = None
            if query is not None:
                compiler = self.compiler
                joins = len(compiler.join_terms), len(compiler.join_heads), compiler.prefix_count
                plan = _Plan(compiler.compile(query)[0])
                if joins != (
                    len(compiler.join_terms),
                    len(compiler.join_heads),
                    compiler.prefix_count,
                ):
                    self.generation += 1
                compiled = (query, plan)
            self.queries[written] = compiled
        return self.queries[written]


@dataclass(frozen=True)
class Marked:
    """What one interest marks in one paper (characters of its title and abstract), and
    why in plain words; no marks and the interest in plain words when it does not match."""

    title: tuple[TextSpan, ...]
    abstract: tuple[TextSpan, ...]
    reason: str
    says: str  # the reason's terms: "model" and "models" say the same


_compiled = [_Interests()]


def _interests() -> _Interests:
    if len(_compiled[0].queries) >= _Interests.LIMIT:
        _compiled[0] = _Interests()
    return _compiled[0]


# What one interest marks in a paper, as the ranker records it with its explanation:
# (field, first character, past the last) in the title and abstract the paper was analyzed
# from, and the reason in the interest's own words.
HitMarks = tuple[tuple[tuple[int, int, int], ...], str]


def plan_of(matcher: Matcher) -> Plan:
    """How a compiled interest's evidence is marked and said (one per matcher)."""
    return _Plan(matcher)


def located(text: str) -> array[int] | None:
    """Start and end of each word of ``text``, one after the other (None: unknown)."""
    offsets = DEFAULT.offsets(text)
    return array("l", chain.from_iterable(offsets)) if offsets is not None else None


def evidence(
    plan: Plan,
    doc: Doc,
    where: Callable[[int], array[int] | None],
    found: list[Evidence] | None = None,
) -> HitMarks | None:
    """What the compiled interest of ``plan`` marks in ``doc`` and why; None: no match.

    ``where(f)``: the words of field ``f`` located in its text (``located``). The marks are
    the evidence its leaves report, words asked together at their first place in each
    field; the reason, the words kept on the leaves that matched. ``found``: that evidence
    when the caller already evaluated the matcher over ``doc`` and it matched (the
    explanation's words are made of the same evidence); else it is evaluated here.
    """
    if found is None:
        found = []
        if plan.matcher.evaluate(doc, found) is None:
            return None
    spans = plan.spans(found)
    reason = _reason(plan.matcher, _used(found), doc)
    out: list[tuple[int, int, int]] = []
    for f in (0, 1):
        mine = [(first, last) for field, first, last in spans if field == f]
        at = where(f) if mine else None
        if at is not None:
            out.extend((f, at[2 * a], at[2 * b + 1]) for a, b in mine)
    return tuple(out), reason


@functools.lru_cache(maxsize=65_536)
def said_as(reason: str) -> tuple[str, str]:
    """A reason, and its terms: two reasons with the same terms say the same."""
    return reason, " ".join(DEFAULT(reason)) or reason.casefold()


@functools.lru_cache(maxsize=65_536)
def plain_reason(written: str) -> str:
    """An interest in plain words, for when what it matched is not in the text shown (as
    written when the grammar no longer takes it)."""
    try:
        query = parse_interest(written).query
    except InterestError:
        return written
    return _plain(query) if query is not None else written


def marks_of(title: str, abstract: str, written: str) -> Marked:
    """What the interest ``written`` marks in the paper, compiled without the store's
    statistics: for a paper whose ranking recorded no marks (``evidence`` did)."""
    return _interests().marks(title, abstract, written)


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
    # Text with none of what HTML escapes (most titles and abstracts) is cut as it is.
    as_html = _as_html if any(special in text for special in _HTML_SPECIAL) else str
    pieces: list[str] = []
    position = 0
    for start, end in spans:
        if start < position or end > len(text):
            continue
        pieces.append(as_html(text[position:start]))
        pieces.append(open_tag + as_html(text[start:end]) + close_tag)
        position = end
    pieces.append(as_html(text[position:]))
    return Markup("".join(pieces))


_HTML_SPECIAL = "&<>'\""  # what markupsafe's escape replaces


def _as_html(text: str) -> str:
    return str(escape(text))


class _Plan:
    """How one compiled interest's evidence is marked and said, worked out once from its
    matcher: which leaves stand among other required words (marked at their first place
    in each field), and each all-words group's "written side by side" leaf with its words.
    """

    __slots__ = ("groups", "matcher", "together")

    def __init__(self, matcher: Matcher) -> None:
        self.matcher = matcher
        self.together: set[int] = set()  # ids of leaves asked for among other words
        self.groups: list[tuple[object, frozenset[int]]] = []  # (side-by-side leaf, its words)
        self._look(matcher, together=False)

    def _look(self, matcher: object, *, together: bool) -> frozenset[int]:
        """Note what is asked together under ``matcher``; the ids of its leaves."""
        if isinstance(matcher, AllLeaves):
            among = together or len(matcher.required) >= 2
            parts = [self._look(m, together=among) for m in matcher.required]
            parts += [self._look(m, together=among) for m in matcher.variants or () if m]
            mine = frozenset().union(*parts)
            if matcher.bonus is not None:
                self.groups.append((matcher.bonus, mine))
            return mine
        if isinstance(matcher, AnyLeaves):
            return frozenset().union(*(self._look(m, together=together) for m in matcher.items))
        if isinstance(matcher, AliasLeaf):
            inner = self._look(matcher.primary, together=together)
            return inner | {id(matcher)}
        if isinstance(matcher, NotLeaf):
            return frozenset()
        if together and not isinstance(matcher, PhraseLeaf):
            self.together.add(id(matcher))
        return frozenset({id(matcher)})

    def spans(self, found: list[Evidence]) -> list[Span]:
        """The places to mark: the evidence, words asked together at their first place in
        each field, or where the group's words stand side by side as written."""
        side: dict[int, set[int]] = {}  # leaf id → fields where its group stands side by side
        for bonus, members in self.groups:
            fields = {f for f, _, _, leaf in found if leaf is bonus}
            for member in members:
                side.setdefault(member, set()).update(fields)
        out: list[Span] = []
        firsts: set[tuple[int, int]] = set()
        for f, first, last, leaf in sorted(found, key=lambda e: e[:3]):
            key = id(leaf)
            if f in side.get(key, ()):
                continue
            if key in self.together:
                if (key, f) in firsts:
                    continue
                firsts.add((key, f))
            out.append((f, first, last))
        return out


def _used(found: list[Evidence]) -> dict[int, list[Evidence]]:
    """The evidence by the id of the leaf that reported it."""
    by_leaf: dict[int, list[Evidence]] = {}
    for evidence in found:
        by_leaf.setdefault(id(evidence[3]), []).append(evidence)
    return by_leaf


def _reason(matcher: object, used: dict[int, list[Evidence]], doc: Doc) -> str:
    """What of ``matcher`` matched, in the interest's words kept on its leaves."""
    if isinstance(matcher, AnyLeaves):
        return _join(_reason(m, used, doc) for m in matcher.items)
    if isinstance(matcher, AllLeaves):
        parts = [m for m in (*matcher.required, *(matcher.variants or ())) if m is not None]
        if matcher.said and any(_reason(m, used, doc) for m in parts):
            return matcher.said
        return " and ".join(r for r in (_reason(m, used, doc) for m in parts) if r)
    if isinstance(matcher, AliasLeaf):
        inner = _reason(matcher.primary, used, doc)
        return inner or (matcher.written if id(matcher) in used else "")
    if isinstance(matcher, NotLeaf) or id(matcher) not in used:
        return ""
    if isinstance(matcher, PrefixLeaf | VariantLeaf):  # the words it found, not "diffus*"
        fields = doc.fields
        places = sorted(used[id(matcher)], key=lambda e: e[:3])
        words = dict.fromkeys(fields[f].surfaces[first] for f, first, _, _ in places)
        return _join(words) + _where(matcher.fields)
    assert isinstance(matcher, TermLeaf | PhraseLeaf)
    return matcher.said + _where(matcher.fields)


def _where(fields: tuple[int, ...]) -> str:
    return f" (in the {FIELDS[fields[0]]})" if len(fields) == 1 else ""


def _join(reasons: Iterable[str]) -> str:
    return ", ".join(dict.fromkeys(r for r in reasons if r))


def _plain(node: Node) -> str:
    """An interest in plain words, for when what it matched is not in the text shown."""
    if isinstance(node, Term):
        word = f"words starting with {node.word}" if node.prefix else node.word
        return word + _named(node.field)
    if isinstance(node, Phrase):
        return " ".join(node.words.split()) + _named(node.field)
    if isinstance(node, Without):
        return ""
    parts = [part for part in map(_plain, node.items) if part]
    if isinstance(node, AnyOf):
        return " or ".join(parts)
    positive = [item for item in node.items if not isinstance(item, Without)]
    words = all(isinstance(item, Term) and not item.prefix for item in positive)
    return (" " if words else " and ").join(parts)


def _named(field: str | None) -> str:
    return f" (in the {field})" if field else ""


Plan = _Plan
