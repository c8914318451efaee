"""Every reader's private feed file, written from entries made once: the same bytes as
the feed built of the same reader's items one by one (as the web front builds it), in one
process or several, and nothing written again when nothing changed."""

from __future__ import annotations

import errno
import gc
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import feedparser
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from digest.deliver.transports import RecordingTransport
from digest.errors import WriteError
from digest.feeds import exchange, files, kept_entries, staged
from digest.feeds.files import PrivateFiles
from digest.feeds.publish import (
    collector_paused,
    private_description,
    private_items,
    publish_feeds,
    remove_private_feed,
    site_of,
    sweep_private_feeds,
)
from digest.feeds.render import FeedKind, render_feed
from digest.present.views import Links
from digest.service.cycle import run_cycle
from digest.service.keys import site_keys
from digest.service.subscriptions import operator_patch, upsert_subscriber
from digest.settings import Settings, load_settings
from digest.store.engine import open_store, reading, transaction
from digest.store.feed_rows import sent_rows
from digest.store.subscribers import feed_salts
from digest.tokens import feed_name
from tests.test_cycle import ticking
from tests.test_feed_spares import swaps_here

DAY = date(2026, 3, 12)
JOINED = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)
WRITTEN = datetime(2026, 3, 13, 9, 30, tzinfo=UTC)
PEOPLE = {
    "ada@example.org": ['"federated learning"', 'llm OR "language model"'],
    "bob@example.org": ["diffusion -survey"],
    "cy@example.org": ["speech", "translation ^2"],
    "dee@example.org": ["self-supervised", "diffusion"],
    "eve@example.org": ["diffusion -survey"],  # bob's interest: the same entries, her tokens
}
KINDS: tuple[FeedKind, ...] = ("atom", "rss")


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    env = {
        "DIGEST_DATA_DIR": str(tmp_path / "data"),
        "DIGEST_SMTP_CONNECTIONS": "1",
        "DIGEST_DATABASE_URL": database_url,
        "DIGEST_FEED_ITEMS": "4",  # fewer than the two days' digests hold: some are left out
    }
    return load_settings(environ=env, cwd=tmp_path)


@pytest.fixture
def store(settings: Settings, dump_a: Path, dump_b: Path) -> Iterator[Engine]:
    """Two days of digests sent to every reader."""
    engine = open_store(settings.database_url)
    for address, interests in PEOPLE.items():
        upsert_subscriber(engine, operator_patch(address, interests), now=JOINED)
    settings.inbox.mkdir(parents=True, exist_ok=True)
    clock = ticking(datetime(2026, 3, 12, 7, 0, tzinfo=UTC))
    for day, dump in ((DAY, dump_b), (DAY + timedelta(1), dump_a)):
        shutil.copy(dump, settings.inbox / f"{day}.txt")
        run_cycle(settings, engine, clock=clock, period=day, transport=RecordingTransport())
    yield engine
    engine.dispose()


def publish(
    settings: Settings,
    store: Engine,
    folder: Path,
    processes: int,
    keep: Path | None = None,
    limit: int | None = None,
) -> dict[str, int]:
    return publish_feeds(
        store,
        folder=folder,
        base_url=settings.base_url,
        site_name=settings.site_name,
        limit=limit or settings.feed_items,
        key=site_keys(settings, store, WRITTEN).signing,
        now=WRITTEN,
        processes=processes,
        keep=keep,
    )


def one_by_one(settings: Settings, store: Engine, base_url: str | None = None) -> dict[str, bytes]:
    """Each reader's private feed files, each built of their items on its own."""
    key = site_keys(settings, store, WRITTEN).signing
    base_url = base_url or settings.base_url
    site = site_of(
        store, base_url=base_url, site_name=settings.site_name, limit=settings.feed_items
    )
    links = Links(base_url, key, "")
    built: dict[str, bytes] = {}
    with reading(store) as conn:
        for ident, (salt, _) in feed_salts(conn).items():
            items = private_items(conn, [ident], site, (links, {ident: salt}))[ident]
            path = f"private/{feed_name(key, ident, salt)}"
            for kind in KINDS:
                description = private_description(links, ident, salt)
                meta = site.meta(path, kind, "papers for you", description, WRITTEN)
                built[f"{path}.{kind}"] = render_feed(meta, items, kind=kind, limit=site.limit)
    return built


