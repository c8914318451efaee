"""The private feeds' entries kept from one run to the next, in a file of the data folder.

A reader's feed holds their newest items (``feed_items``, 100 by default: five or six
days of digests), and its file is written from an entry for each (paper, why it was
chosen). A run in a new process (cron's) had none of them and made every one again, each
day, though all but the day's new ones were made by the run before. So a run keeps the
entries it used in a file (``FILE`` under ``data_dir``, not the feeds folder a web server
serves), and the next run takes from it every entry whose paper still reads as it did
when the entry was made: only the new ones are made.

What an entry is made of is checked, not trusted: the file names the code that made its
entries (a hash of the source of the packages that shape an entry, ``feeds``,
``present`` and ``rank``, and the versions of feedgen, lxml and markupsafe) and the site (its address and GUID authority), and each entry the paper it was made of
(a hash of every field of the paper an entry shows). A file from other code, another site,
or that cannot be read is left unused (and written over by the run); an entry whose paper
changed is made again. The file holds bytes, strings and numbers only (``marshal``),
written under a temporary name and renamed over the old one, readable by its owner alone.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import logging
import marshal
import os
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from digest.feeds.site import FeedSite
from digest.feeds.xml import Entry
from digest.store.papers import PaperRow

log = logging.getLogger(__name__)

FILE = "feed-entries"  # under data_dir
BATCH = 1_000  # entries written (and read) at once
_FORMAT = 1  # what a kept entry's fields are; raised when they change
# the packages whose code shapes an entry (its XML, its text as shown, its marks): any
# change to them makes every entry again
_SHAPED_BY = ("feeds", "present", "rank")

Key = tuple[int, str]  # a paper's id, and why it was chosen (its stored explanation)
# a ``files.Made``'s fields: when the paper is dated, its GUID, its key, its two entries
Kept = tuple[datetime, str, str, Entry, Entry]


@functools.cache
def code_stamp() -> str:
    """A hash of the code that shapes an entry: the source of these packages of digest,
    and the versions of the libraries that write and escape it."""
    digest = hashlib.sha256(str(_FORMAT).encode())
    root = Path(__file__).resolve().parents[1]
    for package in _SHAPED_BY:
        sources = sorted((root / package).glob("*.py"))
        if not sources:  # installed without its source: its version stands for it
            digest.update(_version("digest").encode())
        for source in sources:
            digest.update(source.name.encode() + b"\0" + source.read_bytes())
    for library in ("feedgen", "lxml", "markupsafe"):
        digest.update(_version(library).encode())
    return digest.hexdigest()


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def paper_stamp(row: PaperRow) -> bytes:
    """A hash of every field of the paper an entry shows."""
    fields = (
        row.key,
        row.first_key,
        row.title,
        row.abstract,
        row.url,
        row.arxiv_id,
        row.authors,
        row.first_seen.isoformat(),
        row.listing_date.isoformat() if row.listing_date else None,
        row.revised.isoformat() if row.revised else None,
    )
    return hashlib.sha256(repr(fields).encode()).digest()[:16]


def _site_stamp(site: FeedSite) -> str:
    return f"{site.base_url}\n{site.authority}"


def load(path: Path, site: FeedSite) -> dict[Key, tuple[bytes, Kept]]:
    """The entries kept in ``path`` for ``site`` by this code, each with its paper's stamp;
    none when there is no such file, or it was written by other code or for another site,
    or cannot be read."""
    found: dict[Key, tuple[bytes, Kept]] = {}
    try:
        with path.open("rb") as kept:
            if marshal.load(kept) != (code_stamp(), _site_stamp(site)):
                return {}
            while kept.peek(1):  # a batch of entries at a time: none held twice
                for key, (paper, value) in marshal.load(kept).items():
                    found[key] = (paper, _entry(value))
    except FileNotFoundError:
        return {}
    except (OSError, EOFError, ValueError, TypeError, KeyError, IndexError) as exc:
        log.warning("the kept feed entries cannot be read, so they are made again: %s", exc)
        return {}
    return found


def save(path: Path, site: FeedSite, entries: Iterable[tuple[Key, bytes, Kept]]) -> None:
    """Keep these entries in ``path`` (each with its paper's stamp), for the next run, a
    paper's all in one batch of about ``BATCH`` (what they share is written once); a file
    that cannot be written is logged, not raised (the next run makes them again)."""
    by_paper: dict[int, list[tuple[Key, bytes, Kept]]] = {}
    for entry in entries:
        by_paper.setdefault(entry[0][0], []).append(entry)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            marshal.dump((code_stamp(), _site_stamp(site)), out, 4)
            batch: dict[Key, tuple[bytes, Any]] = {}
            for group in by_paper.values():
                batch.update((key, (paper, _plain(value))) for key, paper, value in group)
                if len(batch) >= BATCH:
                    marshal.dump(batch, out, 4)
                    batch = {}
            if batch:
                marshal.dump(batch, out, 4)
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        log.warning("the feed entries could not be kept for the next run: %s", exc)


def _plain(value: Kept) -> tuple[Any, ...]:
    published, guid, paper_key, atom, rss = value
    return (
        published.isoformat(),
        guid,
        paper_key,
        atom.pieces,
        atom.holes,
        atom.digest,
        rss.pieces,
        rss.holes,
        rss.digest,
    )


def _entry(value: tuple[Any, ...]) -> Kept:
    published, guid, paper_key, a_pieces, a_holes, a_digest, r_pieces, r_holes, r_digest = value
    if not all(type(part) is tuple for part in (a_pieces, a_holes, r_pieces, r_holes)):
        raise ValueError("an entry's pieces are not as written")
    return (
        datetime.fromisoformat(published),
        guid,
        paper_key,
        Entry(a_pieces, a_holes, a_digest),
        Entry(r_pieces, r_holes, r_digest),
    )


def usable(kept: Mapping[Key, tuple[bytes, Kept]], key: Key, stamp: bytes) -> Kept | None:
    """The kept entry of ``key`` when its paper still reads as it did (``stamp``, its
    ``paper_stamp`` now)."""
    found = kept.get(key)
    if found is None or found[0] != stamp:
        return None
    return found[1]
