"""What every reader returns: a listing of entries, plain data."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date


@dataclass(frozen=True, slots=True)
class Entry:
    """One paper as a listing shows it."""

    title: str
    abstract: str = ""
    arxiv_id: str | None = None
    authors: str = ""
    url: str | None = None
    published: date | None = None
    line: int = 0  # where the entry starts in its file (1-based; 0 when unknown)
    revised: date | None = None  # when the paper last changed (a new version), if said


@dataclass(slots=True)
class Listing:
    """A parsed dump. ``entries`` may be a one-pass iterator (bulk snapshots stream)."""

    layout: str
    entries: Iterable[Entry]
    listing_date: date | None = None
    # What the reader mended and the operator should hear of ("3 bytes that are not valid
    # UTF-8 replaced …"); a streaming reader adds to it while its entries are read.
    notes: list[str] = field(default_factory=list)
