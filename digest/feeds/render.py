"""RSS 2.0 and Atom feeds with feedgen, written atomically and only when they change.

Building a feed is pure (items and the run's time in, bytes out); only the
``write_*`` functions touch the disk. The caller passes the newest items it
knows of (from the store); a feed keeps at most ``limit`` of them, each guid
once. Each entry's XML is made by feedgen once and shared by every feed that
carries it (``digest.feeds.xml``); a feed is its head, its entries and its
readers' tokens joined. Every feed file carries a hash of what it says in a
comment after the XML declaration, made from its entries' own hashes, so
:func:`write_feed_if_changed` can skip the write entirely when a run brings
nothing new, and the file keeps its modified time (useful for conditional GET).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from markupsafe import escape

from digest.clock import as_utc
from digest.errors import WriteError
from digest.feeds.staged import FEED_FILE, write_pieces
from digest.feeds.xml import READER as READER
from digest.feeds.xml import Entry, Head, document, entries, head
from digest.feeds.xml import FeedItem as FeedItem
from digest.feeds.xml import FeedKind as FeedKind
from digest.feeds.xml import FeedMeta as FeedMeta
from digest.files import make_folder
from digest.present.paper import (
    PaperView,
    arxiv_url,
    authors_line,
    find_links,
    is_code_link,
    paper_link,
    shown,
)
from digest.rank.highlight import mark

# Served by a web server running as another user: the feeds folder is listable, the private
# feeds' folder only opens by name (a private feed's name is its secret).
FEEDS_FOLDER = 0o755
PRIVATE_FEEDS_FOLDER = 0o711
GUID_DATE = "2024"  # part of every tag: guid; changing it would re-announce every paper

_HASH_COMMENT = re.compile(rb"<!-- digest-content: ([0-9a-f]{64}) -->")


@functools.lru_cache(maxsize=20_000)
def paper_guid(key: str, authority: str) -> str:
    """A stable ``tag:`` URI for a paper key, e.g. ``tag:example.org,2024:arxiv:2403.01234``."""
    return f"tag:{authority.lower()},{GUID_DATE}:{quote(key, safe=':/._-~@')}"


@functools.lru_cache(maxsize=20_000)
def _paper_parts(abstract: str, authors: str, arxiv_id: str | None) -> tuple[str, str]:
    """What a paper's entry shows whoever reads it: who wrote it, and its code links.

    A paper goes into the feeds of many readers; this is worked out once, not per reader.
    """
    byline = [str(escape(authors))] if authors else []
    if arxiv_id:
        url = arxiv_url(arxiv_id)
        byline.append(f'<a href="{escape(url)}">arXiv:{escape(arxiv_id)}</a>')
    code = [url for url in find_links(abstract) if is_code_link(url)]
    anchors = ", ".join(f'<a href="{escape(u)}">{escape(u)}</a>' for u in code)
    return (
        f"<p>{' · '.join(byline)}</p>" if byline else "",
        f"<p>Code: {anchors}</p>" if code else "",
    )


def item_for_paper(
    paper: PaperView,
    *,
    guid: str,
    published: datetime,
    updated: datetime | None = None,
    added: datetime | None = None,
    token: str | None = None,
) -> FeedItem:
    """A feed entry carrying what the email shows: authors, marked abstract, code, why chosen.

    ``token``: in a private feed, the reader's token for the paper; the entry then links
    the paper's page with it, and "more like this" and "not for me" (the view's
    ``token_links``). Its ``link`` and ``summary`` hold ``READER`` where the token goes,
    so the same entry serves every reader the paper went to (``FeedItem.for_reader``)."""
    if token is not None and paper.token_links is None:
        raise ValueError("a reader's entry needs the paper's links with a token")
    private = paper.token_links.filled(READER) if token is not None and paper.token_links else None
    link = private[0] if private is not None else paper_link(paper)
    text = shown(paper)
    authors = authors_line(paper.authors)
    byline, code = _paper_parts(paper.abstract, authors, paper.arxiv_id)
    more = f'<p><a href="{escape(link)}">Read the paper</a></p>' if text.truncated else ""
    # <strong>, not <mark>: feed readers' HTML sanitizers (feedparser's among them) drop <mark>.
    abstract = mark(text.abstract, text.marks.abstract, "<strong>", "</strong>")
    parts = [byline, f"<p>{abstract}</p>", code]
    if text.marks.reasons:
        parts.append(f"<p>Matched: {escape(', '.join(text.marks.reasons))}</p>")
    if paper.because:
        parts.append(f"<p>Because you liked “{escape(paper.because)}”.</p>")
    parts.append(more)
    if private is not None:
        parts.append(
            f'<p><a href="{escape(private[1])}">More like this</a>'
            f' · <a href="{escape(private[2])}">Not for me</a></p>'
        )
    return FeedItem(
        guid=guid,
        title=paper.title,
        link=link,
        summary="".join(parts),
        published=published,
        terms=text.marks.reasons,
        authors=authors,
        updated=updated,
        added=added,
        token=token or "",
    )


def select_items(items: Iterable[FeedItem], limit: int) -> list[FeedItem]:
    """Newest first, each guid once (its newest version), at most ``limit``."""
    newest: dict[str, FeedItem] = {}
    for item in items:
        seen = newest.get(item.guid)
        if seen is None or as_utc(item.published) > as_utc(seen.published):
            newest[item.guid] = item
    ordered = sorted(newest.values(), key=lambda i: (as_utc(i.published), i.guid), reverse=True)
    return ordered[:limit]


def content_hash(
    meta: FeedMeta, items: Sequence[FeedItem], made: Sequence[Entry], kind: FeedKind
) -> str:
    """A hash of everything a feed says except its build time: its own fields, and each
    entry's hash (of its XML, made once) with the reader's token."""
    return entries_hash(meta, kind, made, [item.token for item in items])


def entries_hash(
    meta: FeedMeta, kind: FeedKind, made: Sequence[Entry], tokens: Sequence[str]
) -> str:
    """``content_hash`` of a feed of these entries, each with its reader's token."""
    return digests_hash(meta, kind, [entry.digest for entry in made], tokens)


