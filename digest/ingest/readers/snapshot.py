"""The arXiv metadata snapshot (Kaggle's ``arxiv-metadata-oai-snapshot.json``).

One JSON object per line, millions of lines, several GB::

    {"id": "0704.0001", "authors": "C. Bal\\'azs, E. L. Berger", "title":
     "Calculation of prompt diphoton production cross sections at Tevatron
     and\\n  LHC energies", "abstract": "  A fully differential …\\n",
     "versions": [{"version": "v1", "created": "Mon, 2 Apr 2007 19:18:42 GMT"}],
     "update_date": "2008-11-13", …}

The file is never read whole: ``Listing.entries`` is a generator that reads
one line at a time, so a back-fill runs in constant memory and the caller
can stop, or roll back, at any point. A bad line raises ``ListingError``
naming that line when the generator reaches it, not before.

This loop runs millions of times, so it does only what each line needs: the
file object decodes UTF-8 in large chunks, ``JSONDecoder.raw_decode`` parses
the line, title, abstract and authors get a whitespace collapse with a fast
path for arXiv's wrapping, the common new-style id skips the regular
expression, and ``Entry`` is built positionally. JSON parsing is most of
what remains. ``published`` is the day of the first version (else
``update_date``), ``revised`` the ``update_date``.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import fields
from datetime import date
from pathlib import Path
from typing import Any, BinaryIO

from digest.errors import ListingError, ListingUnreadable
from digest.ingest.identity import normalize_arxiv_id
from digest.ingest.listing import Entry, Listing

LAYOUT = "arxiv-snapshot"
ABS_URL = "https://arxiv.org/abs/"
# Real records stay under 100 kB; the limit also keeps a newline-free
# multi-GB file from being read into memory as one "line".
MAX_LINE_CHARS = 1024 * 1024
_DECODER = json.JSONDecoder()
# The regex engine's literal scan finds "  " about three times faster than ``in``.
_double_space = re.compile("  ").search
# Parsed "created" days, memoized: the archive spans only some 13,000 days.
_DAYS: dict[str, date] = {}
_UPDATED: dict[str, date] = {}  # "update_date" strings, parsed
_DAYS_CACHED = 100_000

_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        start=1,
    )
}


def _entry_maker() -> Callable[[str, str, str, str, str, date | None, int, date | None], Entry]:
    """``Entry`` itself when its fields are in the expected order, else an adapter.

    Keyword arguments cost a frozen dataclass over twice as much as
    positional ones; per snapshot line that is a measurable share.
    """
    order = ("title", "abstract", "arxiv_id", "authors", "url", "published", "line", "revised")
    if tuple(field.name for field in fields(Entry)) == order:
        return Entry

    def by_name(*values: Any) -> Entry:
        return Entry(**dict(zip(order, values, strict=True)))

    return by_name


_make_entry = _entry_maker()


def looks_like_snapshot(first_line: bytes) -> bool:
    """Whether a file's first line is a snapshot record (a JSON object with id and title)."""
    try:
        record = json.loads(first_line)
    except (ValueError, RecursionError):
        return False
    return isinstance(record, dict) and "id" in record and "title" in record


def read_snapshot(handle: BinaryIO, path: Path, *, close: bool = True) -> Listing:
    """A listing whose entries stream from the open snapshot file, line by line.

    With ``close`` the entries close the file when they are done (or dropped).
    """
    return Listing(layout=LAYOUT, entries=_entries(handle, str(path), close), listing_date=None)


def _entries(source: BinaryIO, where: str, close: bool) -> Iterator[Entry]:
    try:
        source.seek(0)
    except OSError as exc:
        raise ListingUnreadable(f"cannot read file: {exc.strerror or exc}", where) from None
    # Text mode decodes in large chunks, far cheaper than per line. Bad
    # UTF-8 becomes lone surrogates, caught below with its line number.
    handle = io.TextIOWrapper(
        source,  # a buffered binary file, as open() gives
        encoding="utf-8-sig",
        errors="surrogateescape",
        newline="\n",
    )
    # Bound once: this loop runs millions of times.
    readline = handle.readline
    raw_decode = _DECODER.raw_decode
    number = 0
    try:
        while True:
            try:
                line = readline(MAX_LINE_CHARS)
            except OSError as exc:
                raise ListingUnreadable(
                    f"read failed: {exc.strerror or exc}", where, number + 1
                ) from None
            if not line:
                return
            number += 1
            try:
                # raw_decode skips loads()'s type checks and trailing-space regex.
                record, end = raw_decode(line)
            except ValueError:
                if line.isspace():
                    continue
                record, end = _decode_slowly(line, where, number), len(line)
            except RecursionError:
                raise ListingError("JSON nested too deeply", where, number) from None
            if end < len(line) - 1 and not line[end:].isspace():
                raise ListingError(
                    f"not valid JSON: extra data after the record (column {end + 1})",
                    where,
                    number,
                )
            if line.isascii():
                entry = _entry(record, where, number)
                # isascii() is free; only a \\u escape makes an ASCII line's text non-ASCII
                if not (
                    entry.title.isascii() and entry.abstract.isascii() and entry.authors.isascii()
                ):
                    _check_text(entry, where, number)
            else:
                _check_utf8(line, where, number)
                entry = _entry(record, where, number)
                _check_text(entry, where, number)
            yield entry
    finally:
        if close:
            handle.close()
        else:
            handle.detach()  # the caller's file stays open


