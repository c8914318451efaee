"""Every reader's private feed file, written from entries made once for all of them.

A reader's private feed is the entries of the papers they were sent, each with their
token, under a head that names their feed. So the parent reads the readers' sent items
as plain tuples (``store.feed_rows``); each (paper, why it was chosen) entry not made
before is made once, in both kinds of feed, by forked processes each taking a share of
the papers; and each reader's list of entries goes to the writing processes. There each
reader's tokens are signed once for both files, and each file's content hash is made
from its entries' hashes and tokens: a file that already says the same is neither
joined nor written.

The files are the bytes ``render.make_feed`` makes of the same items, and carry the same
content hash (``render.entries_hash``), so a web front serving the same feed live gives
the same body and ETag.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import Connection

from digest import forks
from digest.clock import as_utc
from digest.feeds import kept_entries
from digest.feeds.kept_entries import paper_stamp
from digest.feeds.render import FeedKind, entries_hash, pieces
from digest.feeds.site import FeedSite
from digest.feeds.staged import StagedFolder
from digest.feeds.xml import Entry, Head, fresh_entries, head
from digest.present.paper import prepare
from digest.present.views import Links, stored_view
from digest.store import papers
from digest.store.feed_rows import sent_rows
from digest.store.papers import PaperRow

KINDS: tuple[FeedKind, ...] = ("atom", "rss")
READERS_AT_ONCE = 2_000  # readers whose sent items are read in one query
ENTRIES_AT_ONCE = 1_000  # entries made in one batch (their views and items held meanwhile)
FORK_FROM = 2_000  # entries to make; fewer are made in this process
TITLE = "papers for you"  # a private feed's title, after the site's name
Key = tuple[int, str]  # a paper's id, and why it was chosen (its stored explanation)


@dataclass(frozen=True, slots=True)
class Made:
    """A paper's private entry under one explanation, made once for every reader it went
    to: its place in a feed (the paper's date, its GUID), the paper's key (what a reader's
    token signs), and its XML in each kind of feed."""

    published: datetime
    guid: str
    paper_key: str
    atom: Entry
    rss: Entry
    stamp: bytes  # what its paper said when it was made (``kept_entries.paper_stamp``)

    @property
    def kept(self) -> kept_entries.Kept:
        """Its fields as ``kept_entries`` keeps them."""
        return (self.published, self.guid, self.paper_key, self.atom, self.rss)


class _Kept:
    """The entries made for a site, valid for one ingest (a paper's text changes only
    with one): a later run in the same process makes only the new ones."""

    LIMIT = 200_000  # a day's (paper, interests) entries, at a few KB each

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sites: dict[tuple[str, str], tuple[int, dict[tuple[int, str], Made]]] = {}

    def current(self, site: FeedSite, ingest: int) -> dict[tuple[int, str], Made]:
        with self.lock:
            key = (site.base_url, site.authority)
            found = self.sites.get(key)
            if found is None or found[0] != ingest or len(found[1]) >= self.LIMIT:
                self.sites.clear()  # one site's a process, in practice
                found = self.sites[key] = (ingest, {})
            return found[1]


_kept = _Kept()


def readers_entries(
    conn: Connection,
    subscriber_ids: Sequence[int],
    site: FeedSite,
    ingest: int,
    processes: int = 1,
    keep: Path | None = None,
) -> list[tuple[int, list[Made]]]:
    """Each of these readers with the entries of what they were sent, newest sent first
    (a paper gone from the store meanwhile left out); the entries not made before (in this
    process, or kept in the file ``keep`` by a run before: ``kept_entries``) are made by
    ``processes`` forked processes, each taking its share of the papers. ``keep``: the
    entries used are kept there for the next run."""
    made = _kept.current(site, ingest)
    wanted: dict[Key, tuple[Key, float]] = {}  # each key once (one object), with its score
    sent: list[tuple[int, list[Key]]] = []
    for start in range(0, len(subscriber_ids), READERS_AT_ONCE):
        batch = subscriber_ids[start : start + READERS_AT_ONCE]
        by_reader: dict[int, list[Key]] = {sid: [] for sid in batch}
        for sid, paper_id, score, matched in sent_rows(conn, batch, site.limit):
            key = (paper_id, matched)
            found = wanted.get(key)
            if found is None:
                found = wanted[key] = (key, score)
            by_reader[sid].append(found[0])
        sent.extend(by_reader.items())
    new = [(key, score) for key, score in wanted.values() if key not in made]
    unchanged = keep is not None and keep.exists()  # the kept entries are this run's
    if new:
        stored = papers.by_ids(conn, sorted({key[0] for key, _ in new}))
        kept = kept_entries.load(keep, site) if keep is not None else {}
        groups, taken = _taken(kept, new, stored, made)
        unchanged = unchanged and not groups and taken == len(kept)
        del kept
        processes = processes if len(new) >= FORK_FROM else 1
        for some in forks.fork_pieces(functools.partial(_make, site), groups, processes):
            made.update(some)
    if keep is not None and not unchanged:
        used = [(key, made[key]) for key, _ in wanted.values() if key in made]
        kept_entries.save(keep, site, ((key, m.stamp, m.kept) for key, m in used))
    return [(sid, [made[key] for key in keys if key in made]) for sid, keys in sent]


def _taken(
    kept: dict[Key, tuple[bytes, kept_entries.Kept]],
    new: Sequence[tuple[Key, float]],
    stored: dict[int, PaperRow],
    made: dict[Key, Made],
) -> tuple[list[list[tuple[Key, PaperRow, float]]], int]:
    """Put into ``made`` the entries of ``new`` kept by a run before whose papers read as
    they did; the rest to make, a paper's all in one group (a paper gone from the store
    left out), and how many were taken."""
    by_paper: dict[int, list[tuple[Key, PaperRow, float]]] = {}
    stamps: dict[int, bytes] = {}  # each paper's worked out once: it has many explanations
    taken = 0
    for key, score in new:
        row = stored.get(key[0])
        if row is None:
            continue
        ready = None
        if kept:
            stamp = stamps.get(row.id) or stamps.setdefault(row.id, paper_stamp(row))
            ready = kept_entries.usable(kept, key, stamp)
        if ready is not None:
            made[key] = Made(*ready, stamp)  # the stamp it was kept with: the paper's now
            taken += 1
        else:
            by_paper.setdefault(key[0], []).append((key, row, score))
    return list(by_paper.values()), taken


def _make(
    site: FeedSite, groups: Sequence[list[tuple[Key, PaperRow, float]]]
) -> Iterator[dict[Key, Made]]:
    """The entries of these (paper, explanation) keys, a paper's all in one group, made
    ``ENTRIES_AT_ONCE`` or so at a time, each batch yielded as made: what an entry is made
    from (its view, its item) is let go before the next are made, and a forked process
    sends each batch on its own (``forks.fork_pieces``), a paper's pieces in one.

    Each paper's view is the one the message step made of the same item when it ran in
    this process (``stored_view``): its marked text is worked out already."""
    batch: list[tuple[Key, PaperRow, float]] = []
    for group in groups:
        batch += group
        if len(batch) >= ENTRIES_AT_ONCE:
            yield _make_some(site, batch)
            batch = []
    if batch:
        yield _make_some(site, batch)


def _make_some(site: FeedSite, found: Sequence[tuple[Key, PaperRow, float]]) -> dict[Key, Made]:
    """The entries of ``found``."""
    views = [stored_view(row, score, key[1], site.base_url) for key, row, score in found]
    prepare(views)  # papers whose marks were not recorded: each analyzed once
    items = [
        site.item(row, view, row.first_seen, private=True)
        for (_, row, _), view in zip(found, views, strict=True)
    ]
    atoms, rsss = fresh_entries(items, "atom"), fresh_entries(items, "rss")
    rows = {row.id: row for _, row, _ in found}
    stamps = {paper_id: paper_stamp(row) for paper_id, row in rows.items()}  # once a paper
    return {
        key: Made(as_utc(item.published), item.guid, row.key, atom, rss, stamps[row.id])
        for (key, row, _), item, atom, rss in zip(found, items, atoms, rsss, strict=True)
    }


def chosen(made: Sequence[Made], limit: int) -> list[Made]:
    """What ``render.select_items`` keeps of these entries: newest first by the paper's
    date, each GUID once (its newest version), at most ``limit``."""
    newest: dict[str, Made] = {}
    for entry in made:
        seen = newest.get(entry.guid)
        if seen is None or entry.published > seen.published:
            newest[entry.guid] = entry
    ordered = sorted(newest.values(), key=lambda e: (e.published, e.guid), reverse=True)
    return ordered[:limit]


# A reader's private feed to write: their id, token salt, feed name, and entries.
PrivateJob = tuple[int, str, str, list[Made]]


@dataclass(frozen=True)
class PrivateFiles:
    """Where and how a site's private feed files are written."""

    folder: Path  # the feeds folder (the files go under its ``private/``)
    site: FeedSite
    links: Links
    describe: Callable[[int, str], str]  # a reader's feed description, by id and salt
    now: datetime
    heads: dict[FeedKind, Head | None] = field(default_factory=dict, compare=False, repr=False)
    staged: StagedFolder = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "staged", StagedFolder(self.folder / "private"))

    def templated(self) -> bool:
        """Whether the readers' feeds have heads made once, as their files are joined
        here (else feedgen is to make each feed whole: a site name or address it cannot
        be given in pieces). What differs between readers (their feed's name and manage
        link) never decides it."""
        return all(self.head(kind) is not None for kind in KINDS)

    def head(self, kind: FeedKind) -> Head | None:
        """The head every reader's feed of ``kind`` has, its own fields left to fill."""
        if kind not in self.heads:
            sample = f"private/{'0' * 32}"
            meta = self.site.meta(sample, kind, TITLE, self.describe(0, ""), self.now)
            self.heads[kind] = head(meta, kind)
        return self.heads[kind]

    def write(self, jobs: Sequence[PrivateJob]) -> int:
        """Write these readers' feeds whose content changed, each under a temporary name
        (``staged``: put in place by ``staged.commit``); how many files were written."""
        return sum(self.write_one(job) for job in jobs)

    def write_one(self, job: PrivateJob) -> int:
        """Write one reader's two files, each when it changed (under temporary names);
        how many were written."""
        ident, salt, name, made = job
        entries_shown = chosen(made, self.site.limit)
        signer = self.links.signer(ident, salt)
        tokens = [signer.token(entry.paper_key) for entry in entries_shown]
        description = self.describe(ident, salt)
        path = f"private/{name}"
        written = 0
        for kind in KINDS:
            meta = self.site.meta(path, kind, TITLE, description, self.now)
            xml = [entry.atom if kind == "atom" else entry.rss for entry in entries_shown]
            hash = entries_hash(meta, kind, xml, tokens)
            file = f"{name}.{kind}"
            if self.staged.stored_hash(file) == hash:
                continue
            data = pieces(meta, kind, hash, xml, tokens, self.head(kind))
            if data is None:  # not for ``publish`` to send here: see ``templated``
                raise RuntimeError(f"no head made once for the feed {path}.{kind}")
            self.staged.write(file, data)
            written += 1
        return written
