"""Feed XML, made by feedgen: whole feeds, and the pieces feeds share, made once.

A feed is its head (the feed's own title, id, links, description and build time), its
entries, and a closing tail. An entry says what its paper says, the same in every feed
that carries it: a private feed's entry differs from another reader's only by the
reader's token in its links. So feedgen makes each entry once, in a batch of entries
cut apart afterwards, and each head once per kind of feed (a private feed's head
differs from another's only by the reader's feed name, their manage link and the build
time); a feed is then those bytes joined with its own few fields in their holes.

The pieces are cut out of feedgen's own pretty-printed output, so a feed joined from
them is the document feedgen makes of the whole feed, byte for byte
(``tests/test_feeds.py`` checks this on generated feeds against :func:`document`). Where
a head cannot be made into a template (an empty or unwritable field, which feedgen
refuses), the whole feed is rendered by feedgen as it always was.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from feedgen.feed import FeedGenerator  # type: ignore[import-untyped]
from feedgen.util import formatRFC2822  # type: ignore[import-untyped]

from digest.clock import as_utc

FeedKind = Literal["rss", "atom"]

# Where a reader's token goes in an entry shared by every reader (their page and vote
# links). Random in each process: no paper's text can hold it by chance or on purpose. It
# never reaches a hash (an entry's hash is over its parts between the holes), so feeds
# hash alike in every process.
READER = f"digestreader{secrets.token_hex(16)}"

_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_TEXT = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ATTRIBUTE = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        '"': "&quot;",
        "\n": "&#10;",
        "\r": "&#13;",
        "\t": "&#9;",
    }
)
# Kept in each process: a day's entries (each paper under the few interest sets that chose
# it, in both kinds), its papers' shapes, and the heads of feeds.
ENTRY_BYTES = 512 * 1024 * 1024
SHAPE_BYTES = 64 * 1024 * 1024
HEAD_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One entry; ``summary`` is HTML unless ``summary_is_html`` is False.

    ``published`` is the paper's own date (entries are ordered by it), ``updated`` when the
    paper last changed (None: not since), ``added`` when the entry came into this feed (first
    seen, or sent): what tells a live feed's clients it changed. ``token``: in a private
    feed, the reader's token, which stands wherever ``link`` and ``summary`` hold
    ``READER`` (the rest is shared by every reader the paper went to).
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
    token: str = ""

    @property
    def changed(self) -> datetime:
        """When the entry was last changed: Atom's ``updated``."""
        return max(self.published, self.updated) if self.updated else self.published

    @property
    def arrived(self) -> datetime:
        """When the entry came into the feed (its date, when that is not known)."""
        return self.added or self.published

    @property
    def entry_key(self) -> tuple[object, ...]:
        """What the entry's XML is made of: all but when it came and the reader's token."""
        return (
            self.guid,
            self.title,
            self.link,
            self.summary,
            self.summary_is_html,
            self.published,
            self.updated,
            self.terms,
            self.authors,
        )

    def for_reader(self, token: str, added: datetime | None) -> FeedItem:
        """This shared entry in one reader's feed: their token, and when it was sent."""
        return FeedItem(
            self.guid,
            self.title,
            self.link,
            self.summary,
            self.published,
            self.terms,
            self.summary_is_html,
            self.authors,
            self.updated,
            added,
            token,
        )


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


def xml_text(value: str) -> str:
    """Drop characters XML 1.0 cannot carry (lxml refuses the whole feed otherwise)."""
    return _NOT_XML.sub("", value)


def escape_text(value: str) -> str:
    """``value`` as lxml writes it in an element's text."""
    return value.translate(_TEXT)


def escape_attribute(value: str) -> str:
    """``value`` as lxml writes it in an attribute, between double quotes."""
    return value.translate(_ATTRIBUTE)


# --- whole feeds, by feedgen ---------------------------------------------------------------