def digests_hash(
    meta: FeedMeta, kind: FeedKind, digests: Sequence[bytes], tokens: Sequence[str]
) -> str:
    """``content_hash`` of a feed of entries of these hashes, each with its reader's token."""
    record = [kind, meta.title, meta.self_url, meta.site_url, meta.description, meta.author]
    digest = hashlib.sha256(json.dumps([*record, meta.feed_id]).encode())
    for entry, token in zip(digests, tokens, strict=True):
        digest.update(entry)
        digest.update(token.encode() + b"\n")
    return digest.hexdigest()


def pieces(
    meta: FeedMeta,
    kind: FeedKind,
    hash: str,
    made: Sequence[Entry],
    tokens: Sequence[str],
    top: Head | None = None,
) -> list[bytes | memoryview] | None:
    """The feed document of these entries with their readers' tokens, as the pieces of
    its head and entries in order; None when its head is one feedgen must write itself.
    ``top``: its head, when the caller knows it fits ``meta`` (``head``)."""
    top = top or head(meta, kind)
    if top is None:
        return None
    filled = [entry.filled(token.encode()) for entry, token in zip(made, tokens, strict=True)]
    return framed(top, meta, kind, hash, filled)


def framed(
    top: Head, meta: FeedMeta, kind: FeedKind, hash: str, body: Sequence[bytes | memoryview]
) -> list[bytes | memoryview]:
    """A feed document's pieces in order: its head (``top``, filled with ``meta``'s fields
    and the content ``hash``), the entries' pieces ``body``, its tail."""
    return [
        top.declaration,
        f"<!-- digest-content: {hash} -->\n".encode(),
        *top.filled(meta, kind),
        *body,
        top.tail,
    ]


@dataclass(frozen=True)
class Feed:
    """A feed's chosen items, their entries, and the hash of what it says (its build time
    left out): the files' change check and the live feeds' ETag."""

    meta: FeedMeta
    items: Sequence[FeedItem]
    kind: FeedKind
    hash: str
    entries: Sequence[Entry]

    def render(self) -> bytes:
        """The feed document: its head, its entries and their readers' tokens, joined."""
        tokens = [item.token for item in self.items]
        found = pieces(self.meta, self.kind, self.hash, self.entries, tokens)
        if found is not None:
            return b"".join(found)
        # a head feedgen must write itself
        comment = f"<!-- digest-content: {self.hash} -->\n".encode()
        declaration, newline, rest = document(self.meta, self.items, self.kind).partition(b"\n")
        return declaration + newline + comment + rest


def make_feed(
    meta: FeedMeta, items: Iterable[FeedItem], *, kind: FeedKind, limit: int = 100
) -> Feed:
    """The feed (RSS 2.0 or Atom) of the newest ``limit`` items, not joined yet (its entries
    made when they were not before)."""
    chosen = select_items(items, limit)
    made = entries(chosen, kind)
    return Feed(meta, chosen, kind, content_hash(meta, chosen, made, kind), made)


def render_feed(
    meta: FeedMeta, items: Iterable[FeedItem], *, kind: FeedKind, limit: int = 100
) -> bytes:
    """The feed document (RSS 2.0 or Atom) for the newest ``limit`` items."""
    return make_feed(meta, items, kind=kind, limit=limit).render()


def write_atomically(
    path: Path, data: bytes | Sequence[bytes], *, folder_made: bool = False
) -> None:
    """Replace ``path`` with ``data`` (or its pieces, in order) in one step (temp file in the
    same folder, then rename); ``folder_made``: its folder is known to be there.

    No fsync: a feed is derived from the store and rewritten whenever its content hash does
    not match, so after a crash the worst case is one rewrite, and syncing tens of thousands
    of private feeds would cost more than building them.
    """
    try:
        if not folder_made and not path.parent.is_dir():
            make_folder(path.parent, FEEDS_FOLDER)
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise WriteError(f"cannot write the feed {path}: {exc.strerror or exc}") from None
    try:
        try:
            write_pieces(fd, [data] if isinstance(data, bytes) else data)
            # mkstemp makes 0600; feeds are served by a web server (their content is public,
            # a private feed's name is its secret: see ``publish``)
            os.fchmod(fd, FEED_FILE)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise WriteError(f"cannot write the feed {path}: {exc.strerror or exc}") from None
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def stored_hash(path: Path) -> str | None:
    """The content hash written into an existing feed file, if any."""
    try:
        with path.open("rb") as feed:
            head = feed.read(512)
    except OSError:
        return None
    match = _HASH_COMMENT.search(head)
    return match.group(1).decode() if match else None


def write_feed_if_changed(
    path: Path, meta: FeedMeta, items: Iterable[FeedItem], *, kind: FeedKind, limit: int = 100
) -> bool:
    """Write the feed unless the file already says the same; True when it was written."""
    feed = make_feed(meta, items, kind=kind, limit=limit)
    if stored_hash(path) == feed.hash:
        return False
    write_atomically(path, feed.render())
    return True
