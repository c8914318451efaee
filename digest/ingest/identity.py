"""A paper's identity: its arXiv id where known, else its normalized title."""

from __future__ import annotations

import re
import unicodedata

# Whole numbers only: "2403.123456" is not "2403.12345" with a digit to spare. Cutting it
# down would merge distinct entries into one paper, so such a string names no arXiv paper.
_ARXIV_NEW = re.compile(r"(?<![\d.])(\d{4}\.\d{4,5})(?:v\d+)?(?!\d)")
_ARXIV_OLD = re.compile(r"(?<![a-z.\-])([a-z][a-z.\-]*/\d{7})(?:v\d+)?(?!\d)", re.IGNORECASE)
_FOLD = re.compile(r"[\W_]+", re.UNICODE)


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
