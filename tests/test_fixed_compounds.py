"""Fixed hyphenated compounds: a word inside "part-of-speech" is not the word "speech".

A hyphen chain whose parts are joined by a little word (part-of-speech, state-of-the-art,
end-to-end, off-the-shelf) is one unit: its inner words match an interest that names the
unit (as a phrase, hyphenated, or with all of its words), never a lone word. Chains that
join two words that keep their meaning (text-to-speech, vision-and-language) and plain
compounds (self-supervised) are unchanged.
"""

from __future__ import annotations

import pytest

from digest.rank.highlight import find_marks, mark
from digest.rank.ranker import rank, search
from digest.rank.text import DEFAULT
from digest.rank.types import CorpusStats, PlainPaper, Profile

FILLER = PlainPaper(99, "Graph neural networks", "Message passing over molecules and proteins.")


def matches(interest: str, title: str, abstract: str = "We study it.") -> bool:
    papers = [PlainPaper(1, title, abstract), FILLER]
    stats = CorpusStats.from_texts((p.title, p.abstract) for p in papers)
    return any(r.paper_id == 1 for r in search(interest, papers, stats, limit=5))


@pytest.mark.parametrize(
    ("interest", "title"),
    [
        ("speech", "Part-of-speech tagging for low-resource languages"),
        ("art", "A state-of-the-art detector"),
        ("end", "End-to-end training of retrievers"),
        ("shelf", "Off-the-shelf encoders are enough"),
        ("distribution", "Out-of-distribution detection with energy scores"),
        ("date", "Keeping models up-to-date"),
        ("loop", "Human-in-the-loop labelling"),
        ("experts", "Sparse mixture-of-experts routing"),
        ("speech tagging", "Part-of-speech tagging for low-resource languages"),
        ('"speech tagging"', "Part-of-speech tagging for low-resource languages"),
        ("spee*", "Part-of-speech tagging for low-resource languages"),
        ("speech recognition", "Part-of-speech recognition"),
        ("title:speech", "Part-of-speech tagging"),
    ],
)
def test_a_word_inside_a_fixed_compound_does_not_match(interest: str, title: str) -> None:
    assert not matches(interest, title)


@pytest.mark.parametrize(
    ("interest", "title"),
    [
        ("mixture of experts", "Sparse mixture-of-experts routing"),
        ("mixture-of-experts", "Sparse mixture-of-experts routing"),
        ('"mixture of experts"', "Sparse mixture-of-experts routing"),
        ("sparse mixture of experts", "Sparse mixture-of-experts routing"),
        ('"state of the art"', "A state-of-the-art detector"),
        ("state of the art", "A state-of-the-art detector"),
        ("state-of-the-art", "A state-of-the-art detector"),
        ("part-of-speech", "Part-of-speech tagging for low-resource languages"),
        ("part of speech tagging", "Part-of-speech tagging for low-resource languages"),
        ("out-of-distribution", "Out-of-distribution detection with energy scores"),
        ("out of distribution detection", "Out-of-distribution detection with energy scores"),
        ("end-to-end", "End-to-end training of retrievers"),
        ("end to end", "End-to-end training of retrievers"),
        ("human-in-the-loop", "Human-in-the-loop labelling"),
        # The same words written apart are plain words.
        ("speech", "The part of speech of each word"),
        # Two words that keep their meaning, and plain compounds: unchanged.
        ("speech", "Text-to-speech with flow matching"),
        ("image generation", "Text-to-image generation"),
        ("language", "Vision-and-language navigation"),
        ("supervised", "Self-supervised speech models"),
        ("self supervised", "Self-supervised speech models"),
        # A word a repeating chain is made of, named with more words of the interest.
        ("speech translation", "Speech-to-speech translation"),
        # A chain's other parts stay words ("a-survey-on-mixture-of-experts", a repository).
        ("survey", "Code at github.com/x/a-survey-on-mixture-of-experts"),
        ("mixture-of-experts", "Code at github.com/x/a-survey-on-mixture-of-experts"),
    ],
)
def test_an_interest_that_names_the_compound_still_matches(interest: str, title: str) -> None:
    assert matches(interest, title)


def test_the_analyzer_finds_the_fixed_units_of_a_chain() -> None:
    def units(text: str) -> list[str]:
        pos = DEFAULT.positions(text)
        return ["-".join(pos.surfaces[s : e + 1]) for s, e in pos.fixed]

    assert units("part-of-speech tagging, state-of-the-art and end-to-end") == [
        "part-of-speech",
        "state-of-the-art",
        "end-to-end",
    ]
    assert units("off-the-shelf, out-of-distribution, up-to-date, in-the-wild") == [
        "off-the-shelf",
        "out-of-distribution",
        "up-to-date",
        "in-the-wild",
    ]
    assert units("a-survey-on-mixture-of-experts") == ["mixture-of-experts"]
    assert units("text-to-speech, vision-and-language, self-supervised, coarse-to-fine") == []


SPEECH_DAY = [
    PlainPaper(
        1,
        "Part-of-Speech Tagging with Cross-Lingual Transfer",
        "We tag part-of-speech labels in twelve languages; part-of-speech accuracy rises.",
    ),
    PlainPaper(
        2,
        "Streaming Speech Recognition on Devices",
        "A small speech recognizer that runs on phones.",
    ),
    PlainPaper(
        3,
        "Universal Dependencies Parsing",
        "A parser trained with part-of-speech features beats the state-of-the-art.",
    ),
    PlainPaper(4, "Speech Enhancement with Diffusion", "Denoising speech in noisy rooms."),
    PlainPaper(5, "Graph Neural Networks", "Message passing on molecules."),
    PlainPaper(
        6,
        "Part-of-Speech Tagging of Transcribed Speech",
        "Tagging words of spoken language transcripts.",
    ),
    *(PlainPaper(10 + i, f"Protein folding {i}", "Structures from sequences.") for i in range(8)),
]


def test_a_digest_with_speech_and_part_of_speech_papers_ranks_only_speech() -> None:
    stats = CorpusStats.from_texts((p.title, p.abstract) for p in SPEECH_DAY)
    profiles = [
        Profile(1, ("speech ^2", "graph neural networks")),
        Profile(2, ("part-of-speech",)),
    ]
    ranked = rank(SPEECH_DAY, profiles, stats)
    speech = [r.paper_id for r in ranked[1]]
    # 6 is about spoken language as well as tagging: its lone "Speech" counts, once.
    assert set(speech) == {2, 4, 5, 6}
    assert speech.index(6) > max(speech.index(2), speech.index(4))
    assert {r.paper_id for r in ranked[2]} == {1, 3, 6}


def marked(title: str, interests: tuple[str, ...]) -> str:
    return str(mark(title, find_marks(title, "", interests).title, "[", "]"))


def test_the_highlight_marks_the_compound_only_for_an_interest_that_names_it() -> None:
    title = "Part-of-Speech Tagging of Transcribed Speech"
    assert marked(title, ("speech",)) == "Part-of-Speech Tagging of Transcribed [Speech]"
    assert marked(title, ("part-of-speech",)) == "[Part-of-Speech] Tagging of Transcribed Speech"
    assert marked("Sparse Mixture-of-Experts", ("mixture of experts",)) == (
        "Sparse [Mixture-of-Experts]"
    )
    assert marked("A State-of-the-Art Parser", ("art",)) == "A State-of-the-Art Parser"