def _generator(meta: FeedMeta) -> FeedGenerator:
    fg = FeedGenerator()
    # RSS's <author> must be an email address: the names go in dc:creator. Atom has its own.
    fg.load_extension("dc", atom=False, rss=True)
    fg.id(xml_text(meta.feed_id or meta.self_url))
    fg.title(xml_text(meta.title))
    fg.description(xml_text(meta.description))
    fg.subtitle(xml_text(meta.description))
    fg.author({"name": xml_text(meta.author)})
    # feedgen gives RSS's one <link> the last link set: the site, not the feed itself.
    fg.link(href=meta.self_url, rel="self")
    fg.link(href=meta.site_url, rel="alternate")
    fg.language("en")
    # feedgen stamps the wall clock unless told: the run's time keeps output reproducible.
    fg.updated(as_utc(meta.updated))
    fg.lastBuildDate(as_utc(meta.updated))
    return fg


def _add(fg: FeedGenerator, item: FeedItem, kind: FeedKind, token: str) -> None:
    entry = fg.add_entry(order="append")
    entry.guid(xml_text(item.guid), permalink=False)
    entry.title(xml_text(item.title))
    entry.link(href=item.link.replace(READER, token), rel="alternate")
    summary = xml_text(item.summary.replace(READER, token))
    entry.summary(summary, type="html" if item.summary_is_html else "text")
    authors = xml_text(item.authors).strip()
    if authors:
        entry.author({"name": authors})
        if kind == "rss":
            entry.dc.dc_creator(authors)
    entry.published(as_utc(item.published))
    entry.updated(as_utc(item.changed))
    for term in item.terms:
        if xml_text(term).strip():
            entry.category(term=xml_text(term).strip())


def _bytes(fg: FeedGenerator, kind: FeedKind) -> bytes:
    data: bytes = fg.atom_str(pretty=True) if kind == "atom" else fg.rss_str(pretty=True)
    return data


def document(meta: FeedMeta, items: Sequence[FeedItem], kind: FeedKind) -> bytes:
    """The whole feed as feedgen makes it, each item in order, tokens filled in."""
    fg = _generator(meta)
    for item in items:
        _add(fg, item, kind, item.token)
    return _bytes(fg, kind)


# --- entries, made once --------------------------------------------------------------------

_OPEN = {"atom": b"\n  <entry>\n", "rss": b"\n    <item>\n"}  # feedgen's pretty printing
_TAIL = {"atom": b"</feed>\n", "rss": b"  </channel>\n</rss>\n"}
_READER = READER.encode()
# What stands for an entry's summary and for a category while its paper's shape is made.
_SUMMARY = f"digestsummary{secrets.token_hex(16)}".encode()
_TERM = f"digestterm{secrets.token_hex(16)}".encode()


@dataclass(frozen=True, slots=True)
class Entry:
    """One item's XML as it stands in a feed (its indentation and line break included):
    ``pieces`` in order, the reader's token at each place in ``holes`` (an empty piece
    there). The pieces a paper's entries have in common (all but the summary and the
    categories) are the same objects in all of them, and a summary's the same in both
    kinds of feed: a day's entries hold each once. ``digest``: a hash of what it says, the
    same in every process."""

    pieces: tuple[bytes, ...]
    holes: tuple[int, ...]
    digest: bytes

    def filled(self, token: bytes) -> bytes:
        """The entry with the reader's ``token`` in its holes."""
        if not self.holes:
            return b"".join(self.pieces)
        pieces = list(self.pieces)
        for at in self.holes:
            pieces[at] = token
        return b"".join(pieces)

    @property
    def size(self) -> int:
        """The bytes of its pieces."""
        return sum(map(len, self.pieces))


Holed = tuple[tuple[bytes, ...], tuple[int, ...]]  # pieces, and where the token goes


def _holed(data: bytes) -> Holed:
    """``data`` cut where a reader's token goes, an empty piece standing there."""
    parts = data.split(_READER)
    if len(parts) == 1:
        return (data,), ()
    pieces: list[bytes] = [parts[0]]
    for part in parts[1:]:
        pieces += (b"", part)
    return tuple(pieces), _holes(tuple(range(1, len(pieces), 2)))


@functools.lru_cache(maxsize=256)
def _holes(at: tuple[int, ...]) -> tuple[int, ...]:
    """One tuple for each layout of holes, shared by the entries that have it."""
    return at


def _joined(*holed: Holed) -> Entry:
    """An entry of these runs of pieces, one after the other."""
    pieces: list[bytes] = []
    holes: list[int] = []
    for run, places in holed:
        if places:
            holes += (len(pieces) + hole for hole in places)
        pieces += run
    cut = pieces.copy()  # the hash of the text between the holes, as cut
    for at in holes:
        cut[at] = b"\0"
    return Entry(tuple(pieces), _holes(tuple(holes)), hashlib.sha256(b"".join(cut)).digest())


