"""Every reader's private feed file, written from entries made once for all of them.

A reader's private feed is the entries of the papers they were sent, each with their
token, under a head that names their feed. So the parent reads the readers' sent items
as plain tuples (``store.feed_rows``); each (paper, why it was chosen) entry is copied
from the file of entries the run before left (``kept_entries``), or made once, in both
kinds of feed, by forked processes each taking a share of the papers, into a new such
file; and each reader's list of places in that file goes to the writing processes, which
map it. There each reader's tokens are signed once for both files, and each file's
content hash is made from its entries' hashes and tokens: a file that already says the
same is neither joined nor written.

The files are the bytes ``render.make_feed`` makes of the same items, framed as it frames
them (``render.framed``), and carry the same content hash (``render.digests_hash`` of the
same entries' hashes), so a web front serving the same feed live gives the same body and
ETag.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import Connection

from digest import forks
from digest.clock import as_utc
from digest.errors import WriteError
from digest.feeds.kept_entries import (
    EntryFile,
    EntryWriter,
    Group,
    Made,
    Shown,
    entry_id,
    filled,
    group,
    named,
    paper_stamp,
)
from digest.feeds.render import FeedKind, digests_hash, framed
from digest.feeds.site import FeedSite
from digest.feeds.staged import StagedFolder
from digest.feeds.xml import Head, fresh_entries, head
from digest.present.paper import prepare
from digest.present.views import Links, stored_view
from digest.rank.workers import give_back_memory
from digest.store import papers
from digest.store.feed_rows import explanations, sent_rows, shrink_cache
from digest.store.papers import PaperRow

KINDS: tuple[FeedKind, ...] = ("atom", "rss")
READERS_AT_ONCE = 500  # readers whose sent items are read in one query
ENTRIES_AT_ONCE = 1_000  # entries made in one batch (their views and items held meanwhile)
FORK_FROM = 2_000  # entries to make; fewer are made in this process
LET_GO = 100  # readers' feeds written between two givings up of the entries' pages
TITLE = "papers for you"  # a private feed's title, after the site's name
# an entry to make: its key (its explanation's ``named`` until read again: ``_explained``),
# its paper, its score
Wanted = tuple[tuple[int, str | int], PaperRow, float]
_LOW = (1 << 64) - 1  # an entry_id's explanation part


def readers_entries(
    conn: Connection,
    subscriber_ids: Sequence[int],
    site: FeedSite,
    keep: Path,
    processes: int = 1,
) -> tuple[EntryFile, list[tuple[int, list[int]]]]:
    """The file of entries these readers' feeds are written from, and each reader with
    the places in it of the entries of what they were sent, newest sent first (a paper
    gone from the store meanwhile left out).

    The file is ``keep``: the entries of the file a run before left there are taken from
    it when their paper still reads as it did, and the rest are made by ``processes``
    forked processes, each taking its share of the papers. The file is written anew when
    anything in it changes."""
    old = EntryFile.open(keep, site)
    entries: EntryFile | None = None
    try:
        known = old.names() if old is not None else set()
        sent, by_paper, fresh = _sent(conn, subscriber_ids, site.limit, known)
        stored = papers.by_ids(conn, sorted(by_paper))
        copies, to_make = _taken(old, by_paper, fresh, stored)
        del by_paper, fresh
        _explained(conn, to_make)
        _let_go(conn)  # what reading freed: not for the processes forked next
        if old is not None and not to_make and len(copies) == len(old.groups):
            entries = old  # every entry wanted is there already: the file stays as it is
        else:
            entries = _written(keep, site, old, copies, to_make, processes)
    finally:
        if old is not None and entries is not old:
            old.close()
    places = entries.places()
    return entries, [
        (sid, [places[where] for where in keys if where in places]) for sid, keys in sent
    ]


def _let_go(conn: Connection) -> None:
    """Hand back to the system what reading freed: the store's page cache (``shrink_cache``)
    and the C allocator's free pages (``give_back_memory``), the rows' among them: reading
    every reader's sent items left 250 MB of it in a day's run at 15,000 readers, which the
    processes forked next would each count as theirs."""
    give_back_memory()
    shrink_cache(conn)
    give_back_memory()


def _sent(
    conn: Connection, subscriber_ids: Sequence[int], limit: int, known: set[int]
) -> tuple[list[tuple[int, list[int]]], dict[int, list[int]], dict[int, tuple[float, str]]]:
    """Each reader with the ``entry_id`` of each entry of their feed, newest sent first;
    each paper's entries sent, each once; and the score and explanation of each entry the
    file before does not have (``known``: the ``entry_id`` of each there). An entry is
    one number in this process, however many readers it went to."""
    wanted: dict[int, int] = {}  # each entry once, by its paper and its text's hash
    fresh: dict[int, tuple[float, str]] = {}
    sent: list[tuple[int, list[int]]] = []
    for start in range(0, len(subscriber_ids), READERS_AT_ONCE):
        batch = subscriber_ids[start : start + READERS_AT_ONCE]
        by_reader: dict[int, list[int]] = {sid: [] for sid in batch}
        for sid, paper_id, score, matched in sent_rows(conn, batch, limit):
            seen = paper_id << 64 | hash(matched) & _LOW
            where = wanted.get(seen)
            if where is None:
                where = wanted[seen] = entry_id(paper_id, named(matched))
                if where not in known:
                    fresh[where] = (score, matched)
            by_reader[sid].append(where)
        sent.extend(by_reader.items())
    by_paper: dict[int, list[int]] = {}
    for where in wanted.values():
        by_paper.setdefault(where >> 64, []).append(where)
    return sent, by_paper, fresh


def _explained(conn: Connection, to_make: Sequence[list[Wanted]]) -> None:
    """The explanations of the entries to make that were looked up by name only (their
    paper changed since the file before was written): read again from the store."""
    lacking = sorted(
        {key[0] for wanted in to_make for key, _, _ in wanted if isinstance(key[1], int)}
    )
    if not lacking:
        return
    texts = {
        entry_id(paper_id, named(text)): text for paper_id, text in explanations(conn, lacking)
    }
    for wanted in to_make:
        for at, ((paper_id, name), row, score) in enumerate(wanted):
            if isinstance(name, int):
                wanted[at] = ((paper_id, texts[entry_id(paper_id, name)]), row, score)


def _taken(
    old: EntryFile | None,
    by_paper: dict[int, list[int]],
    fresh: dict[int, tuple[float, str]],
    stored: dict[int, PaperRow],
) -> tuple[list[int], list[list[Wanted]]]:
    """The groups of the old file to copy (their places in ``old.groups``): each of a paper
    wanted that still reads as it did; and the entries to make, a paper's all in one list
    (a paper gone from the store left out; an explanation not held, by its ``named``)."""
    kept: dict[int, list[int]] = {}
    if old is not None:
        for at, (paper_id, *_) in enumerate(old.groups):
            kept.setdefault(paper_id, []).append(at)
    copies: list[int] = []
    to_make: list[list[Wanted]] = []
    for paper_id, entries in by_paper.items():
        row = stored.get(paper_id)
        if row is None:
            continue
        have: set[int] = set()
        if paper_id in kept and old is not None:
            stamp = paper_stamp(row)
            for at in kept[paper_id]:
                if old.groups[at][1] == stamp:
                    copies.append(at)
                    have.update(name for name, _ in old.groups[at][4])
        missing: list[Wanted] = []
        for where in entries:
            name = where & _LOW
            if name not in have:
                score, text = fresh.get(where, (0.0, None))
                missing.append(((paper_id, text if text is not None else name), row, score))
        if missing:
            to_make.append(missing)
    return copies, to_make


def _written(
    keep: Path,
    site: FeedSite,
    old: EntryFile | None,
    copies: Sequence[int],
    to_make: Sequence[list[Wanted]],
    processes: int,
) -> EntryFile:
    """A new file of entries in place of ``keep``: the old file's groups ``copies`` as they
    stand, then the entries ``to_make``, made; the file, mapped."""
    try:
        writer = EntryWriter(keep, site)
    except OSError as exc:
        raise WriteError(f"cannot write the feed entries {keep}: {exc.strerror}") from None
    try:
        if old is not None:
            writer.copy(old, [old.groups[at] for at in copies])
        processes = processes if sum(map(len, to_make)) >= FORK_FROM else 1
        for made in forks.fork_pieces(functools.partial(_make, site), to_make, processes):
            for found in made:
                writer.add(found)
        writer.commit()
    except OSError as exc:
        writer.discard()
        raise WriteError(f"cannot write the feed entries {keep}: {exc.strerror}") from None
    except BaseException:
        writer.discard()
        raise
    entries = EntryFile.open(keep, site)
    if entries is None:
        raise WriteError(f"the feed entries just written to {keep} cannot be read")
    return entries


def _make(site: FeedSite, groups: Sequence[list[Wanted]]) -> Iterator[list[Group]]:
    """The entries of these (paper, explanation) keys, a paper's all in one list, made
    ``ENTRIES_AT_ONCE`` or so at a time, each batch yielded as made, as the file's groups:
    what an entry is made from (its view, its item) is let go before the next are made,
    and a forked process sends each batch on its own (``forks.fork_pieces``).

    Each paper's view is the one the message step made of the same item when it ran in
    this process (``stored_view``): its marked text is worked out already."""
    batch: list[Wanted] = []
    for wanted in groups:
        batch += wanted
        if len(batch) >= ENTRIES_AT_ONCE:
            yield _make_some(site, batch)
            batch = []
    if batch:
        yield _make_some(site, batch)


def _make_some(site: FeedSite, found: Sequence[Wanted]) -> list[Group]:
    """The entries of ``found``, a paper's all together, as the file's groups."""
    views = [stored_view(row, score, str(key[1]), site.base_url) for key, row, score in found]
    prepare(views)  # papers whose marks were not recorded: each analyzed once
    items = [
        site.item(row, view, row.first_seen, private=True)
        for (_, row, _), view in zip(found, views, strict=True)
    ]
    atoms, rsss = fresh_entries(items, "atom"), fresh_entries(items, "rss")
    by_paper: dict[int, tuple[PaperRow, list[tuple[str, Made]]]] = {}
    for (key, row, _), item, atom, rss in zip(found, items, atoms, rsss, strict=True):
        made = Made(as_utc(item.published), item.guid, row.key, atom, rss)
        by_paper.setdefault(row.id, (row, []))[1].append((str(key[1]), made))
    return [group(paper_id, paper_stamp(row), made) for paper_id, (row, made) in by_paper.items()]


def chosen(shown: Sequence[Shown], limit: int) -> list[Shown]:
    """What ``render.select_items`` keeps of these entries: newest first by the paper's
    date, each GUID once (its newest version), at most ``limit``."""
    newest: dict[bytes, Shown] = {}
    for entry in shown:
        seen = newest.get(entry.guid)
        if seen is None or entry.published > seen.published:
            newest[entry.guid] = entry
    ordered = sorted(newest.values(), key=lambda e: (e.published, e.guid), reverse=True)
    return ordered[:limit]


# A reader's private feed to write: their id, token salt, feed name, and the places of
# their entries in the file of entries.
PrivateJob = tuple[int, str, str, list[int]]


@dataclass(frozen=True)
class PrivateFiles:
    """Where and how a site's private feed files are written."""

    folder: Path  # the feeds folder (the files go under its ``private/``)
    site: FeedSite
    links: Links
    describe: Callable[[int, str], str]  # a reader's feed description, by id and salt
    now: datetime
    heads: dict[FeedKind, Head | None] = field(default_factory=dict, compare=False, repr=False)
    entries: EntryFile | None = field(default=None, compare=False, repr=False)
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
        (``staged``: put in place by ``staged.commit``); how many files were written. The
        pages of the file of entries read meanwhile are given up every ``LET_GO`` readers:
        the file's bytes are the system's cache, not this process's memory."""
        written = 0
        for done, job in enumerate(jobs, 1):
            written += self.write_one(job)
            if self.entries is not None and done % LET_GO == 0:
                self.entries.let_go()
        return written

    def write_one(self, job: PrivateJob) -> int:
        """Write one reader's two files, each when it changed (under temporary names);
        how many were written."""
        ident, salt, name, places = job
        entries = self.entries
        if entries is None:
            raise RuntimeError("no file of entries to write the private feeds from")
        shown = chosen([entries.shown(at) for at in places], self.site.limit)
        signer = self.links.signer(ident, salt)
        tokens = [signer.token(entry.paper_key) for entry in shown]
        encoded = [token.encode() for token in tokens]  # once for both kinds
        description = self.describe(ident, salt)
        path = f"private/{name}"
        written = 0
        for kind in KINDS:
            meta = self.site.meta(path, kind, TITLE, description, self.now)
            atom = kind == "atom"
            digests = [entry.atom_digest if atom else entry.rss_digest for entry in shown]
            hash = digests_hash(meta, kind, digests, tokens)
            file = f"{name}.{kind}"
            if self.staged.stored_hash(file) == hash:
                continue
            top = self.head(kind)
            if top is None:  # not for ``publish`` to send here: see ``templated``
                raise RuntimeError(f"no head made once for the feed {path}.{kind}")
            body: list[bytes | memoryview] = []
            for entry, token in zip(shown, encoded, strict=True):
                body += filled(entry, atom, token)
            # one buffer: a system call takes a thousand small pieces more slowly than a
            # copy joins them
            self.staged.write(file, [b"".join(framed(top, meta, kind, hash, body))])
            written += 1
        return written
