"""The text analyzer shared by papers and interests, so both sides agree on terms.

Text is NFKC-normalized and case-folded, split on anything that is not a letter
or digit, and each word is reduced by a small, conservative stemmer: plurals
always; ``-ed``/``-ing`` inflections only when ``inflections`` is on. It is off by
default because on the judged set it cost more than it gained (``modeling`` met
``models`` in every abstract): see ``bench/README.md``.

Hyphenated compounds are indexed twice: as their parts in sequence (so
``self-supervised`` matches the phrase ``self supervised``) and as one joined
term (so it matches ``selfsupervised``). The matcher in ``digest.rank.match`` also
joins adjacent words on the fly for the joined terms interests ask for, which
closes the remaining case (``selfsupervised`` in an interest, ``self supervised``
in a paper).

A chain whose parts are joined by a little word is a *fixed* compound, one unit
("part-of-speech", "state-of-the-art", "end-to-end", "off-the-shelf"): a word inside it
is not that word on its own (``fixed_units``). The matcher lets its words meet only an
interest that names the unit.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Container, Iterable
from dataclasses import dataclass, field

# ASCII text (nearly all of it) is tokenized with str.translate + split, several
# times faster than a regex; other text is normalized first, then takes the regex.
_ASCII_WORDS = str.maketrans(
    {chr(i): (chr(i).lower() if chr(i).isalnum() or chr(i) == "-" else " ") for i in range(128)}
)
_NOT_WORD = re.compile(r"[^\w-]|_")
# Explanations name words as the paper writes them, case kept.
_SURFACE = re.compile(r"[^\W_]+(?:[-\u2010][^\W_]+)*")
_HYPHEN = re.compile(r"[-\u2010]")
# Where words stand in text folded as ``_chunks`` folds it (other characters made spaces).
_KEPT_WORD = re.compile(r"[^ -]+")
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
# The same split with case kept, for finding words as written.
_ASCII_SURFACE = str.maketrans(
    {chr(i): (chr(i) if chr(i).isalnum() or chr(i) == "-" else " ") for i in range(128)}
)

# Words ending in "s" that are not plurals; short words are never stemmed at all.
_NOT_PLURAL_WORDS = (
    "bias alias atlas canvas lens news physics mathematics economics robotics "
    "semantics dynamics statistics kinematics graphics linguistics genomics analytics "
    "ethics optics thesis series species"
)
_NOT_PLURAL = frozenset(_NOT_PLURAL_WORDS.split())
_VOWELS = frozenset("aeiouy")

# The little words that join the parts of a fixed compound. "of" and the articles always
# make one: the words before them name the thing ("part-of-speech" is a part, not speech;
# "state-of-the-art", "needle-in-a-haystack"). The others join two words that each keep
# their meaning ("text-to-speech", "vision-and-language", "sim-to-real"), unless the chain
# is a set phrase: the same word on both sides ("end-to-end", "step-by-step") or a particle
# before ("up-to-date", "all-in-one"), or the chain opens with them ("in-the-wild").
_BINDING_WORDS = "of the a an"
_JOINING_WORDS = "to by in on for and or from at as with into onto over per via"
_PARTICLE_WORDS = "up out off down over in on all at by"
_BINDING = frozenset(_BINDING_WORDS.split())
_JOINING = frozenset(_JOINING_WORDS.split())
_PARTICLES = frozenset(_PARTICLE_WORDS.split())
LINKING = _BINDING | _JOINING  # a fixed compound's words less these are its own words
_MEMO_LIMIT = 500_000  # distinct words remembered; a 1M-paper scan stays bounded


def _plural(word: str) -> str:
    """Fold English plurals: networks→network, studies→study, losses→loss."""
    if len(word) <= 3 or not word.endswith("s") or word in _NOT_PLURAL:
        return word
    if word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies") and len(word) > 4 and not word.endswith(("eies", "aies")):
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    return word[:-1]


def _inflection(word: str) -> str:
    """Fold -ed/-ing and a final -e: learning/learned→learn, encoded/encode→encod."""
    for suffix in ("ing", "ed"):
        if word.endswith(suffix):
            stem = word[: -len(suffix)]
            # A vowel must remain, or "string", "red" and "thing" would be mangled.
            if len(stem) >= 3 and any(c in _VOWELS for c in stem):
                if len(stem) >= 4 and stem[-1] == stem[-2] and stem[-1] not in "lsz":
                    stem = stem[:-1]  # running→run, embedded→embed
                return stem
            return word
    if len(word) >= 4 and word.endswith("e") and word[-2] not in _VOWELS:
        return word[:-1]  # so "encode" meets "encoded", "tune" meets "tuning"
    return word


@dataclass(frozen=True, slots=True)
class Positions:
    """One field analyzed for matching: terms in order, their folded surface words, compounds."""

    terms: list[str]
    surfaces: list[str]
    # (first part, last part, joined term) for every hyphenated chain
    compounds: list[tuple[int, int, str]]
    # (first part, last part) of every fixed compound ("part-of-speech"), in order
    fixed: list[tuple[int, int]] = field(default_factory=list)


@dataclass(eq=False)
class Analyzer:
    """Turns text into terms; ``inflections`` switches the -ed/-ing folding."""

    inflections: bool = False
    _memo: dict[str, str] = field(default_factory=dict, repr=False)
    _written: dict[str, str] = field(default_factory=dict, repr=False)  # word as written → term

    def term(self, word: str) -> str:
        """The term of one already folded word."""
        stem = self._memo.get(word)
        if stem is None:
            stem = self._stem(word)
        return stem

    def _stem(self, word: str) -> str:
        stem = word
        if word.isalpha():  # "gpt4s", "2s" and the like are names, not plurals
            stem = _plural(word)
            if self.inflections and len(stem) >= 4:
                stem = _inflection(stem)
        if len(self._memo) >= _MEMO_LIMIT:
            self._memo.clear()
        self._memo[word] = stem
        return stem

    def __call__(self, text: str) -> list[str]:
        """Terms of text in order; a compound's joined term follows its parts."""
        memo = self._memo
        out: list[str] = []
        append = out.append
        for chunk in _chunks(text):
            if "-" not in chunk:
                append(memo.get(chunk) or self._stem(chunk))
                continue
            parts = [part for part in chunk.split("-") if part]
            for part in parts:
                append(memo.get(part) or self._stem(part))
            if len(parts) > 1:
                joined = "".join(parts)
                append(memo.get(joined) or self._stem(joined))
        return out

    def positions(self, text: str) -> Positions:
        """Text analyzed for phrase, prefix and compound matching."""
        memo = self._memo
        terms: list[str] = []
        surfaces: list[str] = []
        compounds: list[tuple[int, int, str]] = []
        fixed: list[tuple[int, int]] = []
        for chunk in _chunks(text):
            if "-" not in chunk:
                surfaces.append(chunk)
                terms.append(memo.get(chunk) or self._stem(chunk))
                continue
            parts = [part for part in chunk.split("-") if part]
            start = len(terms)
            for part in parts:
                surfaces.append(part)
                terms.append(memo.get(part) or self._stem(part))
            if len(parts) > 1:
                joined = "".join(parts)
                compounds.append((start, len(terms) - 1, memo.get(joined) or self._stem(joined)))
                if len(parts) > 2:
                    fixed.extend((start + s, start + e) for s, e in fixed_units(parts))
        return Positions(terms, surfaces, compounds, fixed)

    def offsets(self, text: str) -> list[tuple[int, int]] | None:
        """Where each word of ``positions(text)`` stands in ``text``: (start, end), in order.

        ``None`` in the rare case where normalizing the text as a whole differs from
        normalizing it piece by piece (some Hangul and Indic sequences): nothing is located.
        """
        if text.isascii():
            kept, origin = text.translate(_ASCII_WORDS), None
        else:
            located = _fold_located(text)
            if located is None:
                return None
            folded, origin = located
            kept = _NOT_WORD.sub(" ", folded)
        # A position is a piece of a chunk between hyphens: a run of neither space nor hyphen.
        out = [word.span() for word in _KEPT_WORD.finditer(kept)]
        if origin is None:
            return out
        starts, ends = origin
        return [(starts[s], ends[e - 1]) for s, e in out]

    def surface_forms(self, text: str, wanted: Iterable[str]) -> dict[str, set[str]]:
        """The words of text, as written, whose term is one of ``wanted`` (for explanations)."""
        want = wanted if isinstance(wanted, (set, frozenset)) else set(wanted)
        found: dict[str, set[str]] = {}
        if text.isascii():
            # Most words have no hyphen: split as the regex would, case kept, and stem them
            # through a memo of words as written; hyphen chains take the regex below.
            memo = self._written
            for chunk in text.translate(_ASCII_SURFACE).split():
                if "-" in chunk:
                    self._hyphenated(chunk, want, found)
                    continue
                stem = memo.get(chunk)
                if stem is None:
                    stem = memo[chunk] = self.term(chunk.lower())
                if stem in want:
                    if stem in found:
                        found[stem].add(chunk)
                    else:
                        found[stem] = {chunk}
            if len(memo) >= _MEMO_LIMIT:
                memo.clear()
            return found
        self._hyphenated(unicodedata.normalize("NFKC", text), want, found)
        return found

    def written(self, text: str) -> tuple[list[str], list[tuple[str, str]]] | None:
        """Words as written, one per position of ``positions(text)``, and (term, hyphenated word).

        Together they give what ``surface_forms`` gives without stemming every word again;
        ``None`` for text that is not ASCII (normalization may move word boundaries).
        """
        if not text.isascii():
            return None
        words: list[str] = []
        chains: list[tuple[str, str]] = []
        for chunk in text.translate(_ASCII_SURFACE).split():
            if "-" not in chunk:
                words.append(chunk)
                continue
            words.extend(part for part in chunk.split("-") if part)
            # As surface_forms sees them: runs of words joined by single hyphens.
            for piece in _SURFACE.findall(chunk):
                if "-" in piece:
                    chains.append((self.term(piece.replace("-", "").lower()), piece))
        return words, chains

    def _hyphenated(self, text: str, want: Container[str], found: dict[str, set[str]]) -> None:
        for chunk in _SURFACE.findall(text):
            words = [chunk]
            if "-" in chunk or "\u2010" in chunk:
                words += _HYPHEN.split(chunk)
            for word in words:
                stem = self.term(_HYPHEN.sub("", fold(word)))
                if stem in want:
                    found.setdefault(stem, set()).add(word)


