"""Matching and ranking: the language's meaning on papers, scores, fan-out and explanations."""

from __future__ import annotations

import json

import pytest

from digest.rank.index import InterestIndex
from digest.rank.leaves import SCATTERED
from digest.rank.query import InterestError
from digest.rank.ranker import rank, search
from digest.rank.text import Analyzer, analyze
from digest.rank.types import (
    CorpusStats,
    InterestHit,
    PlainPaper,
    Profile,
    hits_from_json,
    hits_to_json,
)

PAPERS = [
    PlainPaper(1, "Self-Supervised Learning of Speech", "We pretrain encoders without labels."),
    PlainPaper(2, "Federated Learning on Devices", "Clients train a shared model; a survey."),
    PlainPaper(3, "Diffusion Models for Images", "Denoising diffusion generates images."),
    PlainPaper(4, "Large Language Models", "LLMs are trained on web text; an LLM answers."),
    PlainPaper(5, "Selfsupervised vision", "A self supervised method for networks."),
    PlainPaper(6, "Learning to federate", "Federated optimisation with learning rates."),
    PlainPaper(7, "Diffusive transport", "Physics of diffusing particles in a dataset."),
    PlainPaper(8, "Data set design", "A new data set of federated learning logs.", times_seen=4),
]
STATS = CorpusStats.from_texts((p.title, p.abstract) for p in PAPERS)


def ids(query: str) -> set[int]:
    return {r.paper_id for r in search(query, PAPERS, STATS, limit=50)}


def test_analyzer_folds_case_plurals_and_compounds() -> None:
    assert analyze("LLMs") == analyze("llm") == ["llm"]
    assert analyze("Networks") == ["network"]
    assert analyze("self-supervised") == ["self", "supervised", "selfsupervised"]
    assert analyze("ﬁne Ｔｕｎｉｎｇ") == ["fine", "tuning"]
    folding = Analyzer(inflections=True)
    assert folding("learning learned") == ["learn", "learn"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("federated learning", {2, 6, 8}),
        ('"federated learning"', {2, 8}),
        ("federated learning -survey", {6, 8}),
        ("federated NOT survey", {6, 8}),
        ("title:federated", {2}),
        ('abstract:"federated learning"', {8}),
        ("diffus*", {3, 7}),
        ("diffus* -title:diffusive", {3}),
        ("LLM", {4}),
        ("llms OR federate", {4, 6}),
        ("(speech OR images) models", {3}),
        ("self-supervised", {1, 5}),
        ("selfsupervised", {1, 5}),
        ('"self supervised"', {1, 5}),
        ("dataset", {7, 8}),
    ],
)
def test_language_on_papers(query: str, expected: set[int]) -> None:
    assert ids(query) == expected


def test_search_refuses_a_malformed_query() -> None:
    with pytest.raises(InterestError):
        search("foo (", PAPERS, STATS)


def test_title_outranks_abstract_and_order_is_deterministic() -> None:
    ranked = search("federated", PAPERS, STATS)
    assert ranked[0].paper_id == 2
    twins = [PlainPaper(i, "Graph networks", "x") for i in (9, 3, 5)]
    assert [r.paper_id for r in search("graph", twins, STATS)] == [3, 5, 9]


def test_trending_is_a_bonus_not_an_override() -> None:
    papers = [
        PlainPaper(1, "Graph networks", "graph networks for graph data"),
        PlainPaper(2, "Graph networks", "graph networks for graph data", times_seen=3),
        PlainPaper(3, "Trees", "one graph here", times_seen=50),
    ]
    assert [r.paper_id for r in search("graph", papers, STATS)] == [2, 1, 3]


def test_explanations_carry_surface_words_fields_and_scores() -> None:
    [hit] = search("LLM", PAPERS, STATS)[0].hits
    assert hit.interest == "LLM"
    assert set(hit.terms) == {"LLMs", "LLM"}
    assert hit.fields == ("abstract",)
    assert hit.score > 0


