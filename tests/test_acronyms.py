"""Acronyms mined from the papers, matched both ways; soft conjunction; the cut-off."""

from __future__ import annotations

import pytest

from digest.rank.acronyms import capitals, definitions, line_up, mine
from digest.rank.cutoff import RELATIVE, cut
from digest.rank.ranker import rank, search
from digest.rank.types import CorpusStats, PlainPaper, Profile

# Two papers define ASR and LLM; one odd definition of "SR" each way; others use the words.
PAPERS = [
    PlainPaper(
        1,
        "Robust automatic speech recognition",
        "Automatic speech recognition (ASR) systems fail in noise. Large language models"
        " (LLMs) help rescore ASR hypotheses.",
    ),
    PlainPaper(
        2,
        "ASR for children",
        "We adapt automatic speech recognition (ASR) models to children's voices, where"
        " large language models (LLMs) are of no use.",
    ),
    PlainPaper(3, "Streaming ASR on phones", "An ASR model small enough for a phone."),
    PlainPaper(
        4,
        "Speculative decoding",
        "We speed up large language model decoding with a draft model.",
    ),
    PlainPaper(5, "LLM decoding on a budget", "An LLM decodes faster with our cache."),
    PlainPaper(6, "Controlled decoding", "Decoding from language models under constraints."),
    PlainPaper(7, "Decoding brain signals", "We decode speech from recordings."),
    PlainPaper(8, "Decoder-only models", "A decoder for every language model."),
    PlainPaper(9, "Image super resolution", "Super resolution (SR) of faces."),
    PlainPaper(10, "Speech tricks", "Speech recognition (SR) with one trick."),
    PlainPaper(11, "Audio tagging", "Spectrogram models (SM) for audio tagging events."),
]
STATS = CorpusStats.from_texts((p.title, p.abstract) for p in PAPERS)


def ids(query: str) -> list[int]:
    return [r.paper_id for r in search(query, PAPERS, STATS, limit=50)]


def test_capitals_and_lining_up() -> None:
    assert capitals("LLM") == "llm"
    assert capitals("NeRF") == "nrf"
    assert capitals("MoE") == "me"
    assert capitals("Transformer") is None
    assert capitals("A") is None
    assert line_up("llm", ["we", "study", "large", "language", "models"]) == [
        "large",
        "language",
        "models",
    ]
    # A little word may sit between letters, not before the acronym's words.
    assert line_up("me", ["sparse", "mixture", "of", "experts"]) == ["mixture", "of", "experts"]
    assert line_up("vlm", ["visual", "question", "answering"]) is None
    assert line_up("llm", ["of", "large", "models"]) is None


def test_definitions_both_ways_as_written() -> None:
    text = "We use retrieval-augmented generation (RAG) and NMT (neural machine translation)."
    assert definitions(text) == {
        ("RAG", "retrieval augmented generation"),
        ("NMT", "neural machine translation"),
    }
    assert definitions("results (Table 2) and ours (OURS)") == set()


def test_pairs_need_support_and_one_meaning() -> None:
    pairs = STATS.acronyms
    assert pairs["asr"] == (("automatic", "speech", "recognition"),)
    assert pairs["llm"] == (("large", "language", "model"),)
    # Defined once each way ("super resolution", "speech recognition"): neither is kept.
    assert "sr" not in pairs
    # Defined once: too little support.
    assert "sm" not in pairs
    assert mine([("t", "Spectrogram models (SM) here."), ("u", "Spectrogram models (SM).")]) == {
        "sm": (("spectrogram", "model"),)
    }


def test_an_acronym_finds_its_expansion_and_back() -> None:
    asr = ids("ASR")
    # Paper 10 writes the last words of the expansion only: it comes last.
    assert set(asr[:3]) == {1, 2, 3}
    assert asr[3:] == [10]
    # The words find the acronym: paper 3 writes only "ASR".
    assert set(ids("speech recognition")) == {1, 2, 3, 10}
    assert set(ids('"automatic speech recognition"')) == {1, 2, 3}
    # Without the mined pairs the words stay words.
    plain = CorpusStats(
        STATS.documents, STATS.avg_title_len, STATS.avg_abstract_len, STATS.frequencies
    )
    assert {r.paper_id for r in search("speech recognition", PAPERS, plain)} == {1, 2, 10}
    assert {r.paper_id for r in search("large language model", PAPERS, plain)} == {1, 2, 4}
    assert set(ids("large language model")) == {1, 2, 4, 5}


