"""Ranking quality on judged sets: every paper of some listing dumps graded per profile.

The main set, ``judged/judgments.json``, grades the papers of the two real dumps in
``../shared/dumps`` (a paper not listed: 0) for 30 profiles (acronyms alone, verbose, hyphenated, several
interests); it runs when that folder is beside the repo. A small set,
``judged/examples.json``, grades the 18 papers of ``examples/dumps`` for the 11 of those
profiles that have relevant papers among them; it always runs, through the same code.
Grades are 2 relevant, 1 partly, 0 not. We report nDCG@10 (gain 2^grade - 1),
precision@10 (relevant = grade >= 1) and the F1 of the delivered set (what a digest of at
most 50 items sends, against the papers graded 1 or 2) for our ranking and three
baselines, per profile and as means over all profiles, the half the ranking was tuned on
and the half held out (and, within it, the profiles judged last); and check that ours stays ahead. ``pytest -s`` prints the tables.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from rank_bm25 import BM25Okapi

from digest.ingest.identity import normalize_title
from digest.rank import ranker
from digest.rank.text import Analyzer
from digest.rank.types import CorpusStats, PlainPaper, Profile
from tests.conftest import EXAMPLE_A, EXAMPLE_B, EXAMPLE_DUMPS, REAL_A, REAL_B

JUDGED = Path(__file__).resolve().parent / "judged"
K = 10
DELIVERED = 50  # the most a digest sends in these measures

Ranker = Callable[[Sequence[str]], list[int]]  # interests → paper indices, best first


def _layout_a(text: str) -> list[tuple[str, str]]:
    lines = text.splitlines()[2:]
    lines[0] = lines[0].removeprefix("Subscribe")
    return list(zip(lines[0::2], lines[1::2], strict=False))


def _layout_b(text: str) -> list[tuple[str, str]]:
    lines = [line for line in text.splitlines() if line.strip()][5:]
    return list(zip(lines[0::2], lines[1::2], strict=False))


@dataclass(frozen=True)
class Targets:
    """What ours must reach, in mean nDCG@K and delivered-set F1, and its lead over the best
    baseline in each."""

    ndcg: float
    f1: float
    lead_ndcg: float | None  # None: reported, not required
    lead_f1: float


@dataclass(frozen=True)
class JudgedSet:
    """Dumps in listing order with the reading of each, their judgments, what to expect."""

    dumps: tuple[tuple[Path, Callable[[str], list[tuple[str, str]]]], ...]
    judgments: Path
    papers: int  # distinct papers, worked out from the raw files
    profiles: int  # at least
    targets: Targets


SETS = [
    pytest.param(
        JudgedSet(
            (
                (EXAMPLE_A, _layout_a),
                (EXAMPLE_B, _layout_b),
                (EXAMPLE_DUMPS / "daily-mar13-layout-b.txt", _layout_b),
            ),
            JUDGED / "examples.json",
            # 10, 9 and 8 titles; 3 of mar12 are in A, 6 of mar13 in A or mar12
            papers=10 + 9 + 8 - 3 - 6,
            profiles=11,
            # No lead in nDCG required here: among 18 papers, BM25Okapi's any-word match gains
            # most from the papers that carry only part of an interest ("federated" without
            # "learning"), which all-words matching leaves out by design, and no paper defines
            # an acronym ("ASR" finds nothing); the real set measures the lead.
            targets=Targets(ndcg=0.55, f1=0.55, lead_ndcg=None, lead_f1=0.1),
        ),
        id="examples",
    ),
    pytest.param(
        JudgedSet(
            ((REAL_A, _layout_a), (REAL_B, _layout_b)),
            JUDGED / "judgments.json",
            papers=266 + 64 - 5,
            profiles=30,
            targets=Targets(ndcg=0.84, f1=0.70, lead_ndcg=0.06, lead_f1=0.12),
        ),
        id="real",
        marks=pytest.mark.real_dumps,
    ),
]
# Profiles judged last, after the latest change to the ranking and before measuring it.
LATEST = frozenset(
    [
        "image-captioning",
        "instruction-tuning",
        "data-augmentation",
        "question-answering",
        "speech-synthesis",
    ]
)
# Profiles the ranking was not tuned on: the later ones, judged before any tuning, and
# three of the first (reported apart, so the tuned half cannot hide a loss).
HELD_OUT = LATEST | frozenset(
    [
        "asr",
        "vlm",
        "nmt",
        "llm-decoding-verbose",
        "dense-retrieval-verbose",
        "ssl-speech",
        "moe",
        "distillation",
        "predictive-coding",
        "audio",
        "segmentation",
        "in-context-learning",
    ]
)


def load_papers(judged_set: JudgedSet) -> list[PlainPaper]:
    """Unique papers of the dumps in listing order; times_seen counts repeats."""
    entries = [
        pair for path, read in judged_set.dumps for pair in read(path.read_text(encoding="utf-8"))
    ]
    seen: dict[str, list[str | int]] = {}
    for title, abstract in entries:
        key = normalize_title(title)
        if key in seen:
            seen[key][2] = int(seen[key][2]) + 1
        else:
            seen[key] = [title, abstract, 1]
    return [
        PlainPaper(i, str(title), str(abstract), int(times))
        for i, (title, abstract, times) in enumerate(seen.values())
    ]


def ndcg(ranked: list[int], grades: dict[int, int], k: int = K) -> float:
    """nDCG@k with exponential gain."""
    dcg = sum((2 ** grades.get(p, 0) - 1) / math.log2(i + 2) for i, p in enumerate(ranked[:k]))
    ideal = sorted(grades.values(), reverse=True)[:k]
    idcg = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def precision(ranked: list[int], grades: dict[int, int], k: int = K) -> float:
    """Share of the top k graded 1 or 2 (a short list counts its gaps as misses)."""
    return sum(1 for p in ranked[:k] if grades.get(p, 0) >= 1) / k


def f1(delivered: list[int], grades: dict[int, int]) -> float:
    """F1 of what a digest sends against the papers graded 1 or 2."""
    relevant = {p for p, grade in grades.items() if grade >= 1}
    hits = len(relevant.intersection(delivered))
    if not hits:
        return 0.0
    return 2 * hits / (len(delivered) + len(relevant))


def plain_words(interest: str) -> str:
    """The interest without its syntax: what the baselines get (the benefit of the doubt)."""
    text = re.sub(r"\s\^[\d.]+$", "", interest)
    text = re.sub(r"(^|\s)(-|NOT\s+)\S+", " ", text)
    text = re.sub(r"\b(title|abstract):", "", text)
    return " ".join(text.replace('"', " ").replace("*", "").split())


def substring_ranker(papers: list[PlainPaper]) -> Ranker:
    texts = [f"{p.title}\n{p.abstract}".lower() for p in papers]

    def rank(interests: Sequence[str]) -> list[int]:
        words = [plain_words(i).lower() for i in interests]
        scored = [(sum(w in text for w in words), i) for i, text in enumerate(texts)]
        ordered = [i for score, i in sorted(scored, key=lambda s: (-s[0], s[1])) if score > 0]
        return ordered[:DELIVERED]

    return rank


def bm25_ranker(papers: list[PlainPaper], *, one_bag: bool = False) -> Ranker:
    """BM25Okapi over the papers' words; each interest a query, scores summed, or
    (``one_bag``) all the interests' words as one query. It sends its best 50."""
    bm25 = BM25Okapi([f"{p.title} {p.abstract}".lower().split() for p in papers])

    def rank(interests: Sequence[str]) -> list[int]:
        totals = [0.0] * len(papers)
        # One bag: each word once, however many interests name it.
        bag = dict.fromkeys(" ".join(map(plain_words, interests)).lower().split())
        queries = [" ".join(bag)] if one_bag else interests
        for query in queries:
            for i, score in enumerate(bm25.get_scores(plain_words(query).lower().split())):
                totals[i] += score
        order = sorted(range(len(papers)), key=lambda i: (-totals[i], i))
        return [i for i in order if totals[i] > 0][:DELIVERED]

    return rank


