"""Publish the feeds: the global feed of new papers and one private feed per subscriber.

Items come from the store (the newest papers; each subscriber's sent digests),
so regenerating gives the same GUIDs and nothing twice. A feed whose items did
not change is not rewritten.

Unlike the rest of the data folder, feed files are readable by all (0644): a
web server running as another user serves them straight from disk, and what
they say is no secret from whoever may fetch them. A private feed is private by
its unguessable name alone, so the ``private/`` folder is 0711: the web server
can open a feed whose name it is given, but nobody but digest can list them.

A paper's GUID is a ``tag:`` URI fixed when it is first seen: the store's feed
authority (the host of ``base_url`` when feeds were first published, kept in the
store) and the key the paper was first seen under, which it keeps when it later
adopts an arXiv id. So neither a paper's new id nor a site's new address makes a
reader see the paper twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import json
import os
import re
import tempfile
from collections.abc import Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import Connection, Engine

from digest import forks
from digest.errors import WriteError
from digest.feeds.files import TITLE, PrivateFiles, PrivateJob, readers_entries
from digest.feeds.kept_entries import FILE as ENTRIES
from digest.feeds.render import (
    FEEDS_FOLDER,
    PRIVATE_FEEDS_FOLDER,
    FeedItem,
    FeedKind,
    FeedMeta,
    write_feed_if_changed,
)
from digest.feeds.site import FeedSite as FeedSite  # what every feed of a site shares
from digest.feeds.staged import spare_name
from digest.files import make_folder
from digest.present.paper import prepare
from digest.present.views import Links, paper_view
from digest.store import outbox, papers
from digest.store.engine import feed_authority, ingest_sequence, reading
from digest.store.subscribers import feed_salts
from digest.tokens import feed_name

GLOBAL_FEED = "papers"
PUBLIC_DESCRIPTION = "Papers as they appear in the listings, newest first by their own dates."
PRIVATE_DESCRIPTION = "The papers of your digests."


def private_description(links: Links, ident: int, salt: str) -> str:
    """A private feed's description: what it holds, and where its reader changes their
    interests or leaves (the manage page, as every email links it)."""
    manage = links.manage_url(links.manage_token(ident, salt))
    return f"{PRIVATE_DESCRIPTION} Change your interests or unsubscribe: {manage}"


def site_of(engine: Engine, *, base_url: str, site_name: str, limit: int) -> FeedSite:
    """The feeds' site, with the store's GUID authority (recorded on first use)."""
    authority = feed_authority(engine, urlsplit(base_url).hostname or "localhost")
    return FeedSite(base_url, site_name, authority, limit)


def public_items(conn: Connection, site: FeedSite) -> list[FeedItem]:
    """The global feed's entries: the newest papers by their own dates, so that a back-fill of
    old papers never tops it."""
    newest = papers.newest(conn, site.limit, by="dated")
    return [
        site.item(row, paper_view(row, 0.0, (), site.base_url), row.first_seen) for row in newest
    ]


def private_items(
    conn: Connection,
    subscriber_ids: list[int],
    site: FeedSite,
    voting: tuple[Links, Mapping[int, str]] | None = None,
    *,
    ingest: int | None = None,
    marking: AbstractContextManager[object] | None = None,
) -> dict[int, list[FeedItem]]:
    """The newest items each subscriber was sent, for a batch of subscribers; ``voting``:
    the links and the salts by subscriber, for each item's links with the reader's token.
    ``ingest``: the store's newest ingest, when the caller read it already; ``marking``:
    held while papers are marked (the web's threads share the marker's caches).

    Each paper's entry is made once (``site.shared``) and each reader's is that entry with
    their token: only the papers not made yet are read and marked."""
    sent = outbox.sent_items(conn, subscriber_ids, site.limit)
    made = site.shared.current(ingest_sequence(conn) if ingest is None else ingest)
    private = voting is not None
    wanted = {(row.paper_id, row.matched) for row in sent}
    wanted = {key for key in wanted if key not in made}
    if wanted:
        stored = papers.by_ids(conn, sorted({paper_id for paper_id, _ in wanted}))
        # paper by paper: each is analyzed for marking once, for all the interests that chose it
        found = [(key, stored[key[0]]) for key in sorted(wanted) if key[0] in stored]
        views = [
            paper_view(row, 0.0, json.loads(matched), site.base_url) for (_, matched), row in found
        ]
        with marking or nullcontext():
            prepare(views)
            for (key, paper), view in zip(found, views, strict=True):
                item = site.item(paper, view, paper.first_seen, private=private)
                made[key] = (item, paper.key)
    items: dict[int, list[FeedItem]] = {sid: [] for sid in subscriber_ids}
    signer, signed = None, -1
    for row in sent:
        shared = made.get((row.paper_id, row.matched))
        if shared is None:  # the paper is gone (its listing taken back meanwhile)
            continue
        token = ""
        if voting is not None:
            if signed != row.subscriber_id:
                signed = row.subscriber_id
                signer = voting[0].signer(signed, voting[1][signed])
            assert signer is not None
            token = signer.token(shared[1])
        items[row.subscriber_id].append(shared[0].for_reader(token, row.sent_at))
    return items


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off meanwhile (and in the processes forked), and
    what the process holds left unwalked: a run's feeds make hundreds of thousands of
    objects, and each full collection they would set off walks every object the process
    holds, the message step's caches too (a third of the step's time, measured).

    Turning the collector off alone would move the cost to the end: the first collection
    after walks every object made meanwhile (seconds, at 20,000 readers). So what is
    left is moved to the oldest generation unwalked (frozen, then unfrozen): any cycle
    among it goes at the next full collection, as it would have."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.unfreeze()
        if enabled:
            gc.enable()


@collector_paused()
def publish_feeds(
    engine: Engine,
    *,
    folder: Path,
    base_url: str,
    site_name: str,
    limit: int,
    key: bytes,
    now: datetime,
    changed: Collection[int] | None = None,
    processes: int | None = None,
    private: bool = True,
    keep: Path | None = None,
) -> dict[str, int]:
    """Write the global feed and the private feeds that may have changed; count what changed.

    Feeds go to ``folder`` and are served under ``{base_url}/feeds/``; each keeps the newest
    ``limit`` items; ``key`` signs the private feeds' names. ``changed`` names the subscribers
    sent something since their feed was written (None: all of them); a private feed that
    does not exist yet is written whatever it says. ``private`` False: the global feed only
    (the web front serves the private ones from the store). ``keep``: a file the private
    feeds' entries are kept in from one run to the next (``kept_entries``).
    """
    _make_folders(folder, private=private)
    site = site_of(engine, base_url=base_url, site_name=site_name, limit=limit)
    with contextlib.ExitStack() as held:  # the file of entries, until the feeds are written
        with reading(engine) as conn:
            public = public_items(conn, site)
            everyone = feed_salts(conn)
            # kept on disk: the feeds of active readers and of paused ones (back on resume)
            on_disk = {
                feed_name(key, ident, salt)
                for ident, (salt, status) in everyone.items()
                if status in ("active", "paused")
            }
            salts = {
                ident: salt
                for ident, (salt, status) in everyone.items()
                if private and status == "active"
            }
            names = {ident: feed_name(key, ident, salt) for ident, salt in salts.items()}
            links = Links(base_url, key, "")
            targets = [
                sid
                for sid, name in names.items()
                if changed is None
                or sid in changed
                or not (folder / "private" / f"{name}.atom").exists()
            ]
            files = PrivateFiles(
                folder, site, links, functools.partial(private_description, links), now
            )
            if processes is None:
                processes = forks.processes_for(len(targets) * 2, threshold=PARALLEL_FROM, cap=4)
            found: dict[int, list[FeedItem]] = {}
            readers: list[PrivateJob] = []
            if not files.templated():  # feeds feedgen makes whole, each item made for each reader
                for start in range(0, len(targets), 500):
                    found.update(
                        private_items(conn, targets[start : start + 500], site, (links, salts))
                    )
            elif targets:
                kept = keep or Path(held.enter_context(tempfile.TemporaryDirectory())) / ENTRIES
                entries, places = readers_entries(conn, targets, site, kept, min(processes, 2))
                held.callback(entries.close)
                files = dataclasses.replace(files, entries=entries)
                readers = [(sid, salts[sid], names[sid], at) for sid, at in places]
                targets = []
            conn.rollback()

        jobs: list[Job] = [
            (
                folder / f"{GLOBAL_FEED}.{kind}",
                site.meta(GLOBAL_FEED, kind, "new papers", PUBLIC_DESCRIPTION, now),
                public,
            )
            for kind in ("atom", "rss")
        ]
        for sid in targets:
            path = f"private/{names[sid]}"
            description = private_description(links, sid, salts[sid])
            jobs.extend(
                (
                    folder / f"{path}.{kind}",
                    site.meta(path, kind, TITLE, description, now),
                    found[sid],
                )
                for kind in ("atom", "rss")
            )
        several = processes if len(jobs) >= PARALLEL_FROM else 1
        written = sum(forks.fork_map(functools.partial(_write, limit=limit), jobs, several))
        written += _write_private_files(files, readers, processes)
        removed = sweep_private_feeds(folder / "private", on_disk)
        count = len(jobs) + 2 * len(readers)
        return {"written": written, "unchanged": count - written, "removed": removed}


def remove_private_feed(folder: Path, name: str) -> int:
    """Remove the files of the private feed ``name`` under ``folder``, and their spares;
    how many feed files went."""
    removed = 0
    for kind in ("atom", "rss"):
        with contextlib.suppress(FileNotFoundError):
            (folder / "private" / f"{name}.{kind}").unlink()
            removed += 1
        with contextlib.suppress(FileNotFoundError):
            (folder / "private" / spare_name(f"{name}.{kind}")).unlink()
    return removed


def sweep_private_feeds(private: Path, kept: Collection[str]) -> int:
    """Remove every private feed file whose reader left or deleted their data (a name not
    in ``kept``), so a web server serving the folder stops serving it, and its spare
    (``staged``); and the files a stopped run left under temporary names. How many feed
    files were removed."""
    try:
        with os.scandir(private) as listing:
            names = [entry.name for entry in listing]
    except (FileNotFoundError, NotADirectoryError):
        return 0
    removed = 0
    for name in names:
        stem, dot, kind = name.rpartition(".")
        if stem and dot and kind in ("atom", "rss") and stem not in kept:
            with contextlib.suppress(FileNotFoundError):
                (private / name).unlink()
                removed += 1
        elif (spare := _SPARE.fullmatch(name)) and spare.group(1) not in kept:
            with contextlib.suppress(OSError):  # gone meanwhile, or not a file
                (private / name).unlink()
        elif (left := _LEFT_BEHIND.fullmatch(name)) and not _running(int(left.group(1))):
            # written under a temporary name by a run that stopped before putting it in
            # place (``staged``); a process still running may yet rename its own
            with contextlib.suppress(FileNotFoundError):
                (private / name).unlink()
    return removed


_LEFT_BEHIND = re.compile(r"\..+\.(\d+)\.tmp")
_SPARE = re.compile(r"\.(.+)\.(?:atom|rss)\.spare")  # a feed file's spare (``spare_name``)


def _running(pid: int) -> bool:
    """Whether a process of this id runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _make_folders(folder: Path, *, private: bool) -> None:
    """The feeds folder, and its ``private/`` (open by name, never listed) whatever the umask."""
    try:
        make_folder(folder, FEEDS_FOLDER)
        if private:
            make_folder(folder / "private", PRIVATE_FEEDS_FOLDER)
            os.chmod(folder / "private", PRIVATE_FEEDS_FOLDER)  # also when it was there
    except OSError as exc:
        raise WriteError(
            f"cannot make the feeds folder {exc.filename or folder}: {exc.strerror}"
        ) from None