def test_written_acronym_scores_above_its_expansion_alone() -> None:
    scores = {r.paper_id: r.score for r in search("LLM decoding", PAPERS, STATS)}
    assert scores[5] > scores[4] > 0  # "LLM" in the title vs the expansion in the abstract


def test_explanation_says_how_the_acronym_was_written() -> None:
    [hit] = search("LLM decoding", PAPERS, STATS, limit=50)[1].hits
    assert hit.interest == "LLM decoding"
    found = next(r for r in search("LLM decoding", PAPERS, STATS, limit=50) if r.paper_id == 4)
    assert "LLM, written as large language model" in found.hits[0].terms
    back = next(r for r in search("speech recognition", PAPERS, STATS) if r.paper_id == 3)
    assert back.hits[0].terms == ("speech recognition, written as ASR",)


def test_soft_conjunction_ranks_below_full_matches() -> None:
    ranked = search("LLM decoding", PAPERS, STATS, limit=50)
    order = [r.paper_id for r in ranked]
    # 4 and 5 have both; 6 has decoding and what an LLM is ("language model"), in its title.
    assert order == [5, 4, 6]
    # "decode" in paper 7 is the word's inflection, but the soft match needs its other word.
    # "decoder" is another word (paper 8 has "language model" and "decoder" only).
    assert 7 not in order and 8 not in order


def test_soft_conjunction_takes_inflections_with_a_word_in_the_title() -> None:
    papers = [
        PlainPaper(1, "Decoding speech", "We decode speech from brain recordings."),
        PlainPaper(2, "Brain recordings", "Speech is decoded from them."),
        PlainPaper(3, "Speech decoded", "Nothing else."),
    ]
    stats = CorpusStats.from_texts((p.title, p.abstract) for p in papers)
    got = {r.paper_id: r.score for r in search("speech decoding", papers, stats)}
    # 1 has both words; 3 has speech and "decoded" in its title; 2 neither word in its title.
    assert set(got) == {1, 3}
    assert got[1] > got[3]


@pytest.mark.parametrize(
    ("scores", "max_items", "min_score", "threshold", "kept"),
    [
        ([], 10, 0.0, None, 0),
        ([10.0, 9.0, 8.0], 2, 0.0, None, 2),
        ([10.0, 9.0, 8.0], 0, 0.0, None, 0),
        ([10.0, 9.0, 8.0], 10, 8.5, None, 2),
        ([10.0, 10 * RELATIVE, 10 * RELATIVE * 0.99], 10, 0.0, None, 2),
        ([10.0, 6.0, 4.0], 10, 0.0, 5.0, 2),
        ([10.0, 6.0, 4.0], 10, 7.0, 5.0, 1),  # the reader's floor stays
    ],
)
def test_cut(
    scores: list[float], max_items: int, min_score: float, threshold: float | None, kept: int
) -> None:
    assert cut(scores, max_items, min_score, threshold) == kept


def test_rank_stops_where_scores_fall_away() -> None:
    papers = [PlainPaper(1, "Graph networks", "graph networks on trees")]
    papers += [
        PlainPaper(i, f"Paper {i}", "a long abstract " * 40 + "of trees") for i in range(2, 6)
    ]
    stats = CorpusStats.from_texts((p.title, p.abstract) for p in papers)
    interests = ("graph ^20", "tree")
    everything = search("graph OR tree", papers, stats, limit=50)  # a search is not cut
    assert len(everything) == 5
    [ranked] = rank(papers, [Profile(1, interests, max_items=50)], stats).values()
    scores = [r.score for r in ranked]
    assert [r.paper_id for r in ranked] == [1]
    [uncut] = rank(papers, [Profile(1, interests, max_items=50, min_score=-1)], stats).values()
    assert len(uncut) == 1  # the floor adds to the cut-off, it does not lift it
    [weak] = rank(papers, [Profile(1, ("tree",), max_items=50)], stats).values()
    assert len(weak) == 5  # no paper stands out: all are sent
    assert scores[0] > 0