def our_ranker(papers: list[PlainPaper], analyzer: Analyzer) -> Ranker:
    """What the digest would send: the ranking path, its cut-off, at most 50 items."""
    stats = CorpusStats.from_texts(((p.title, p.abstract) for p in papers), analyzer)

    def rank(interests: Sequence[str]) -> list[int]:
        profile = Profile(1, tuple(interests), max_items=DELIVERED)
        return [r.paper_id for r in ranker.rank(papers, [profile], stats, analyzer=analyzer)[1]]

    return rank


@dataclass(frozen=True)
class Scores:
    """One ranker's measures, per profile in the judged order."""

    ndcg: list[float]
    precision: list[float]
    f1: list[float]

    def mean(self, measure: str, rows: Sequence[int]) -> float:
        values = getattr(self, measure)
        return sum(values[i] for i in rows) / len(rows)


def evaluate(ranker: Ranker, judged: list[tuple[str, list[str], dict[int, int]]]) -> Scores:
    scores = Scores([], [], [])
    for _, interests, grades in judged:
        ranked = ranker(interests)
        scores.ndcg.append(ndcg(ranked, grades))
        scores.precision.append(precision(ranked, grades))
        scores.f1.append(f1(ranked, grades))
    return scores


@pytest.fixture(scope="module", params=SETS)
def judged_set(request: pytest.FixtureRequest) -> JudgedSet:
    judged_set: JudgedSet = request.param
    return judged_set


