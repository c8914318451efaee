"""What one source's fetch comes to, and how its body lands in the inbox.

``Fetched`` is one source's outcome (a status below, the bytes, the validators); a body is
written to a dot-named temporary file in the inbox (``Spool``) and renamed into place, so
ingest (which skips dotfiles) never reads half a file. An empty listing is told apart here.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from digest.files import make_folder

OK = "ok"
NOT_MODIFIED = "not-modified"
EMPTY = "empty"
TRUNCATED = "truncated"
ERROR = "error"
TOO_LARGE = "too-large"
SKIPPED = "skipped"  # returned only: a skip changes nothing in SourceState

CHUNK = 64 * 1024
# Bodies up to this size are kept in memory to check for an empty listing; a real listing
# with papers in it is larger, and an empty feed or "[]" is far smaller.
EMPTY_PROBE = 64 * 1024

_EXT_BY_TYPE = {
    "application/json": "json",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/atom+xml": "xml",
    "application/rss+xml": "xml",
    "application/xml": "xml",
    "text/xml": "xml",
    "text/plain": "txt",
    "text/html": "html",
}
KNOWN_EXT = {"json", "jsonl", "xml", "atom", "rss", "txt", "html", "md"}
_EMPTY_BODY = re.compile(rb"\s*(?:\[\s*\]|\{\s*\}|null)?\s*")
_XML_HEAD = re.compile(rb"\s*(?:\xef\xbb\xbf)?\s*<(?:\?xml|rss|feed|rdf:RDF)\b")
_XML_ITEM = re.compile(rb"<(?:[\w-]+:)?(?:item|entry)[\s>/]")


@dataclass(frozen=True)
class Fetched:
    """One source's outcome as its fetch leaves it, before it is recorded."""

    status: str
    path: Path | None = None
    nbytes: int = 0
    error: str | None = None
    attempts: int = 1
    http_status: int | None = None
    etag: str | None = None
    last_modified: str | None = None


def _looks_empty(head: bytes) -> bool:
    """An empty listing: nothing, blanks, ``[]``/``{}``/``null``, or a feed with no item."""
    if _EMPTY_BODY.fullmatch(head):
        return True
    # arXiv publishes a well-formed feed with no items on days without announcements.
    return bool(_XML_HEAD.match(head)) and not _XML_ITEM.search(head)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-.") or "source"


def extension(path: str, content_type: str | None) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix in KNOWN_EXT:
        return suffix
    if content_type:
        return _EXT_BY_TYPE.get(content_type.split(";")[0].strip().lower(), "txt")
    return "txt"


class Spool:
    """A dot-named temporary file in the inbox that becomes ``<name>-<sha256[:12]>.<ext>``."""

    def __init__(self, inbox: Path) -> None:
        make_folder(inbox)  # whatever the umask: nobody else may drop a listing in
        self.inbox = inbox
        fd, name = tempfile.mkstemp(dir=inbox, prefix=".fetch-", suffix=".part")
        self.path = Path(name)
        self.file: IO[bytes] = os.fdopen(fd, "wb")
        self.sha = hashlib.sha256()
        self.size = 0
        self.head = bytearray()
        self.renamed = False

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self.sha.update(chunk)
        self.size += len(chunk)
        if len(self.head) <= EMPTY_PROBE:
            self.head += chunk[: EMPTY_PROBE + 1 - len(self.head)]

    def looks_empty(self) -> bool:
        return self.size <= EMPTY_PROBE and _looks_empty(bytes(self.head))

    def commit(self, stem: str, ext: str, known: Callable[[str], bool]) -> tuple[str, Path | None]:
        """Rename into place, or ``not-modified`` when these bytes were fetched or ingested before.

        Servers without validators answer 200 with the same listing all day; that must not
        count as new.
        """
        self.file.flush()
        os.fsync(self.file.fileno())  # the rename must not publish a file whose data is not on disk
        self.file.close()
        sha = self.sha.hexdigest()
        final = self.inbox / f"{_slug(stem)}-{sha[:12]}.{ext}"
        if final.exists() or known(sha):
            self.discard()
            return NOT_MODIFIED, None
        os.replace(self.path, final)
        self.renamed = True
        return OK, final

    def discard(self) -> None:
        self.file.close()
        if not self.renamed:
            self.path.unlink(missing_ok=True)
