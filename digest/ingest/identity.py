"""A paper's identity: its arXiv id where known, else its normalized title."""

from __future__ import annotations

import re
import unicodedata

# Whole numbers only: "2403.123456" is not "2403.12345" with a digit to spare. Cutting it
# down would merge distinct entries into one paper, so such a string names no arXiv paper.
_ARXIV_NEW = re.compile(r"(?<![\d.])(\d{4}\.\d{4,5})(?:v\d+)?(?!\d)")
_ARXIV_OLD = re.compile(r"(?<![a-z.\-])([a-z][a-z.\-]*/\d{7})(?:v\d+)?(?!\d)", re.IGNORECASE)
_FOLD = re.compile(r"[\W_]+", re.UNICODE)
DAMAGE = "\ufffd"  # what a reader puts for a byte it could not decode
_DAMAGED = re.compile(DAMAGE + "+")
# What one damaged spot may have stood for, in a normalized title: nothing (a stray byte),
# or a character or two (a letter, or punctuation folded to a space), spaces either side.
_SPOT = r"(?: ?[^ ]{0,2} ?)"
DAMAGE_PREFIX = 4  # the clean start a damaged title needs to be looked for among the known


def normalize_title(title: str) -> str:
    """NFKC, case-folded, every run of punctuation and spacing folded to one space."""
    folded = unicodedata.normalize("NFKC", title).casefold()
    return _FOLD.sub(" ", folded).strip()


def normalize_arxiv_id(raw: str | None) -> str | None:
    """``2403.01234v2``, ``arXiv:2403.01234`` or an abs/pdf URL → ``2403.01234``; None if none.

    An id is taken whole or not at all: a longer run of digits is never shortened to fit.
    """
    if not raw:
        return None
    text = raw.strip()
    match = _ARXIV_NEW.search(text)
    if match:
        return match.group(1)
    match = _ARXIV_OLD.search(text)
    if match:
        return match.group(1).lower()
    return None


def paper_keys(title: str, arxiv_id: str | None) -> tuple[str, str]:
    """The stable key and the title key of a paper."""
    title_key = normalize_title(title)
    if arxiv_id:
        return "arxiv:" + arxiv_id, title_key
    return "title:" + title_key, title_key


def damaged_twin(title: str) -> tuple[str, re.Pattern[str]] | None:
    """For a title with replacement characters (bytes that could not be decoded): the clean
    start of its title key, and a pattern that the title key of the undamaged title matches.

    None when the title is undamaged, or when its clean start is too short to look it up by.
    """
    if DAMAGE not in title:
        return None
    parts = [normalize_title(part) for part in _DAMAGED.split(title)]
    prefix = parts[0]
    if len(prefix) < DAMAGE_PREFIX:
        return None
    pattern = _SPOT.join(re.escape(part) for part in parts)
    return prefix, re.compile(pattern)