@dataclass(frozen=True, slots=True)
class _Shape:
    """A paper's entry as feedgen makes it, cut where what differs between the readers it
    went to goes: the summary (their interests' marks and reasons) and the categories
    (their interests' words, each on a line of ``category[0]``, the term, ``category[1]``;
    the term an attribute, or text)."""

    before: Holed
    between: Holed
    after: Holed
    category: tuple[bytes, bytes]
    attribute: bool

    def entry(self, item: FeedItem) -> Entry | None:
        """``item``'s entry; None when feedgen would lay it out otherwise (no summary)."""
        summary = _summary_holed(item.summary)
        if summary[0] == (b"",):
            return None
        categories = _categories(item.terms, self.category, self.attribute)
        return _joined(self.before, summary, self.between, categories, self.after)


@functools.lru_cache(maxsize=4096)  # the few sets of words a day's interests match
def _categories(terms: tuple[str, ...], category: tuple[bytes, bytes], attribute: bool) -> Holed:
    """An entry's categories, each term on a line of ``category[0]``, the term (escaped
    as an attribute, or as text), ``category[1]``."""
    escape = escape_attribute if attribute else escape_text
    opening, closing = category
    found = b"".join(
        opening + escape(term).encode() + closing
        for term in (xml_text(term).strip() for term in terms)
        if term
    )
    return (found,), ()


_CONTROLS = bytes(c for c in range(32) if c not in b"\t\n\r")  # what xml_text drops, but two


@functools.lru_cache(maxsize=4096)  # the same summary in both kinds of feed: one copy
def _summary_holed(summary: str) -> Holed:
    """The summary's text in an entry, cut where a reader's token goes."""
    return _holed(_summary(summary))


def _summary(summary: str) -> bytes:
    """``xml_text(summary)`` escaped as lxml writes text, encoded: bytes work faster."""
    data = summary.encode().translate(None, _CONTROLS)
    if b"\xef\xbf\xbe" in data or b"\xef\xbf\xbf" in data:  # U+FFFE, U+FFFF
        return escape_text(xml_text(summary)).encode()
    return (
        data.replace(b"&", b"&amp;")
        .replace(b"<", b"&lt;")
        .replace(b">", b"&gt;")
        .replace(b"\r", b"&#13;")
    )


def _shape_key(kind: FeedKind, item: FeedItem) -> tuple[object, ...]:
    """What a paper's shape is made of: the entry but its summary and categories."""
    return (kind, item.guid, item.title, item.link, item.summary_is_html, item.published,
            item.updated, item.authors)  # fmt: skip