def _decode_slowly(line: str, where: str, number: int) -> Any:
    """The full parser, for what the fast path refused: leading spaces, or an error."""
    if len(line) >= MAX_LINE_CHARS and not line.endswith("\n"):
        raise ListingError(
            f"line longer than {MAX_LINE_CHARS // 1024} kB; not a snapshot record", where, number
        )
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise ListingError(
            f"not valid JSON: {exc.msg} (column {exc.colno})", where, number
        ) from None
    except ValueError as exc:  # a number of more digits than int() takes
        raise ListingError(f"not valid JSON: {str(exc).split(';')[0]}", where, number) from None
    except RecursionError:
        raise ListingError("JSON nested too deeply", where, number) from None


def _check_utf8(line: str, where: str, number: int) -> None:
    try:
        line.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ListingError(f"not valid UTF-8 at column {exc.start + 1}", where, number) from None


def _check_text(entry: Entry, where: str, number: int) -> None:
    """Refuse a record whose ``\\ud800``-style escapes leave half a character: no text."""
    try:
        (entry.title + entry.abstract + entry.authors).encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end].encode("unicode_escape").decode("ascii")
        raise ListingError(
            f"not valid Unicode: an unpaired surrogate escape ({bad})", where, number
        ) from None


def _entry(record: Any, where: str, number: int) -> Entry:
    if type(record) is not dict:
        raise ListingError("not a JSON object; not a snapshot record", where, number)
    raw_id = record.get("id")
    title = record.get("title")
    if type(raw_id) is not str or type(title) is not str:
        raise ListingError('record without a string "id" and "title"', where, number)
    # New-style ids ("2403.01234") need no regular expression; older ones
    # ("hep-th/9901001") are a minority and go through the shared rule, which refuses
    # what only looks like an id ("2403.123456") rather than cut it down.
    if (
        9 <= len(raw_id) <= 10
        and raw_id[4] == "."
        and raw_id.isascii()
        and raw_id[:4].isdigit()
        and raw_id[5:].isdigit()
    ):
        arxiv_id = raw_id
    else:
        normalized = normalize_arxiv_id(raw_id)
        if normalized is None:
            raise ListingError(f"not an arXiv id: {raw_id[:40]!r}", where, number)
        arxiv_id = normalized
    title = _collapse(title)
    if not title:
        raise ListingError(f"record {arxiv_id} has an empty title", where, number)
    abstract = record.get("abstract")
    authors = record.get("authors")
    return _make_entry(
        title,
        _collapse(abstract) if type(abstract) is str else "",
        arxiv_id,
        _collapse(authors) if type(authors) is str else "",
        ABS_URL + arxiv_id,
        _published(record),
        number,
        _revised(record),
    )


def _collapse(text: str) -> str:
    """``" ".join(text.split())``, several times faster on the snapshot's text.

    Abstracts there are wrapped with bare newlines ("…is\\npresented…"), so
    turning newlines into spaces is usually all it takes; splitting on every
    space would build an object per word. Whatever that leaves unfinished (a
    run of spaces, as in titles' "and\\n  LHC", other ASCII spacing, anything
    non-ASCII) takes the exact route. Only the ASCII separators \\x1c-\\x1f,
    which ``str.split`` counts as spacing and no abstract contains, are left.
    """
    text = text.replace("\n", " ").strip()
    if (
        _double_space(text)
        or not text.isascii()
        or "\t" in text
        or "\r" in text
        or "\x0c" in text
        or "\x0b" in text
    ):
        return " ".join(text.split())
    return text


def _published(record: dict[str, Any]) -> date | None:
    versions = record.get("versions")
    if type(versions) is list and versions and type(versions[0]) is dict:
        created = versions[0].get("created")
        if type(created) is str:
            # "Mon, 2 Apr 2007 19:18:42 GMT": the first 16 characters name the
            # day, and a few thousand days cover the whole archive.
            day = _DAYS.get(created[:16])
            if day is None:
                day = _parse_created(created)
                if day is not None and len(_DAYS) < _DAYS_CACHED:
                    _DAYS[created[:16]] = day
            if day is not None:
                return day
    updated = record.get("update_date")
    if type(updated) is str:
        try:
            return date.fromisoformat(updated)
        except ValueError:
            return None
    return None


def _revised(record: dict[str, Any]) -> date | None:
    """``update_date``: the day of the paper's last change (version, metadata)."""
    updated = record.get("update_date")
    if type(updated) is not str:
        return None
    day = _UPDATED.get(updated)
    if day is None:
        try:
            day = date.fromisoformat(updated)
        except ValueError:
            return None
        if len(_UPDATED) < _DAYS_CACHED:
            _UPDATED[updated] = day
    return day


def _parse_created(created: str) -> date | None:
    parts = created.split(" ", 4)
    if len(parts) < 4 or not parts[1].isdigit() or not parts[3].isdigit():
        return None
    month = _MONTHS.get(parts[2])
    if month is None:
        return None
    try:
        return date(int(parts[3]), month, int(parts[1]))
    except ValueError:
        return None
