"""An explanation's words and its marks come from one evaluation of the interest's matcher
over the paper: the same evidence as evaluating it for each apart, at half the work."""

from __future__ import annotations

from typing import Any

import pytest

from digest.rank import leaves
from digest.rank.doc import Doc
from digest.rank.index import InterestIndex
from digest.rank.types import CorpusStats, PlainPaper, Profile

PAPERS = [
    PlainPaper(1, "Large language models for speech", "We rescore speech with a language model."),
    PlainPaper(2, "Graph sampling", "Sampling large graphs with language-guided walks."),
    PlainPaper(3, "Speech in noise", "Robust speech recognition; no models of language here."),
]
INTERESTS = ('"language model" speech', "graph OR speech", "language model")


def _day() -> Any:
    stats = CorpusStats.from_texts([(p.title, p.abstract) for p in PAPERS])
    index = InterestIndex.build([Profile(1, INTERESTS, max_items=10, min_score=0.0)], stats)
    return index, index.match(PAPERS, 1)


def test_an_explanation_evaluates_its_matcher_once(monkeypatch: pytest.MonkeyPatch) -> None:
    index, day = _day()
    top = {id(matcher) for matcher in index._matchers}
    calls: list[tuple[int, int]] = []  # (top matcher, doc) of each evaluation for evidence
    for cls in (leaves.AllLeaves, leaves.AnyLeaves, leaves.TermLeaf, leaves.PhraseLeaf):
        evaluate = cls.evaluate

        def counted(self: Any, doc: Doc, found: Any, _evaluate: Any = evaluate) -> Any:
            if found is not None and id(self) in top:
                calls.append((id(self), id(doc)))
            return _evaluate(self, doc, found)

        monkeypatch.setattr(cls, "evaluate", counted)
    ranked = day.ranked(Profile(1, INTERESTS, max_items=10, min_score=0.0))
    hits = {id(hit) for item in ranked for hit in item.hits}
    assert len(hits) >= 4  # several interests, several papers: something was explained
    assert len(calls) == len(hits)  # once each, not once for the words and again for marks


def test_the_marks_are_those_of_evaluating_for_them_alone() -> None:
    index, day = _day()
    ranked = day.ranked(Profile(1, INTERESTS, max_items=10, min_score=0.0))
    explainer = day._explain.__self__  # the Explainer behind the in-process day
    qids = {text: qid for qid, text in enumerate(index.texts)}
    pidx = {paper.id: i for i, paper in enumerate(sorted(PAPERS, key=lambda p: p.id))}
    checked = 0
    for item in ranked:
        for hit in item.hits:
            assert hit.marks is not None
            assert hit.marks == explainer.marks(qids[hit.interest], pidx[item.paper_id])
            checked += 1
    assert checked >= 4
