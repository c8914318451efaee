"""RSS 2.0 and Atom feeds with feedgen, written atomically and only when they change.

Building a feed is pure (items and the run's time in, bytes out); only the
``write_*`` functions touch the disk. The caller passes the newest items it
knows of (from the store); a feed keeps at most ``limit`` of them, each guid
once. Every feed file carries a hash of what it says in a comment after the
XML declaration, so :func:`write_feed_if_changed` can skip feedgen and the
write entirely when a run brings nothing new, and the file keeps its modified
time (useful for conditional GET).
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
from typing import Literal
from urllib.parse import quote

from feedgen.feed import FeedGenerator  # type: ignore[import-untyped]
from markupsafe import escape

from digest.clock import as_utc
from digest.errors import WriteError
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

FeedKind = Literal["rss", "atom"]
# Served by a web server running as another user: the feeds folder is listable, the private
# feeds' folder only opens by name (a private feed's name is its secret).
FEEDS_FOLDER = 0o755
PRIVATE_FEEDS_FOLDER = 0o711
FEED_FILE = 0o644
GUID_DATE = "2024"  # part of every tag: guid; changing it would re-announce every paper

_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_HASH_COMMENT = re.compile(rb"<!-- digest-content: ([0-9a-f]{64}) -->")


@dataclass(frozen=True)
class FeedItem:
    """One entry; ``summary`` is HTML unless ``summary_is_html`` is False.

    ``published`` is the paper's own date (entries are ordered by it), ``updated`` when the
    paper last changed (None: not since), ``added`` when the entry came into this feed (first
    seen, or sent): what tells a live feed's clients it changed.
    """

    guid: str
    title: str
    link: str
    summary: str
    published: datetime
    terms: tuple[str, ...] = ()
    summary_is_html: bool = True
    authors: str = ""
    updated: datetime | None = None
    added: datetime | None = None

    @property
    def changed(self) -> datetime:
        """When the entry was last changed: Atom's ``updated``."""
        return max(self.published, self.updated) if self.updated else self.published

    @property
    def arrived(self) -> datetime:
        """When the entry came into the feed (its date, when that is not known)."""
        return self.added or self.published


@dataclass(frozen=True)
class FeedMeta:
    """What a feed says about itself; ``updated`` is the run's time, never the wall clock."""

    title: str
    self_url: str
    site_url: str
    updated: datetime
    description: str = "New research papers"
    author: str = "digest"
    feed_id: str | None = None  # defaults to self_url


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
    reader: tuple[str, str, str] | None = None,
) -> FeedItem:
    """A feed entry carrying what the email shows: authors, marked abstract, code, why chosen,
    and in a private feed the ``reader``'s own links (the paper's page with their token,
    "more like this", "not for me")."""
    link = reader[0] if reader is not None else paper_link(paper)
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
    if reader is not None:
        parts.append(
            f'<p><a href="{escape(reader[1])}">More like this</a>'
            f' · <a href="{escape(reader[2])}">Not for me</a></p>'
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
    )


def _xml_text(value: str) -> str:
    """Drop characters XML 1.0 cannot carry (lxml refuses the whole feed otherwise)."""
    return _NOT_XML.sub("", value)


def select_items(items: Iterable[FeedItem], limit: int) -> list[FeedItem]:
    """Newest first, each guid once (its newest version), at most ``limit``."""
    newest: dict[str, FeedItem] = {}
    for item in items:
        seen = newest.get(item.guid)
        if seen is None or as_utc(item.published) > as_utc(seen.published):
            newest[item.guid] = item
    ordered = sorted(newest.values(), key=lambda i: (as_utc(i.published), i.guid), reverse=True)
    return ordered[:limit]