@pytest.fixture(scope="module")
def papers(judged_set: JudgedSet) -> list[PlainPaper]:
    return load_papers(judged_set)


@pytest.fixture(scope="module")
def judged(
    judged_set: JudgedSet, papers: list[PlainPaper]
) -> list[tuple[str, list[str], dict[int, int]]]:
    index = {normalize_title(p.title): p.id for p in papers}
    data = json.loads(judged_set.judgments.read_text(encoding="utf-8"))
    out = []
    for profile in data["profiles"]:
        grades = {index[key]: grade for key, grade in profile["grades"].items()}
        out.append((profile["name"], profile["interests"], grades))
    return out


def test_judged_set_covers_the_dumps(
    judged_set: JudgedSet, papers: list[PlainPaper], judged: list
) -> None:
    assert len(papers) == judged_set.papers
    assert len(judged) >= judged_set.profiles
    for name, _, grades in judged:
        assert grades, name  # every judgment key names a paper of the dumps


def test_ranking_beats_baselines(
    judged_set: JudgedSet, papers: list[PlainPaper], judged: list
) -> None:
    results = {
        "digest (ours)": evaluate(our_ranker(papers, Analyzer()), judged),
        "BM25Okapi, interests summed": evaluate(bm25_ranker(papers), judged),
        "BM25Okapi, one bag of words": evaluate(bm25_ranker(papers, one_bag=True), judged),
        "substring": evaluate(substring_ranker(papers), judged),
    }
    names = [name for name, _, _ in judged]
    halves = {
        "all": list(range(len(judged))),
        "tuned on": [i for i, name in enumerate(names) if name not in HELD_OUT],
        "held out": [i for i, name in enumerate(names) if name in HELD_OUT],
        "judged last": [i for i, name in enumerate(names) if name in LATEST],
    }
    print(f"\n{len(papers)} papers, {len(judged)} profiles; delivered: at most {DELIVERED}")
    print(
        f"| ranker | profiles | nDCG@{K} | P@{K} | delivered F1 |\n| --- | --- | --- | --- | --- |"
    )
    for ranker_name, scores in results.items():
        for half, rows in halves.items():
            if rows:
                print(
                    f"| {ranker_name} | {half} ({len(rows)}) | {scores.mean('ndcg', rows):.3f}"
                    f" | {scores.mean('precision', rows):.3f} | {scores.mean('f1', rows):.3f} |"
                )
    rankers = list(results)
    print("\n| profile | " + " | ".join(f"{n}: nDCG@{K} / F1" for n in rankers) + " |")
    print("| --- " * (len(rankers) + 1) + "|")
    for i, name in enumerate(names):
        cells = [f"{results[n].ndcg[i]:.3f} / {results[n].f1[i]:.3f}" for n in rankers]
        held = " (held out)" if name in HELD_OUT else ""
        print(f"| {name}{held} | " + " | ".join(cells) + " |")

    everything = halves["all"]
    ours = results.pop("digest (ours)")
    best_ndcg = max(scores.mean("ndcg", everything) for scores in results.values())
    best_f1 = max(scores.mean("f1", everything) for scores in results.values())
    target = judged_set.targets
    assert ours.mean("ndcg", everything) >= target.ndcg
    assert ours.mean("f1", everything) >= target.f1
    if target.lead_ndcg is not None:
        assert ours.mean("ndcg", everything) >= best_ndcg + target.lead_ndcg
    assert ours.mean("f1", everything) >= best_f1 + target.lead_f1