@pytest.mark.parametrize(
    ("processes", "templated"),
    # not templated: heads feedgen must make whole (no real site's, so far), where each
    # reader's feed is made by feedgen from items made for them
    [(1, True), (2, True), (2, False)],
)
def test_private_files_are_the_feeds_built_one_by_one(
    settings: Settings,
    store: Engine,
    tmp_path: Path,
    processes: int,
    templated: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(PrivateFiles, "templated", lambda self: templated)
    folder = tmp_path / "out"
    counts = publish(settings, store, folder, processes)
    expected = one_by_one(settings, store)
    assert counts == {"written": len(expected) + 2, "unchanged": 0, "removed": 0}
    written = {f"private/{path.name}": path.read_bytes() for path in (folder / "private").iterdir()}
    assert written.keys() == expected.keys()
    for name, data in written.items():
        assert data == expected[name], name
    sizes = [len(feedparser.parse(data).entries) for data in written.values()]
    assert max(sizes) == settings.feed_items  # the newest kept, the rest left out


def test_readers_sent_the_same_papers_get_their_own_tokens(
    settings: Settings, store: Engine, tmp_path: Path
) -> None:
    folder = tmp_path / "out"
    publish(settings, store, folder, 1)
    key = site_keys(settings, store, WRITTEN).signing
    links = Links(settings.base_url, key, "")
    with reading(store) as conn:
        salts = {ident: salt for ident, (salt, _) in feed_salts(conn).items()}
    ids = sorted(salts)
    bob, eve = ids[1], ids[4]
    feeds = {
        ident: feedparser.parse(
            (folder / "private" / f"{feed_name(key, ident, salts[ident])}.atom").read_bytes()
        )
        for ident in (bob, eve)
    }
    assert [e.id for e in feeds[bob].entries] == [e.id for e in feeds[eve].entries]
    assert feeds[bob].entries, "bob was sent nothing"
    for ident, feed in feeds.items():
        for entry in feed.entries:
            paper_key = unquote(entry.link.rsplit("/", 1)[1].split("?")[0])
            page = links.reader_links(ident, salts[ident], paper_key)[0]
            assert entry.link == page


def test_nothing_is_written_again_when_nothing_changed(
    settings: Settings, store: Engine, tmp_path: Path
) -> None:
    folder = tmp_path / "out"
    first = publish(settings, store, folder, 2)
    times = {path: path.stat().st_mtime_ns for path in (folder / "private").iterdir()}
    again = publish(settings, store, folder, 2)
    assert again == {"written": 0, "unchanged": first["written"], "removed": 0}
    assert {path: path.stat().st_mtime_ns for path in (folder / "private").iterdir()} == times


def written(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*.*")}


@pytest.fixture
def making(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many entries each batch made (``files._make_some``)."""
    made: list[int] = []
    real = files._make_some

    def counted(site: Any, found: Any) -> Any:
        made.append(len(found))
        return real(site, found)

    monkeypatch.setattr(files, "_make_some", counted)
    return made


def test_a_run_in_a_new_process_takes_the_entries_the_run_before_kept(
    settings: Settings, store: Engine, tmp_path: Path, making: list[int]
) -> None:
    keep = tmp_path / "feed-entries"
    publish(settings, store, tmp_path / "first", 1, keep)
    assert sum(making) > 0
    assert stat.S_IMODE(keep.stat().st_mode) == 0o600
    making.clear()
    inode = keep.stat().st_ino
    publish(settings, store, tmp_path / "again", 1, keep)
    assert making == []
    assert written(tmp_path / "again") == written(tmp_path / "first")
    assert keep.stat().st_ino == inode  # every entry kept was used, none made: not rewritten


def test_a_kept_entry_is_made_again_when_its_paper_changed(
    settings: Settings, store: Engine, tmp_path: Path, making: list[int]
) -> None:
    keep = tmp_path / "feed-entries"
    publish(settings, store, tmp_path / "first", 1, keep)
    with transaction(store) as conn:
        paper = conn.execute(  # the first item of the newest digest: in a feed
            sa.text(
                "SELECT i.paper_id FROM digestitem i JOIN digest d ON d.id = i.digest_id"
                " WHERE d.status = 'sent' ORDER BY d.sent_at DESC, i.rank LIMIT 1"
            )
        ).scalar_one()
        explanations = conn.execute(
            sa.text("SELECT count(DISTINCT matched) FROM digestitem WHERE paper_id = :p"),
            {"p": paper},
        ).scalar_one()
        conn.execute(
            sa.text("UPDATE paper SET title = 'A title made better' WHERE id = :p"), {"p": paper}
        )
    making.clear()
    publish(settings, store, tmp_path / "again", 1, keep)
    assert 1 <= sum(making) <= explanations  # its entries, under the reasons still shown
    publish(settings, store, tmp_path / "fresh", 1)  # every entry made in this process
    again = written(tmp_path / "again")
    assert again == written(tmp_path / "fresh")
    assert any(b"A title made better" in data for data in again.values())


def test_the_file_keeps_only_the_entries_of_the_feeds_as_they_are(
    settings: Settings, store: Engine, tmp_path: Path, making: list[int]
) -> None:
    """Entries that left every feed are not carried on from one run to the next: the
    file holds what the feeds hold, however many runs made it."""
    keep = tmp_path / "feed-entries"
    publish(settings, store, tmp_path / "first", 1, keep)
    site = site_of(store, base_url=settings.base_url, site_name=settings.site_name, limit=2)
    before = kept_entries.EntryFile.open(keep, site)
    assert before is not None
    papers_before = {group[0] for group in before.groups}
    before.close()
    making.clear()
    publish(settings, store, tmp_path / "newest two", 1, keep, limit=2)
    assert making == []  # every entry still shown was kept
    after = kept_entries.EntryFile.open(keep, site)
    assert after is not None
    with reading(store) as conn:
        readers = [ident for ident, (_, status) in feed_salts(conn).items() if status == "active"]
        in_feeds = {paper for _, paper, _, _ in sent_rows(conn, readers, 2)}
    papers_after = {group[0] for group in after.groups}
    after.close()
    assert papers_after == in_feeds and papers_after < papers_before
    publish(settings, store, tmp_path / "fresh", 1, limit=2)  # every entry made here
    assert written(tmp_path / "newest two") == written(tmp_path / "fresh")


@pytest.mark.parametrize("kept", ["other code", "broken"])
def test_entries_kept_by_other_code_or_broken_are_made_again(
    settings: Settings,
    store: Engine,
    tmp_path: Path,
    making: list[int],
    kept: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keep = tmp_path / "feed-entries"
    publish(settings, store, tmp_path / "first", 1, keep)
    made = sum(making)
    if kept == "broken":
        keep.write_bytes(keep.read_bytes()[: keep.stat().st_size // 2])
    else:
        monkeypatch.setattr(kept_entries, "code_stamp", lambda: "code changed since")
    making.clear()
    publish(settings, store, tmp_path / "again", 1, keep)
    assert sum(making) == made
    assert written(tmp_path / "again") == written(tmp_path / "first")
    site = site_of(
        store, base_url=settings.base_url, site_name=settings.site_name, limit=settings.feed_items
    )
    again = kept_entries.EntryFile.open(keep, site)  # kept again, as this code makes them
    assert again is not None and kept_entries.records_of(again.groups) == made
    again.close()


def test_the_sweep_removes_only_feeds_of_readers_gone(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir()
    for name in ("kept.atom", "kept.rss", "gone.atom", "gone.rss", ".atom", ".kept.atom.x.tmp"):
        (private / name).write_text("x")
    assert sweep_private_feeds(private, {"kept"}) == 2
    assert sorted(p.name for p in private.iterdir()) == [
        ".atom",
        ".kept.atom.x.tmp",
        "kept.atom",
        "kept.rss",
    ]


def test_the_sweep_removes_the_spares_of_readers_gone(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir()
    kept = ("kept.atom", "kept.rss", ".kept.atom.spare", ".kept.rss.spare")
    for name in (*kept, "gone.atom", ".gone.atom.spare", ".gone.rss.spare"):
        (private / name).write_text("x")
    (private / ".left.rss.spare").mkdir()  # not a file: left, and no failure
    assert sweep_private_feeds(private, {"kept"}) == 1
    assert sorted(p.name for p in private.iterdir()) == sorted([*kept, ".left.rss.spare"])


def test_a_readers_feed_goes_with_its_spares(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir()
    for name in ("gone.atom", "gone.rss", ".gone.atom.spare", ".gone.rss.spare", "kept.atom"):
        (private / name).write_text("x")
    (private / ".kept.atom.spare").write_text("x")
    assert remove_private_feed(tmp_path, "gone") == 2
    assert sorted(p.name for p in private.iterdir()) == [".kept.atom.spare", "kept.atom"]


def test_daily_replacements_write_over_the_old_files_and_leave_nothing_else(
    settings: Settings, store: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(staged, "SPARE_REST", 0.0)  # as a day later
    folder = tmp_path / "out"
    private = folder / "private"
    first = publish_as(settings, store, folder, "Papers")
    inodes = {path.name: path.stat().st_ino for path in private.iterdir()}
    for day in ("Second papers", "Third papers"):
        assert publish_as(settings, store, folder, day)["written"] == first["written"]
    swapped = swaps_here(tmp_path)
    for path in private.iterdir():
        if path.name.startswith("."):
            assert swapped and path.name.endswith(".spare"), path.name
            assert feedparser.parse(path.read_bytes()).feed.title == "Second papers: papers for you"
            continue
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        assert feedparser.parse(path.read_bytes()).feed.title == "Third papers: papers for you"
        assert (path.stat().st_ino == inodes[path.name]) == swapped  # the first day's file
    live = sorted(inodes)
    assert sorted(path.name for path in private.iterdir()) == sorted(
        live + ([f".{name}.spare" for name in live] if swapped else [])
    )


def test_the_sweep_removes_what_a_stopped_run_left_under_temporary_names(
    tmp_path: Path,
) -> None:
    private = tmp_path / "private"
    private.mkdir()
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()  # its id names no running process now (reused ids aside)
    left = f".reader.atom.{ended.pid}.tmp"
    writing = f".reader.rss.{os.getpid()}.tmp"  # a running process may yet rename it
    for name in (left, writing, "reader.atom", "reader.rss"):
        (private / name).write_text("x")
    assert sweep_private_feeds(private, {"reader"}) == 0
    assert sorted(p.name for p in private.iterdir()) == [writing, "reader.atom", "reader.rss"]


def test_the_collector_is_back_as_it_was_after_the_feeds(
    settings: Settings, store: Engine, tmp_path: Path
) -> None:
    gc.enable()
    publish(settings, store, tmp_path / "out", 1)
    assert gc.isenabled() and gc.get_freeze_count() == 0
    gc.disable()
    try:
        publish(settings, store, tmp_path / "again", 1)
        assert not gc.isenabled() and gc.get_freeze_count() == 0
    finally:
        gc.enable()
    with pytest.raises(OSError), collector_paused():
        assert not gc.isenabled()
        raise OSError("a failure part way")
    assert gc.isenabled() and gc.get_freeze_count() == 0


def publish_as(settings: Settings, store: Engine, folder: Path, site_name: str) -> dict[str, int]:
    return publish_feeds(
        store,
        folder=folder,
        base_url=settings.base_url,
        site_name=site_name,
        limit=settings.feed_items,
        key=site_keys(settings, store, WRITTEN).signing,
        now=WRITTEN,
        processes=1,
    )


def test_every_new_file_is_made_before_any_old_one_is_replaced(
    settings: Settings, store: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "out"
    first = publish_as(settings, store, folder, "Papers")
    calls: list[str] = []  # what happens to the private feeds' files, in order
    real_open, real_replace, real_swap = os.open, os.replace, exchange.exchange

    def private(path: Any) -> bool:  # by name in the private folder opened, or by path
        return "/" not in str(path) or f"{os.sep}private{os.sep}" in str(path)

    def opening(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT and str(path).endswith(".tmp") and private(path):
            calls.append("made")
        return real_open(path, flags, *args, **kwargs)

    def replacing(source: Any, target: Any, **kwargs: Any) -> None:
        if private(target):
            calls.append("replaced")
        real_replace(source, target, **kwargs)

    def swapping(folder: int, first: str, second: str) -> bool:
        swapped = real_swap(folder, first, second)
        if swapped:
            calls.append("replaced")
        return swapped

    monkeypatch.setattr(os, "open", opening)
    monkeypatch.setattr(os, "replace", replacing)
    monkeypatch.setattr(exchange, "exchange", swapping)  # the old file kept as a spare
    again = publish_as(settings, store, folder, "Other papers")  # every title changes
    monkeypatch.undo()
    assert again["written"] == first["written"]
    files = 2 * len(PEOPLE)
    assert calls == ["made"] * files + ["replaced"] * files, calls
    for path in (folder / "private").iterdir():
        if path.name.startswith("."):  # the replaced files, kept to be written over
            assert path.name.endswith(".spare"), path.name
            assert b"Papers: papers for you" in path.read_bytes()
            continue
        assert b"Other papers: papers for you" in path.read_bytes()
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        assert feedparser.parse(path.read_bytes()).feed.title == "Other papers: papers for you"


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_private_files_are_readable_by_all_whatever_the_umask(
    settings: Settings, store: Engine, tmp_path: Path, umask: int
) -> None:
    before = os.umask(umask)
    try:
        publish(settings, store, tmp_path / "out", 1)
    finally:
        os.umask(before)
    modes = {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out" / "private").iterdir()}
    assert modes == {0o644}


def test_a_failed_write_leaves_the_old_files_and_no_new_one(
    settings: Settings, store: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "out"
    publish_as(settings, store, folder, "Papers")
    old = {path.name: path.read_bytes() for path in (folder / "private").iterdir()}
    real_writev = os.writev
    done: list[int] = []

    def full_disk(fd: int, buffers: Any) -> int:
        if len(done) >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        done.append(fd)
        return real_writev(fd, buffers)

    monkeypatch.setattr(os, "writev", full_disk)
    with pytest.raises(WriteError, match="No space left"):
        publish_as(settings, store, folder, "Other papers")
    monkeypatch.undo()
    assert {path.name: path.read_bytes() for path in (folder / "private").iterdir()} == old