def test_fan_out_sums_interests_dedupes_and_applies_limits() -> None:
    profiles = [
        Profile(10, ["federated learning", "diffus*", "federated  learning"], max_items=2),
        Profile(11, ["federated learning ^3"]),
        Profile(12, ["LLM"], min_score=1e9),
        Profile(13, ["bad ("]),
    ]
    index = InterestIndex.build(profiles, STATS)
    assert len(index.texts) == 4  # the two spellings of "federated learning" are one interest
    assert [p for p, _, _ in index.invalid] == [13]
    result = rank(PAPERS, profiles, STATS)
    assert len(result[10]) == 2
    assert all(len(r.hits) == 1 for r in result[10])
    single = {r.paper_id: r.score for r in rank(PAPERS, [profiles[1]], STATS)[11]}
    plain = {r.paper_id: r.score for r in search("federated learning", PAPERS, STATS)}
    assert single == pytest.approx({k: 3 * v for k, v in plain.items()})
    assert result[12] == [] and result[13] == []


def test_candidates_limit_what_a_subscriber_may_receive() -> None:
    profiles = [Profile(1, ["federated learning"]), Profile(2, ["federated learning"])]
    result = rank(PAPERS, profiles, STATS, candidates={1: {8}, 2: set()})
    assert [r.paper_id for r in result[1]] == [8]
    assert result[2] == []


def test_threshold_walk_agrees_with_exhaustive_sums() -> None:
    many = [
        PlainPaper(i, f"paper {i}", ("alpha " * (i % 7)) + ("beta " * (i % 5)) + "gamma")
        for i in range(200)
    ]
    stats = CorpusStats.from_texts((p.title, p.abstract) for p in many)
    profile = Profile(1, ["alpha", "beta", "gamma"], max_items=5)
    got = [(r.paper_id, r.score) for r in rank(many, [profile], stats)[1]]
    totals: dict[int, float] = {}
    for query in profile.interests:
        for r in search(query, many, stats, limit=1000):
            totals[r.paper_id] = totals.get(r.paper_id, 0.0) + r.score
    want = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    assert [p for p, _ in got] == [p for p, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want])


def test_hits_codec_round_trips_what_is_stored() -> None:
    hit = InterestHit("federated", 1.234567, ("Federated", "federated"), ("title",))
    stored = json.dumps(hits_to_json([hit]))
    assert json.loads(stored) == [
        {"interest": "federated", "terms": ["Federated"], "fields": ["title"], "score": 1.2346}
    ]
    assert hits_from_json(stored) == (InterestHit("federated", 1.2346, ("Federated",), ("title",)),)


def test_words_scattered_in_the_abstract_score_less() -> None:
    # Same length, same words, same counts: only where "generation" stands differs.
    filler = "tables graphs meshes volumes grids lattices"
    together = PlainPaper(1, "Speedups", f"Code for the generation of {filler} trees queues.")
    apart = PlainPaper(2, "Speedups", f"Code for the {filler} trees of queues generation.")
    titled = PlainPaper(3, "Code speedups", f"For the {filler} trees of queues generation.")
    papers = [together, apart, titled]
    stats = CorpusStats.from_texts((p.title, p.abstract) for p in papers)
    scores = {r.paper_id: r.score for r in search("code generation", papers, stats)}
    assert scores[2] == pytest.approx(SCATTERED * scores[1])
    assert scores[3] > scores[1]  # a word in the title is never scattered
    # "generation" four words after "code" still stands with it; five words is apart.
    near = PlainPaper(4, "Speedups", f"Code for the tables generation {filler} queues.")
    far = PlainPaper(5, "Speedups", f"Code for the tables graphs generation {filler}.")
    scores = {r.paper_id: r.score for r in search("code generation", [near, far], stats)}
    assert scores[5] == pytest.approx(SCATTERED * scores[4])
    # A phrase among the words counts from its first word.
    query = '"code for" queues'
    near = PlainPaper(6, "Speedups", f"Code for the tables queues {filler} trees.")
    far = PlainPaper(7, "Speedups", f"Code for the tables {filler} trees queues.")
    scores = {r.paper_id: r.score for r in search(query, [near, far], stats)}
    assert scores[7] == pytest.approx(SCATTERED * scores[6])
    # One word is never scattered.
    scores = {r.paper_id: r.score for r in search("code", papers, stats)}
    assert scores[1] == pytest.approx(scores[2])
