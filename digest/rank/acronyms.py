"""Acronyms and their expansions, mined from the papers themselves.

Abstracts define their acronyms: "large language models (LLMs)", "automatic speech
recognition (ASR)", or the other way round, "NMT (neural machine translation)". A
definition counts when the acronym's capital letters line up with the first letters of
the words before it, right to left, one word per letter; a little word ("of", "for")
may sit between them without a letter of its own, so "mixture of experts (MoE)" counts
and "visual question answering (VLM)" does not. Hyphenated words count as their parts
("retrieval-augmented generation (RAG)").

A pair is kept when ``MIN_SUPPORT`` papers define it, and only when it is what the
acronym stands for in most of the papers that define it (``DOMINANT``): "SR" defined
as speech recognition in some papers and super-resolution in others stands for
neither. One odd definition in one paper thus changes no reader's matches.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping

from digest.rank.text import DEFAULT, Analyzer

MIN_SUPPORT = 2  # papers defining the pair
DOMINANT = 0.75  # share of the acronym's definitions the pair must have
MAX_LETTERS = 6
# Little words a definition may skip ("chain of thought (CoT)") when no letter is theirs.
_LITTLE_WORDS = "a an and by for from in of on the to via with"
_LITTLE = frozenset(_LITTLE_WORDS.split())
# At an opening parenthesis: an acronym inside it, or words inside it (the acronym before).
_ACRONYM_INSIDE = re.compile(r"\(\s*([A-Za-z][A-Za-z-]{1,11}?)(?:s|es)?\s*[),;]")
_WORDS_INSIDE = re.compile(r"\(([^()]{5,80})\)")
_ACRONYM_BEFORE = re.compile(r"\b([A-Z][A-Za-z]{1,10}?)(?:s|es)?\s+$")
_WORD = re.compile(r"[A-Za-z0-9]+")

# Short term → the expansions (as terms) it stands for.
Acronyms = Mapping[str, tuple[tuple[str, ...], ...]]


def capitals(acronym: str) -> str | None:
    """The letters an acronym is made of ("NeRF" → "nrf"); None if it is no acronym."""
    letters = [c for c in acronym if c.isupper()]
    if not 2 <= len(letters) <= MAX_LETTERS or not acronym[0].isupper():
        return None
    if sum(c.islower() for c in acronym) > len(letters):  # "Transformer" is a word
        return None
    return "".join(letters).lower()


def line_up(letters: str, words: list[str]) -> list[str] | None:
    """The last words whose first letters spell ``letters`` (little words may be skipped)."""
    at = len(letters) - 1
    start = len(words)
    for i in range(len(words) - 1, -1, -1):
        word = words[i].lower()
        if word[0] == letters[at]:
            at -= 1
            start = i
            if at < 0:
                break
        elif word in _LITTLE and at < len(letters) - 1:
            continue
        else:
            return None
    if at >= 0:
        return None
    return words[start:]


def definitions(text: str) -> set[tuple[str, str]]:
    """The (acronym, expansion) pairs one text defines, as written."""
    found: set[tuple[str, str]] = set()
    at = text.find("(")
    while at >= 0:
        inside = _ACRONYM_INSIDE.match(text, at)
        if inside is not None:
            acronym = inside.group(1)
            letters = capitals(acronym)
            if letters is not None:
                before = _WORD.findall(text, max(0, at - 120), at)
                words = line_up(letters, before[-(len(letters) + 3) :]) if before else None
                if words:
                    found.add((acronym, " ".join(words)))
        elif (spelled := _WORDS_INSIDE.match(text, at)) is not None:
            named = _ACRONYM_BEFORE.search(text, max(0, at - 16), at)
            letters = None if named is None else capitals(named.group(1))
            words = _WORD.findall(spelled.group(1))
            if named is not None and letters is not None and words:
                lined = line_up(letters, words)
                if lined is not None and len(lined) == len(words):
                    found.add((named.group(1), " ".join(words)))
        at = text.find("(", at + 1)
    return found


class AcronymCounter:
    """Counts definitions paper by paper; ``pairs`` gives the well-supported ones."""

    def __init__(self, analyzer: Analyzer = DEFAULT) -> None:
        self.analyzer = analyzer
        self.counts: Counter[tuple[str, tuple[str, ...]]] = Counter()

    def add(self, title: str, abstract: str) -> None:
        """Count the pairs one paper defines (once each, however often it repeats them)."""
        if "(" not in abstract and "(" not in title:
            return
        pairs: set[tuple[str, tuple[str, ...]]] = set()
        for acronym, expansion in definitions(title) | definitions(abstract):
            short = self.analyzer(acronym)
            terms = tuple(self.analyzer(expansion))
            if len(short) == 1 and len(terms) >= 2 and short[0] not in terms:
                pairs.add((short[0], terms))
        self.counts.update(pairs)

    def pairs(self) -> dict[str, tuple[tuple[str, ...], ...]]:
        """Short term → its expansion, for the pairs enough papers define, and dominantly."""
        by_short: dict[str, Counter[tuple[str, ...]]] = {}
        for (short, terms), count in self.counts.items():
            by_short.setdefault(short, Counter())[terms] += count
        out: dict[str, tuple[tuple[str, ...], ...]] = {}
        for short, expansions in sorted(by_short.items()):
            total = sum(expansions.values())
            terms, count = expansions.most_common(1)[0]
            if count >= MIN_SUPPORT and count >= DOMINANT * total:
                out[short] = (terms,)
        return out


def mine(papers: Iterable[tuple[str, str]], analyzer: Analyzer = DEFAULT) -> Acronyms:
    """The acronym pairs a set of (title, abstract) papers defines well enough to trust."""
    counter = AcronymCounter(analyzer)
    for title, abstract in papers:
        counter.add(title, abstract)
    return counter.pairs()