def content_hash(meta: FeedMeta, items: Sequence[FeedItem], kind: FeedKind) -> str:
    """A hash of everything a feed says except its build time."""
    record = {
        "kind": kind,
        "meta": [meta.title, meta.self_url, meta.site_url, meta.description, meta.author],
        "id": meta.feed_id,
        "items": [
            [
                i.guid,
                i.title,
                i.link,
                i.summary,
                i.summary_is_html,
                as_utc(i.published).isoformat(),
                list(i.terms),
                i.authors,
                as_utc(i.changed).isoformat(),
            ]
            for i in items
        ],
    }
    encoded = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()


@dataclass(frozen=True)
class Feed:
    """A feed's chosen items and the hash of what it says (its build time left out): the
    files' change check and the live feeds' ETag."""

    meta: FeedMeta
    items: Sequence[FeedItem]
    kind: FeedKind
    hash: str

    def render(self) -> bytes:
        """The feed document."""
        return _render(self.meta, self.items, self.kind, self.hash)


def make_feed(
    meta: FeedMeta, items: Iterable[FeedItem], *, kind: FeedKind, limit: int = 100
) -> Feed:
    """The feed (RSS 2.0 or Atom) of the newest ``limit`` items, not rendered yet."""
    chosen = select_items(items, limit)
    return Feed(meta, chosen, kind, content_hash(meta, chosen, kind))


def render_feed(
    meta: FeedMeta, items: Iterable[FeedItem], *, kind: FeedKind, limit: int = 100
) -> bytes:
    """The feed document (RSS 2.0 or Atom) for the newest ``limit`` items."""
    return make_feed(meta, items, kind=kind, limit=limit).render()


def _render(meta: FeedMeta, chosen: Sequence[FeedItem], kind: FeedKind, digest: str) -> bytes:
    fg = FeedGenerator()
    # RSS's <author> must be an email address: the names go in dc:creator. Atom has its own.
    fg.load_extension("dc", atom=False, rss=True)
    fg.id(_xml_text(meta.feed_id or meta.self_url))
    fg.title(_xml_text(meta.title))
    fg.description(_xml_text(meta.description))
    fg.subtitle(_xml_text(meta.description))
    fg.author({"name": _xml_text(meta.author)})
    # feedgen gives RSS's one <link> the last link set: the site, not the feed itself.
    fg.link(href=meta.self_url, rel="self")
    fg.link(href=meta.site_url, rel="alternate")
    fg.language("en")
    # feedgen stamps the wall clock unless told: the run's time keeps output reproducible.
    fg.updated(as_utc(meta.updated))
    fg.lastBuildDate(as_utc(meta.updated))
    for item in chosen:
        entry = fg.add_entry(order="append")
        entry.guid(_xml_text(item.guid), permalink=False)
        entry.title(_xml_text(item.title))
        entry.link(href=item.link, rel="alternate")
        entry.summary(_xml_text(item.summary), type="html" if item.summary_is_html else "text")
        authors = _xml_text(item.authors).strip()
        if authors:
            entry.author({"name": authors})
            if kind == "rss":
                entry.dc.dc_creator(authors)
        entry.published(as_utc(item.published))
        entry.updated(as_utc(item.changed))
        for term in item.terms:
            if _xml_text(term).strip():
                entry.category(term=_xml_text(term).strip())
    data: bytes = fg.atom_str(pretty=True) if kind == "atom" else fg.rss_str(pretty=True)
    declaration, newline, rest = data.partition(b"\n")
    return declaration + newline + f"<!-- digest-content: {digest} -->\n".encode() + rest


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step (temp file in the same folder, then rename).

    No fsync: a feed is derived from the store and rewritten whenever its content hash does
    not match, so after a crash the worst case is one rewrite, and syncing tens of thousands
    of private feeds would cost more than building them.
    """
    try:
        if not path.parent.is_dir():
            make_folder(path.parent, FEEDS_FOLDER)
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise WriteError(f"cannot write the feed {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        # mkstemp makes 0600; feeds are served by a web server (their content is public, a
        # private feed's name is its secret: see ``publish``)
        os.chmod(temp, FEED_FILE)
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
