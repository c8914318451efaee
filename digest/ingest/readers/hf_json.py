"""The Hugging Face daily-papers JSON (``huggingface.co/api/daily_papers``).

The endpoint returns a JSON array with one object per paper posted that day::

    [{"paper": {"id": "2403.05525", "title": "…", "summary": "…",
                "authors": [{"name": "…"}, …], "publishedAt": "2024-03-08T…"},
      "title": "…", "publishedAt": "2024-03-11T…", "numComments": 3, …}, …]

``paper.publishedAt`` is when the paper appeared on arXiv (the entry's
``published``); the outer ``publishedAt`` is when it was posted to the daily
page, so the most common outer day is the listing date (the latest day on a
tie). An element that is a bare paper object (no ``paper`` wrapper), as some
other Hub endpoints and saved files have it, is read the same way.

A ``\\ud83d`` escape without its other half is valid JSON but no text; it is
replaced with U+FFFD and reported, as bad bytes in a text dump are.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote

from digest.errors import ListingError
from digest.ingest.identity import normalize_arxiv_id
from digest.ingest.listing import Entry, Listing

from .decoding import collapse

LAYOUT = "hf-json"
PAPER_URL = "https://huggingface.co/papers/"
_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_hf_json(text: str, path: Path) -> Listing:
    """Parse the daily-papers JSON array into a listing."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ListingError(f"not valid JSON: {exc.msg}", str(path), exc.lineno) from None
    except ValueError as exc:  # a number of more digits than int() takes
        raise ListingError(f"not valid JSON: {str(exc).split(';')[0]}", str(path)) from None
    except RecursionError:
        raise ListingError("JSON nested too deeply; not a listing", str(path)) from None
    if not isinstance(data, list):
        raise ListingError(
            f"JSON {_kind(data)} is not a daily-papers listing (an array of papers expected)",
            str(path),
        )
    if not data:
        raise ListingError("daily-papers JSON array is empty", str(path))
    mended = _mend(data) if "\\u" in text else 0
    entries: list[Entry] = []
    posted: Counter[date] = Counter()
    for index, item in enumerate(data, start=1):
        entries.append(_entry(item, index, path))
        if isinstance(item, dict):
            day = _day(item.get("publishedAt"))
            if day is not None and isinstance(item.get("paper"), dict):
                posted[day] += 1
    listing_date = max(posted, key=lambda day: (posted[day], day)) if posted else None
    listing = Listing(layout=LAYOUT, entries=entries, listing_date=listing_date)
    if mended:
        what = "escape" if mended == 1 else "escapes"
        listing.notes.append(f"{mended} unpaired surrogate {what} replaced with U+FFFD")
    return listing


def _mend(data: Any) -> int:
    """Replace the unpaired surrogates in every string of ``data``, in place; how many."""
    count = 0
    stack = [data]
    while stack:  # not recursive: the JSON may be nested as deep as the parser allows
        node = stack.pop()
        pairs = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in list(pairs):
            if isinstance(value, str):
                value, found = _SURROGATE.subn("\ufffd", value)
                if found:
                    node[key] = value
                    count += found
            elif isinstance(value, dict | list):
                stack.append(value)
    return count


def _entry(item: object, index: int, path: Path) -> Entry:
    if not isinstance(item, dict):
        raise ListingError(f"paper #{index} is a JSON {_kind(item)}, not an object", str(path))
    paper = item.get("paper")
    if paper is None:
        paper = item
    if not isinstance(paper, dict):
        raise ListingError(f'paper #{index}: "paper" is not an object', str(path))
    title = _text(paper.get("title")) or _text(item.get("title"))
    if not title:
        raise ListingError(f"paper #{index} has no title", str(path))
    raw_id = paper.get("id")
    paper_id = raw_id.strip() if isinstance(raw_id, str) else ""
    return Entry(
        title=title,
        abstract=_text(paper.get("summary")) or _text(item.get("summary")),
        arxiv_id=normalize_arxiv_id(paper_id),
        authors=_authors(paper.get("authors")),
        url=PAPER_URL + quote(paper_id, safe=".-_") if paper_id else None,
        published=_day(paper.get("publishedAt")),
    )


def _text(value: object) -> str:
    return collapse(value) if isinstance(value, str) else ""


def _authors(value: object) -> str:
    if not isinstance(value, list):
        return ""
    names: list[str] = []
    for author in value:
        # The API gives objects; hand-made files sometimes plain strings.
        name: Any = author.get("name") if isinstance(author, dict) else author
        if isinstance(name, str) and name.strip():
            names.append(collapse(name))
    return ", ".join(names)


def _day(value: object) -> date | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return "number" if isinstance(value, int | float) and not isinstance(value, bool) else "value"