class _Kept:
    """A map bounded in bytes, shared by threads: emptied when full (a day's worth fits)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.found: dict[object, Any] = {}
        self.lock = threading.Lock()

    def put(self, key: object, value: object, size: int) -> None:
        with self.lock:
            if self.size + size > self.limit:
                self.found.clear()
                self.size = 0
            self.found[key] = value
            self.size += size


_entries = _Kept(ENTRY_BYTES)
_shapes = _Kept(SHAPE_BYTES)
_BATCH = FeedMeta("batch", "https://batch.invalid/", "https://batch.invalid/", datetime(2000, 1, 1))


def entries(items: Sequence[FeedItem], kind: FeedKind) -> list[Entry]:
    """The entries of ``items`` in a feed of ``kind``, each made once: from its paper's
    shape (made by feedgen, in one batch for the papers not shaped before), or, where
    that does not fit, by feedgen itself."""
    keys = [(kind, item.entry_key) for item in items]
    found = _entries.found
    made = [found.get(key) for key in keys]
    if None not in made:
        return made  # type: ignore[return-value]
    missing: dict[object, FeedItem] = {}
    for key, item, entry in zip(keys, items, made, strict=True):
        if entry is None:
            missing.setdefault(key, item)
    shapes = _shaped(list(missing.values()), kind)
    new: dict[object, Entry | None] = {}
    for wanted, item in missing.items():
        shape = shapes.get(_shape_key(kind, item))
        new[wanted] = shape.entry(item) if shape is not None else None
    unshaped = [wanted for wanted, entry in new.items() if entry is None]
    new.update(zip(unshaped, _made([missing[key] for key in unshaped], kind), strict=True))
    for known, entry in new.items():
        assert entry is not None
        _entries.put(known, entry, entry.size)
    return [entry or new[key] for key, entry in zip(keys, made, strict=True)]  # type: ignore[misc]


def fresh_entries(items: Sequence[FeedItem], kind: FeedKind) -> list[Entry]:
    """The entries of ``items`` in a feed of ``kind``, made as ``entries`` makes them but
    not kept: for a caller that makes each once and keeps it itself."""
    shapes = _shaped(items, kind)
    made: list[Entry | None] = []
    for item in items:
        shape = shapes.get(_shape_key(kind, item))
        made.append(shape.entry(item) if shape is not None else None)
    unshaped = [at for at, entry in enumerate(made) if entry is None]
    for at, entry in zip(unshaped, _made([items[at] for at in unshaped], kind), strict=True):
        made[at] = entry
    return made  # type: ignore[return-value]


def prepare_entries(items: Sequence[FeedItem], kinds: Sequence[FeedKind]) -> None:
    """Make the entries of many items ahead (a run's, before its feeds are written)."""
    for start in range(0, len(items), 1_000):
        for kind in kinds:
            entries(items[start : start + 1_000], kind)


def _chunks(items: Sequence[FeedItem], kind: FeedKind) -> list[bytes]:
    """Each item's entry as feedgen makes it, made in one feed and cut apart at its
    pretty-printed tags (a literal ``<`` never stands in text or attributes: lxml escapes
    it), the reader's token left as ``READER``."""
    fg = _generator(_BATCH)
    for item in items:
        _add(fg, item, kind, READER if READER in item.link else "")
    data = _bytes(fg, kind)
    starts = [m.start() + 1 for m in re.finditer(re.escape(_OPEN[kind]), data)]
    end = data.rfind(_TAIL[kind])
    if len(starts) != len(items) or end < 0:
        raise RuntimeError(f"feedgen's {kind} entries are not laid out as expected")
    return [data[start:stop] for start, stop in zip(starts, [*starts[1:], end], strict=True)]


def _made(items: Sequence[FeedItem], kind: FeedKind) -> list[Entry]:
    """Entries made by feedgen, whole."""
    if not items:
        return []
    chunks = _chunks(items, kind)
    return [_joined(_holed(chunk)) for chunk in chunks]


def _shaped(items: Sequence[FeedItem], kind: FeedKind) -> dict[tuple[object, ...], _Shape | None]:
    """The shapes of these items' papers (None: a paper feedgen lays out otherwise)."""
    keys = [_shape_key(kind, item) for item in items]
    found: dict[tuple[object, ...], _Shape | bool | None] = {
        key: _shapes.found.get(key, False) for key in keys
    }
    stand_ins: dict[tuple[object, ...], FeedItem] = {}
    for key, item in zip(keys, items, strict=True):
        if found[key] is False and key not in stand_ins:
            stand_ins[key] = FeedItem(
                item.guid,
                item.title,
                item.link,
                _SUMMARY.decode(),
                item.published,
                (_TERM.decode(),),
                item.summary_is_html,
                item.authors,
                item.updated,
            )
    if stand_ins:
        for key, chunk in zip(stand_ins, _chunks(list(stand_ins.values()), kind), strict=True):
            found[key] = _cut(chunk)
            _shapes.put(key, found[key], len(chunk))
    return found  # type: ignore[return-value]


def _cut(chunk: bytes) -> _Shape | None:
    """A shape from an entry made with stand-ins for its summary and one category; None
    when they are not where their escaping is known."""
    if chunk.count(_SUMMARY) != 1 or chunk.count(_TERM) != 1:
        return None
    summary = chunk.index(_SUMMARY)
    past = summary + len(_SUMMARY)
    term = chunk.index(_TERM)
    line = chunk.rindex(b"\n", 0, term) + 1
    end = chunk.index(b"\n", term) + 1
    opening, closing = chunk[line:term], chunk[term + len(_TERM) : end]
    attribute = opening.endswith(b' term="') and closing.startswith(b'"')
    text = opening.endswith(b"<category>") and closing.startswith(b"</category>")
    in_text = chunk[summary - 1 : summary] == b">" and chunk[past : past + 2] == b"</"
    if not (attribute or text) or not in_text or past > line:
        return None
    return _Shape(
        _holed(chunk[:summary]),
        _holed(chunk[past:line]),
        _holed(chunk[end:]),
        (opening, closing),
        attribute,
    )


# --- heads, made once per kind of feed ----------------------------------------------------

# The holes of a head: the feed's id (text), its own address (an attribute), its
# description (text), and its build time.
_HOLES = tuple(f"digesthole{n}{secrets.token_hex(8)}" for n in range(3))
_SOMETIME = datetime(1901, 2, 3, 4, 5, 6, tzinfo=UTC)  # stands for the build time
_WHEN = {"atom": _SOMETIME.isoformat(), "rss": formatRFC2822(_SOMETIME)}
_BEFORE = {0: (b"<id>",), 1: (b' href="',), 2: (b"<subtitle>", b"<description>")}


@dataclass(frozen=True)
class Head:
    """A feed's XML before its entries, cut at its holes (``holes[i]`` says what goes
    after ``parts[i]``: 0 the id, 1 the feed's address, 2 its description, 3 its build
    time), and its closing tail."""

    declaration: bytes
    parts: tuple[bytes, ...]
    holes: tuple[int, ...]
    tail: bytes

    def filled(self, meta: FeedMeta, kind: FeedKind) -> list[bytes]:
        """The head's pieces with ``meta``'s fields in their holes."""
        values = (
            escape_text(xml_text(meta.feed_id or meta.self_url)).encode(),
            escape_attribute(meta.self_url).encode(),
            escape_text(xml_text(meta.description)).encode(),
            _built(as_utc(meta.updated), kind).encode(),
        )
        pieces = [self.parts[0]]
        for hole, part in zip(self.holes, self.parts[1:], strict=True):
            pieces += (values[hole], part)
        return pieces


@functools.lru_cache(maxsize=1024)
def _built(when: datetime, kind: FeedKind) -> str:
    return when.isoformat() if kind == "atom" else str(formatRFC2822(when))


_heads = _Kept(HEAD_BYTES)


def head(meta: FeedMeta, kind: FeedKind) -> Head | None:
    """The head of feeds of ``kind`` like ``meta`` (the same title, site and author); None
    when ``meta`` does not fit a template (feedgen is then given the whole feed)."""
    own = (meta.feed_id or meta.self_url, meta.self_url, meta.description)
    if not all(xml_text(value).strip() for value in own) or xml_text(meta.self_url) != (
        meta.self_url
    ):
        return None
    key = (kind, meta.title, meta.site_url, meta.author)
    found = _heads.found.get(key)
    if found is None:
        found = _template(meta, kind)
        _heads.put(key, found, 2048)
    return found if isinstance(found, Head) else None


def _template(meta: FeedMeta, kind: FeedKind) -> Head | bool:
    """The head of ``meta``'s feeds, from feedgen given stand-ins for its own fields; False
    when its output does not show them where expected."""
    stand_in = FeedMeta(
        title=meta.title,
        self_url=_HOLES[1],
        site_url=meta.site_url,
        updated=_SOMETIME,
        description=_HOLES[2],
        author=meta.author,
        feed_id=_HOLES[0],
    )
    data = _bytes(_generator(stand_in), kind)
    declaration, newline, rest = data.partition(b"\n")
    tail = _TAIL[kind]
    if not rest.endswith(tail):
        return False
    rest = rest[: -len(tail)]
    marks = [hole.encode() for hole in _HOLES] + [_WHEN[kind].encode()]
    pattern = re.compile(b"|".join(re.escape(mark) for mark in marks))
    parts, holes, position = [], [], 0
    for found in pattern.finditer(rest):
        hole = marks.index(found.group())
        if hole in _BEFORE and not rest[: found.start()].endswith(_BEFORE[hole]):
            return False  # not where its escaping is known
        parts.append(rest[position : found.start()])
        holes.append(hole)
        position = found.end()
    parts.append(rest[position:])
    if holes.count(3) != 1 or any(
        mark.decode() in meta.title + meta.site_url + meta.author for mark in marks
    ):
        return False
    return Head(declaration + newline, tuple(parts), tuple(holes), tail)
