"""Why a paper matched an interest: the words as the paper writes them, and in which fields.

The ranker asks only for the pairs (interest, paper) that made someone's list,
after the fan-out. Words are looked up through the positions the matcher already
keeps (``Field.positions``) and the paper's words as written, split once per
field, so an explanation costs a few dictionary lookups rather than a pass over
the text. In the multi-process path each worker explains the papers it analyzed.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

from digest.rank.doc import FIELDS, Doc, Evidence, Field
from digest.rank.highlight import HitMarks, Plan, evidence, located, plan_of
from digest.rank.leaves import AliasLeaf, Matcher, TermLeaf
from digest.rank.text import Analyzer

# An explanation without its score: (words as written, field names, and what to mark in the
# paper's title and abstract with the reason: ``highlight.evidence``, None if none).
Words = tuple[tuple[str, ...], tuple[str, ...], HitMarks | None]
NO_WORDS: Words = ((), (), None)


class Forms:
    """The written forms of one paper field's terms."""

    __slots__ = ("_chains", "_field", "_found", "_map", "_words")

    def __init__(self, text: str, fld: Field, analyzer: Analyzer) -> None:
        self._field = fld
        self._map: dict[str, set[str]] | None = None
        self._found: dict[str, list[str]] = {}
        split = analyzer.written(text)
        if split is None:  # not ASCII: the general (slower) path
            self._map = analyzer.surface_forms(text, fld.counts.keys() | fld.fixed.keys())
            self._words: list[str] = []
            self._chains: list[tuple[str, str]] = []
        else:
            self._words, self._chains = split

    def of(self, term: str) -> list[str]:
        """The forms of term in this field, sorted."""
        found = self._found.get(term)
        if found is not None:
            return found
        if self._map is not None:
            found = sorted(self._map.get(term, ()))
        else:
            words = self._words
            forms = {words[i] for i in self._field.positions().get(term, ())}
            for joined, piece in self._chains:
                if joined == term:
                    forms.add(piece)
            found = sorted(forms)
        self._found[term] = found
        return found


class Explainer:
    """Explanations for the papers ``papers[offset:offset + len(docs)]``, built on demand."""

    def __init__(
        self,
        matchers: Sequence[Matcher],
        texts: Sequence[tuple[str, str]],
        docs: Sequence[Doc],
        analyzer: Analyzer,
        offset: int = 0,
    ) -> None:
        self.matchers = matchers
        self.texts = texts  # (title, abstract) by paper index
        self.docs = docs
        self.analyzer = analyzer
        self.offset = offset
        self._forms: dict[tuple[int, int], Forms] = {}
        self._offsets: dict[tuple[int, int], list[tuple[int, int]] | None] = {}
        self._plans: dict[int, Plan] = {}
        self._located: dict[tuple[int, int], array[int] | None] = {}

    def words(self, qid: int, pidx: int) -> Words:
        """The words and fields by which interest ``qid`` matched paper ``pidx``, and what
        the paper's readers are shown marked for it.

        The matcher is evaluated over the paper once, and its evidence makes both the words
        said and the marks (it was evaluated once for each)."""
        doc = self.docs[pidx - self.offset]
        found: list[Evidence] = []
        matched = self.matchers[qid].evaluate(doc, found) is not None
        terms, fields = self._words(qid, pidx, doc, found)
        return terms, fields, self._marks(qid, pidx, doc, found) if matched else None

    def marks(self, qid: int, pidx: int) -> HitMarks | None:
        """What interest ``qid`` marks in paper ``pidx``: the evidence of the very matcher
        that ranked it (``highlight.evidence``), located in the paper's own text."""
        return self._marks(qid, pidx, self.docs[pidx - self.offset], None)

    def _marks(
        self, qid: int, pidx: int, doc: Doc, found: list[Evidence] | None
    ) -> HitMarks | None:
        plan = self._plans.get(qid)
        if plan is None:
            plan = self._plans[qid] = plan_of(self.matchers[qid])

        def where(f: int) -> array[int] | None:
            key = (pidx, f)
            if key not in self._located:
                self._located[key] = located(self.texts[pidx][f])
            return self._located[key]

        return evidence(plan, doc, where, found)

    def _words(
        self, qid: int, pidx: int, doc: Doc, found: list[Evidence]
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        matcher = self.matchers[qid]
        words: dict[str, None] = {}
        if isinstance(matcher, TermLeaf) and not any(matcher.term in f.spans for f in doc.fields):
            # One plain term, the commonest case: its own forms, field by field.
            term = matcher.term
            present = [f for f in matcher.fields if term in doc.fields[f].counts]
            for f in present:
                words.update(dict.fromkeys(self._field_forms(pidx, f, doc).of(term)))
            return tuple(words), tuple(FIELDS[f] for f in present)
        said: dict[tuple[int, str], AliasLeaf | None] = {}  # a word met again adds nothing
        for f, first, last, leaf in found:
            if isinstance(leaf, AliasLeaf):
                said[(f, self._alias(pidx, f, doc, leaf.written, first, last))] = leaf
            else:
                said.update(dict.fromkeys((f, t) for t in doc.fields[f].terms[first : last + 1]))
        for (f, term), alias in said.items():
            if alias is not None:
                words[term] = None
            else:
                words.update(dict.fromkeys(self._field_forms(pidx, f, doc).of(term)))
        return tuple(words), tuple(FIELDS[f] for f in sorted({f for f, *_ in found}))

    def _alias(self, pidx: int, f: int, doc: Doc, written: str, first: int, last: int) -> str:
        """An alias match said in words: "LLM, written as large language models"."""
        text = self.texts[pidx][f]
        offsets = self._offsets.get((pidx, f), ())
        if offsets == ():
            offsets = self._offsets[(pidx, f)] = self.analyzer.offsets(text)
        if offsets is None:  # text whose words cannot be located: its folded words
            said = " ".join(doc.fields[f].surfaces[first : last + 1])
        else:
            said = text[offsets[first][0] : offsets[last][1]]
        return f"{written}, written as {said}"

    def many(self, pairs: Sequence[tuple[int, int]]) -> list[Words]:
        """``words`` for each (interest id, paper index)."""
        # Paper by paper: a paper's analysis stays in the CPU cache (twice as fast).
        order = sorted(range(len(pairs)), key=lambda i: pairs[i][1])
        out: list[Words] = [NO_WORDS] * len(pairs)
        for i in order:
            out[i] = self.words(*pairs[i])
        return out

    def _field_forms(self, pidx: int, f: int, doc: Doc) -> Forms:
        forms = self._forms.get((pidx, f))
        if forms is None:
            text = self.texts[pidx][f]
            forms = self._forms[(pidx, f)] = Forms(text, doc.fields[f], self.analyzer)
        return forms
