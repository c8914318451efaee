"""Listing readers: any supported dump file in, a ``Listing`` out.

``read_listing`` looks at a file's content, never its name, and hands it to
the reader for its format:

==================  ====================================================
layout              what the file starts with
==================  ====================================================
``arxiv-snapshot``  a JSON object with ``id`` and ``title`` on line 1
                    (read lazily, line by line; see ``snapshot``)
``hf-json``         a JSON array (the daily-papers API)
``arxiv-atom``      XML whose root is an Atom ``<feed>``
``arxiv-rss``       XML whose root is ``<rss>`` (or RSS 1.0 ``<rdf:RDF>``)
``hf-text-a/-b``    anything else that decodes as text (papers-page dumps)
==================  ====================================================

Everything but the snapshot is read whole, up to 64 MB. Whatever is not a
listing (binary data, an empty file, an HTML error page, JSON of another
shape, anything but a regular file) raises ``ListingError`` naming the file
and, where it helps, the line; a file that cannot be read raises
``ListingUnreadable``. What a reader had to mend on the way (bad bytes
replaced, a legacy encoding) is in ``Listing.notes``.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from digest.errors import ListingError, ListingUnreadable
from digest.ingest.listing import Listing

from .arxiv_feed import LAYOUT_ATOM, LAYOUT_RSS, parse_arxiv_feed
from .decoding import (
    MAX_BYTES,
    bom_encoding,
    decode_text,
    display_path,
    open_listing,
    read_capped,
)
from .hf_json import LAYOUT as LAYOUT_HF_JSON
from .hf_json import parse_hf_json
from .hf_text import LAYOUT_A, LAYOUT_B, parse_hf_text
from .snapshot import LAYOUT as LAYOUT_SNAPSHOT
from .snapshot import MAX_LINE_CHARS, looks_like_snapshot, read_snapshot

__all__ = ["LAYOUTS", "MAX_BYTES", "display_path", "open_listing", "read_listing"]

LAYOUTS = (LAYOUT_A, LAYOUT_B, LAYOUT_HF_JSON, LAYOUT_ATOM, LAYOUT_RSS, LAYOUT_SNAPSHOT)


def read_listing(path: Path, *, now: datetime, source: BinaryIO | None = None) -> Listing:
    """Read any supported listing file; ``now`` (aware UTC) dates a dump that gives no year.

    ``source`` is ``path`` already opened (``open_listing``); the caller then closes it,
    after it has consumed the entries.
    """
    path = Path(path)
    handle = source if source is not None else open_listing(path)
    streaming = False
    try:
        first_line = _first_line(handle, path)
        if first_line.lstrip().startswith(b"{"):
            if looks_like_snapshot(first_line):
                streaming = True
                return read_snapshot(handle, path, close=source is None)
            _refuse_other_json_object(first_line, path)
        text, notes = decode_text(read_capped(handle, path), path)
    finally:
        if source is None and not streaming:
            handle.close()
    start = text.lstrip()[:1]
    if not start:
        what = "empty file" if not text else "file holds only whitespace"
        raise ListingError(f"{what}; not a listing", str(path))
    if start in "[{":
        listing = parse_hf_json(text, path)
    elif start == "<":
        listing = parse_arxiv_feed(text, path)
    else:
        listing = parse_hf_text(text, path, now=now)
    listing.notes[:0] = notes
    return listing


def _first_line(handle: BinaryIO, path: Path) -> bytes:
    """The file's first line without a UTF-8 byte-order mark ("" for other marks)."""
    try:
        handle.seek(0)
        line = handle.readline(MAX_LINE_CHARS)
    except OSError as exc:
        raise ListingUnreadable(f"cannot read file: {exc.strerror or exc}", str(path)) from None
    found = bom_encoding(line)
    if found is None:
        return line
    encoding, skip = found
    # A UTF-16 or UTF-32 file is never a snapshot; the whole-file path decodes it.
    return line[skip:] if encoding == "utf-8" else b""


def _refuse_other_json_object(first_line: bytes, path: Path) -> None:
    """A first line that is a whole JSON object, but not a snapshot record, is refused here.

    Without this a JSON-lines file of some other shape would be reported as
    "extra data" by the whole-file JSON reader, which says little.
    """
    try:
        record = json.loads(first_line)
    except json.JSONDecodeError:
        return  # an object spread over several lines: the whole-file reader decides
    except ValueError as exc:  # a number of more digits than int() takes
        raise ListingError(f"not valid JSON: {str(exc).split(';')[0]}", str(path), 1) from None
    except RecursionError:
        raise ListingError("JSON nested too deeply", str(path), 1) from None
    if isinstance(record, dict):
        keys = ", ".join(sorted(str(key) for key in record)[:6]) or "none"
        raise ListingError(
            f"JSON object with keys ({keys}) is neither an arXiv snapshot record "
            '("id", "title") nor a daily-papers array',
            str(path),
            1,
        )
