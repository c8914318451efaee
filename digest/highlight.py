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

Matching is the ranker's own (``digest.matching`` over the shared analyzer), so
what is marked is what matched; scores are left out, marking needs none.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from digest.analysis import DEFAULT
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
from digest.matching import STOPWORDS, Compiler, Doc, PhraseLeaf, PrefixLeaf, Span, TermLeaf

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

    def doc_freq(self, term: str) -> int:
        return 0


@dataclass(frozen=True)
class _Hit:
    spans: list[Span]  # (field, first word, last word)
    reason: str


@functools.lru_cache(maxsize=4096)
def find_marks(title: str, abstract: str, interests: tuple[str, ...]) -> Marks:
    """What to mark in ``title`` and ``abstract`` for the interests that chose the paper."""
    if not interests:
        return Marks()
    compiler = Compiler(_Unweighted(), DEFAULT)
    queries: list[tuple[str, Node | None]] = []
    for written in interests:
        try:
            query = parse_interest(written).query
        except InterestError:  # saved under an older grammar: shown as written, marks nothing
            queries.append((written, None))
            continue
        compiler.compile(query)  # the joined words and prefixes the paper is analyzed for
        queries.append((written, query))
    walk = _Walk(compiler, compiler.document(title, abstract, 1))
    spans: list[Span] = []
    reasons: dict[str, str] = {}
    for written, parsed in queries:
        reason = written
        if parsed is not None:
            hit = walk.visit(parsed, together=False)
            if hit is None:  # the text changed since it was chosen
                reason = _plain(parsed)
            else:
                spans.extend(hit.spans)
                reason = hit.reason
        if reason:  # "model" and "models" are one reason, as they are one term
            reasons.setdefault(" ".join(DEFAULT(reason)) or reason.casefold(), reason)
    by_field: tuple[list[TextSpan], list[TextSpan]] = ([], [])
    for f, text in enumerate((title, abstract)):
        mine = [(first, last) for field, first, last in spans if field == f]
        offsets = DEFAULT.offsets(text) if mine else None
        if offsets is not None:
            by_field[f].extend((offsets[first][0], offsets[last][1]) for first, last in mine)
    return Marks(merge(by_field[0]), merge(by_field[1]), tuple(reasons.values()))


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

    def __init__(self, compiler: Compiler, doc: Doc) -> None:
        self.compiler = compiler
        self.doc = doc
        self._leaves: dict[Node, Leaf] = {}

    def leaf(self, node: Term | Phrase) -> Leaf:
        found = self._leaves.get(node)
        if found is None:
            matcher = self.compiler.compile(node)[0]
            assert isinstance(matcher, TermLeaf | PhraseLeaf | PrefixLeaf)
            found = self._leaves[node] = matcher
        return found

    def visit(self, node: Node, *, together: bool) -> _Hit | None:
        """What of ``node`` matched (None: it did not); ``together``: among other words."""
        if isinstance(node, Term | Phrase):
            leaf = self.leaf(node)
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
        if len(content) == 1:
            return self.visit(content[0], together=together)
        hits = [self.visit(item, together=True) for item in content]
        if any(hit is None for hit in hits):
            return None
        found = [hit for hit in hits if hit is not None]
        spans = [span for hit in found for span in hit.spans]
        near = self.compiler.proximity(node)
        if isinstance(near, TermLeaf | PhraseLeaf):
            side_by_side = near.spans(self.doc)
            fields = {f for f, _, _ in side_by_side}
            spans = side_by_side + [span for span in spans if span[0] not in fields]
        words = [item for item in positive if isinstance(item, Term) and not item.prefix]
        if len(words) == len(positive) and len({w.field for w in words}) == 1:
            reason = " ".join(w.word for w in words) + _where(words[0].field)
        else:
            reason = " and ".join(hit.reason for hit in found if hit.reason)
        return _Hit(spans, reason)

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
    """An interest in plain words when it no longer matches the paper's text."""
    if isinstance(node, Term):
        return node.word + ("…" if node.prefix else "") + _where(node.field)
    if isinstance(node, Phrase):
        return " ".join(node.words.split()) + _where(node.field)
    if isinstance(node, Without):
        return ""
    parts = [_plain(item) for item in node.items]
    return (", " if isinstance(node, AnyOf) else " ").join(p for p in parts if p)