def test_an_expansion_among_more_words_meets_the_acronym() -> None:
    ranked = search("large language model decoding", PAPERS, STATS)
    found = {r.paper_id: r for r in ranked}
    # 6 writes "language models" (the expansion less its first word): a soft match, last.
    assert {r.paper_id for r in ranked[:2]} == {4, 5} and set(found) == {4, 5, 6}
    assert found[5].hits[0].terms == ("large language model, written as LLM", "decoding")
    # Written differently, the same: little words and plurals do not matter.
    again = ids("decoding for large language models")
    assert set(again[:2]) == {4, 5} and again[2:] == [6]


def test_one_word_is_not_an_expansion_tail() -> None:
    papers = [
        PlainPaper(1, "Masked auto-encoders", "Masked auto-encoders (MAE) scale."),
        PlainPaper(2, "MAE for video", "We extend masked auto-encoders (MAE) to video."),
        PlainPaper(3, "Sparse codes", "A sparse MAE variant."),
        PlainPaper(4, "Sparse autoencoders", "Sparse autoencoders for features."),
    ]
    stats = CorpusStats.from_texts((p.title, p.abstract) for p in papers)
    assert "mae" in stats.acronyms
    assert {r.paper_id for r in search("sparse autoencoders", papers, stats)} == {4}
    assert {r.paper_id for r in search("masked autoencoders", papers, stats)} == {1, 2, 3}


def test_an_acronym_meets_its_last_words_unless_they_name_a_broader_topic() -> None:
    papers = [
        PlainPaper(1, "ASR in noise", "Automatic speech recognition (ASR) in noise."),
        PlainPaper(2, "ASR for kids", "Automatic speech recognition (ASR) for children."),
        PlainPaper(3, "Speech recognition at scale", "We train on more hours."),
        PlainPaper(4, "Seeing and reading", "Vision language models (VLMs) read charts."),
        PlainPaper(5, "Charts", "Vision language models (VLMs) for charts."),
        PlainPaper(6, "Tokens", "Language models (LMs) and their tokenizers."),
        PlainPaper(7, "More tokens", "Language models (LMs) count letters."),
        PlainPaper(8, "Speech tricks", "A language model trained on speech."),
    ]
    stats = CorpusStats.from_texts((p.title, p.abstract) for p in papers)
    assert {"asr", "vlm", "lm"} <= set(stats.acronyms)
    found = {r.paper_id: r for r in search("ASR", papers, stats)}
    assert set(found) == {1, 2, 3}
    assert found[3].score < min(found[1].score, found[2].score)
    assert found[3].hits[0].terms == ("ASR, written as Speech recognition",)
    # "language model" is LM's whole expansion: VLM does not reach every language model.
    assert {r.paper_id for r in search("VLM", papers, stats)} == {4, 5}


def test_a_long_interest_may_lack_its_commonest_word() -> None:
    papers = [
        PlainPaper(1, "Graph neural networks for molecules", "A graph neural model of molecules."),
        PlainPaper(2, "Graph models of molecules", "We model molecules as graphs."),
        PlainPaper(3, "Neural molecules", "A neural model of molecules."),
        PlainPaper(4, "Neural images", "A neural model of images."),
        PlainPaper(5, "Neural audio", "A neural model of audio."),
        PlainPaper(6, "Kernels", "Graph kernels for molecules."),
        PlainPaper(7, "Neural text", "A neural model of text."),
    ]
    stats = CorpusStats.from_texts((p.title, p.abstract) for p in papers)
    found = {r.paper_id: r for r in search("graph neural molecules", papers, stats)}
    # 2 lacks "neural", the commonest of the three words, and has the others in its title;
    # 3 lacks "graph", a rarer word; 6 has neither remaining word in its title.
    assert set(found) == {1, 2}
    assert found[1].score > found[2].score
    assert set(found[2].hits[0].terms) == {"Graph", "graphs", "molecules"}
    # Two words are too few for it: "neural molecules" needs both.
    assert {r.paper_id for r in search("neural molecules", papers, stats)} == {1, 3}
