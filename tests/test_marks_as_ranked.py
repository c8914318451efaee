"""The email marks what the ranker matched: the evidence of the interest as the run compiled
it, with the store's acronyms and word variants, not a second matching without them."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

from digest.present.paper import PaperView, shown
from digest.present.views import paper_view
from digest.rank.ranker import search
from digest.rank.types import CorpusStats, PlainPaper, hits_to_json
from digest.store.papers import PaperRow
from tests.conftest import Site

READER = "reader@example.org"
# Two papers define LLM, so the store knows it; the third writes only the words.
PAPERS = [
    (
        "2603.00001",
        "Rescoring speech with text",
        "Large language models (LLMs) help rescore speech hypotheses in noise.",
    ),
    (
        "2603.00002",
        "Children's voices",
        "We adapt recognizers to children, where large language models (LLMs) fail.",
    ),
    (
        "2603.00003",
        "Speculative sampling on a budget",
        "We speed up large language models with a small draft and a cache.",
    ),
]


def _dump(path: Path) -> Path:
    path.write_text(
        json.dumps(
            [
                {
                    "paper": {"id": ident, "title": title, "summary": abstract},
                    "publishedAt": "2026-03-14T06:00:00.000Z",
                }
                for ident, title, abstract in PAPERS
            ]
        ),
        encoding="utf-8",
    )
    return path


def _paper_html(html: str, title: str) -> str:
    """The HTML of one paper's block in a digest (from its title to the next block)."""
    start = html.index(title)
    end = html.find('<div class="paper"', start)
    return html[start : end if end >= 0 else len(html)]


def test_an_acronym_the_ranker_matched_is_marked_in_the_email(site: Site, tmp_path: Path) -> None:
    site.subscribe({READER: ["LLM"]})
    assert site.cli("ingest", str(_dump(tmp_path / "day.json"))).code == 0
    result = site.cli("run", "--period", "2026-03-14")
    assert result.code == 0, result.err
    ((_, message),) = site.received()
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    block = _paper_html(html, "Speculative sampling on a budget")
    # The ranker found the paper by LLM's expansion: that is what the email marks, and says.
    marked = re.findall(r"<mark[^>]*>(.*?)</mark>", block)
    assert marked == ["large language models"]
    assert "Matched: LLM" in block


def test_a_view_marks_the_evidence_its_ranking_recorded() -> None:
    """Ranked with the store's statistics (LLM defined twice), the third paper's view marks
    the expansion; the same paper ranked without any acronym known is not found at all."""
    papers = [PlainPaper(n, title, abstract) for n, (_, title, abstract) in enumerate(PAPERS)]
    stats = CorpusStats.from_texts((p.title, p.abstract) for p in papers)
    (ranked,) = [r for r in search("LLM", papers, stats) if r.paper_id == 2]
    title, abstract = PAPERS[2][1:]
    row = PaperRow(2, "k", title, abstract, None, None, 1, datetime(2026, 3, 14, tzinfo=UTC))
    view = paper_view(row, ranked.score, json.loads(json.dumps(hits_to_json(ranked.hits))))
    text = shown(view)
    assert [text.abstract[s:e] for s, e in text.marks.abstract] == ["large language models"]
    assert text.marks.reasons == ("LLM",)
    # Without the recorded marks, the highlighter alone knows no acronym.
    plain = shown(PaperView("k", title, abstract, None, None, 1.0, ("LLM",)))
    assert plain.marks.abstract == ()