Job = tuple[Path, FeedMeta, list[FeedItem]]
PARALLEL_FROM = 2_000  # feeds; below this a second process costs more than it saves
# Threads a process writes files with: joining a feed takes little CPU, while making a file
# waits on the file system (a new inode: from 0.1 to 2 ms on a busy disk), not holding the
# GIL.
WRITERS = 4


def _write_private_files(files: PrivateFiles, readers: Sequence[PrivateJob], processes: int) -> int:
    """Write these readers' private feeds whose content changed, in ``processes`` forked
    processes, then put every file written in place: no old file is replaced (its inode
    freed) before every new one is made, and where the system can swap names the old
    files are kept as spares to be written over on the next run (``staged``). How many
    files were written."""
    if not readers:
        return 0
    staged: list[tuple[str, str]] = []
    try:
        files.staged.hold()  # else another process writes the folder: no spares meanwhile
        for share in forks.fork_map(functools.partial(_write_private, files), readers, processes):
            staged.extend(share)
        files.staged.commit(staged)
    except BaseException:
        files.staged.discard(staged)
        raise
    finally:
        files.staged.close()
    return len(staged)


def _write_private(files: PrivateFiles, jobs: Sequence[PrivateJob]) -> list[tuple[str, str]]:
    """Write these readers' private feeds whose content changed under temporary names, in
    ``WRITERS`` threads; the files written, each by the name it replaces."""
    try:
        if len(jobs) < WRITERS * 4:
            files.write(jobs)
        else:
            with ThreadPoolExecutor(WRITERS) as pool:
                list(pool.map(files.write, [jobs[i::WRITERS] for i in range(WRITERS)]))
    except BaseException:
        files.staged.discard(files.staged.take())
        raise
    return files.staged.take()


def _write(jobs: Sequence[Job], limit: int) -> int:
    """Write the feeds whose content changed; how many were written."""

    def some(share: Sequence[Job]) -> int:
        written = 0
        for path, meta, items in share:
            kind: FeedKind = "atom" if path.suffix == ".atom" else "rss"
            written += write_feed_if_changed(path, meta, items, kind=kind, limit=limit)
        return written

    if len(jobs) < WRITERS * 4:
        return some(jobs)
    with ThreadPoolExecutor(WRITERS) as pool:
        return sum(pool.map(some, [jobs[i::WRITERS] for i in range(WRITERS)]))