def fixed_units(parts: list[str]) -> list[tuple[int, int]]:
    """The fixed compounds of one hyphen chain's folded parts: (first, last) part of each.

    A run of little words binds the word after it and the word before it, if any, into a
    unit of three parts or more; units that share a word are one.
    """
    units: list[tuple[int, int]] = []
    i, n = 0, len(parts)
    while i < n:
        if parts[i] not in _BINDING and parts[i] not in _JOINING:
            i += 1
            continue
        run = i
        while i < n and (parts[i] in _BINDING or parts[i] in _JOINING):
            i += 1
        if i == n:  # nothing after the little words: "sign-up-for"
            break
        first = run - 1 if run else 0
        if i - first < 2:  # two parts: "on-device", "in-context"
            continue
        before, after = (parts[run - 1], parts[i]) if run else ("", parts[i])
        if (
            not run  # opens with them: "in-the-wild"
            or any(part in _BINDING for part in parts[run:i])
            or before == after
            or before in _PARTICLES
        ):
            if units and units[-1][1] >= first:
                units[-1] = (units[-1][0], i)
            else:
                units.append((first, i))
    return units


def fold(text: str) -> str:
    """NFKC and case-fold; ASCII text takes the fast path (both are then just lower())."""
    if text.isascii():
        return text.lower()
    return unicodedata.normalize("NFKC", text).casefold().replace("\u2010", "-")


def _fold_located(text: str) -> tuple[str, tuple[list[int], list[int]]] | None:
    """``fold(text)`` and, for each of its characters, the span of ``text`` it comes from.

    Folded a character and its combining marks at a time; ``None`` when that differs from
    folding the whole text (normalization composed across such pieces).
    """
    pieces: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    done = 0
    for run in _NON_ASCII.finditer(text):
        begin, stop = run.span()
        if begin > done and unicodedata.combining(text[begin]):
            begin -= 1  # the mark belongs with the letter before it
        pieces.append(text[done:begin].lower())
        starts.extend(range(done, begin))
        ends.extend(range(done + 1, begin + 1))
        at = begin
        while at < stop:
            after = at + 1
            while after < stop and unicodedata.combining(text[after]):
                after += 1
            piece = unicodedata.normalize("NFKC", text[at:after]).casefold()
            pieces.append(piece)
            starts.extend([at] * len(piece))
            ends.extend([after] * len(piece))
            at = after
        done = stop
    pieces.append(text[done:].lower())
    starts.extend(range(done, len(text)))
    ends.extend(range(done + 1, len(text) + 1))
    folded = "".join(pieces).replace("\u2010", "-")
    return (folded, (starts, ends)) if folded == fold(text) else None


def _chunks(text: str) -> list[str]:
    """Folded words and hyphen chains (``self-supervised``) of text, in order."""
    if text.isascii():
        return text.translate(_ASCII_WORDS).split()
    return _NOT_WORD.sub(" ", fold(text)).split()


def inflected(term: str) -> str:
    """A term with its -ed/-ing inflection folded, as ``Analyzer(inflections=True)`` folds it."""
    return _inflection(term) if len(term) >= 4 else term


DEFAULT = Analyzer()


def analyze(text: str) -> list[str]:
    """Terms of text with the default analyzer (plurals folded)."""
    return DEFAULT(text)
