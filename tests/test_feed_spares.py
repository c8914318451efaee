"""Feed files replaced by swapping names: the old file kept as a hidden spare, whose inode
the next write of the same feed writes over (``digest/feeds/staged.py``), and plain
renames where the system cannot swap names."""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from digest.feeds import exchange, staged
from digest.feeds.staged import StagedFolder, spare_name

NAME = "reader.atom"


def swaps_here(folder: Path) -> bool:
    """Whether this system and the file system under ``folder`` swap two names."""
    (folder / "probe.a").write_bytes(b"a")
    (folder / "probe.b").write_bytes(b"b")
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        swapped = exchange.exchange(fd, "probe.a", "probe.b")
    finally:
        os.close(fd)
    swapped = swapped and (folder / "probe.a").read_bytes() == b"b"
    (folder / "probe.a").unlink()
    (folder / "probe.b").unlink()
    return swapped


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder whose file system swaps names (the test is skipped where it cannot)."""
    if not swaps_here(tmp_path):
        pytest.skip("this system or file system cannot swap two names (RENAME_EXCHANGE)")
    return tmp_path


def replace(folder: Path, content: bytes, name: str = NAME) -> None:
    """One run's write of ``name``: written, then put in place."""
    files = StagedFolder(folder)
    try:
        files.hold()
        files.write(name, [content[:7], content[7:]])
        files.commit(files.take())
    finally:
        files.close()


def names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_the_next_write_goes_into_the_old_inode(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(staged, "SPARE_REST", 0.0)
    path, spare = folder / NAME, folder / spare_name(NAME)
    replace(folder, b"first " * 2_000)
    first = path.stat().st_ino
    replace(folder, b"second " * 3_000)
    assert path.read_bytes() == b"second " * 3_000
    second = path.stat().st_ino
    assert second != first  # a new file, the old one set aside
    assert spare.stat().st_ino == first and spare.read_bytes() == b"first " * 2_000
    replace(folder, b"third")  # shorter than the spare: its tail cut off
    assert path.read_bytes() == b"third"
    assert path.stat().st_ino == first
    assert spare.stat().st_ino == second
    replace(folder, b"fourth " * 5_000)  # longer than the spare
    assert path.read_bytes() == b"fourth " * 5_000
    assert path.stat().st_ino == second
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert names(folder) == [spare_name(NAME), NAME]


def test_a_spare_set_aside_lately_is_not_written_over(folder: Path) -> None:
    path = folder / NAME
    replace(folder, b"first")
    first = path.stat().st_ino
    replace(folder, b"second")
    replace(folder, b"third")  # the first file set aside moments ago: a reader may hold it
    assert path.read_bytes() == b"third"
    assert path.stat().st_ino != first
    assert (folder / spare_name(NAME)).read_bytes() == b"second"
    assert names(folder) == [spare_name(NAME), NAME]


def refusing(code: int) -> exchange.Renameat2:
    """A ``renameat2`` that fails as a file system without the swap answers."""

    def call(folder: int, first: bytes, second_folder: int, second: bytes, flags: int) -> int:
        ctypes.set_errno(code)
        return -1

    return call


@pytest.mark.parametrize(
    "unavailable",
    [None, refusing(errno.EINVAL), refusing(errno.ENOSYS), refusing(errno.EOPNOTSUPP)],
    ids=["no-renameat2", "EINVAL", "ENOSYS", "EOPNOTSUPP"],
)
def test_without_the_swap_files_are_renamed_over_the_old_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unavailable: exchange.Renameat2 | None
) -> None:
    monkeypatch.setattr(exchange, "RENAMEAT2", unavailable)
    monkeypatch.setattr(staged, "SPARE_REST", 0.0)
    for content in (b"first " * 100, b"second", b"third " * 300):
        replace(tmp_path, content)
        assert (tmp_path / NAME).read_bytes() == content
        assert names(tmp_path) == [NAME]  # no spare, no temporary file


def test_a_file_system_refusing_the_swap_is_asked_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[bytes] = []
    refuse = refusing(errno.EINVAL)

    def counting(folder: int, first: bytes, second_folder: int, second: bytes, flags: int) -> int:
        asked.append(second)
        return refuse(folder, first, second_folder, second, flags)

    monkeypatch.setattr(exchange, "RENAMEAT2", counting)
    for name in ("a.atom", "b.atom", "c.atom"):
        (tmp_path / name).write_bytes(b"old")
    files = StagedFolder(tmp_path)
    files.hold()
    for name in ("a.atom", "b.atom", "c.atom"):
        files.write(name, [b"new ", name.encode()])
    files.commit(files.take())
    files.close()
    assert asked == [b"a.atom"]
    assert not files.exchanging
    assert {name: (tmp_path / name).read_bytes() for name in names(tmp_path)} == {
        "a.atom": b"new a.atom",
        "b.atom": b"new b.atom",
        "c.atom": b"new c.atom",
    }


@pytest.mark.parametrize("kind", ["symlink", "hard link", "folder", "fifo"])
def test_a_spare_that_is_not_a_file_of_its_own_is_never_written_through(
    folder: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.setattr(staged, "SPARE_REST", 0.0)
    outside = folder / "elsewhere"
    outside.mkdir()
    precious = outside / "precious"
    precious.write_bytes(b"not a feed")
    spare = folder / spare_name(NAME)
    replace(folder, b"first")
    if kind == "symlink":
        spare.symlink_to(precious)
    elif kind == "hard link":
        os.link(precious, spare)
    elif kind == "folder":
        spare.mkdir()
    else:
        os.mkfifo(spare)
    replace(folder, b"second")  # may not block on the FIFO, nor write through the others
    assert (folder / NAME).read_bytes() == b"second"
    assert precious.read_bytes() == b"not a feed"
    if kind == "folder":  # left as it is, and the file replaced freed
        assert spare.is_dir() and not any(spare.iterdir())
    else:  # replaced by the file replaced
        assert spare.read_bytes() == b"first" and spare.stat().st_nlink == 1
    assert names(folder) == [spare_name(NAME), "elsewhere", NAME]


def test_a_spare_of_another_mode_is_served_readable_by_all(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(staged, "SPARE_REST", 0.0)
    replace(folder, b"first")
    replace(folder, b"second")
    os.chmod(folder / spare_name(NAME), 0o600)
    replace(folder, b"third")
    assert (folder / NAME).read_bytes() == b"third"
    assert stat.S_IMODE((folder / NAME).stat().st_mode) == 0o644


def test_a_process_writing_the_folder_meanwhile_leaves_the_spares_alone(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(staged, "SPARE_REST", 0.0)
    replace(folder, b"first")
    replace(folder, b"second")
    spare = (folder / spare_name(NAME)).stat().st_ino
    one, other = StagedFolder(folder), StagedFolder(folder)  # as two processes
    assert one.hold()
    assert not other.hold()  # the folder is held
    one.write(NAME, [b"from one"])  # over the spare
    other.write(NAME, [b"from the other"])  # a new file
    (written,), (made,) = one.take(), other.take()
    assert written == (spare_name(NAME), NAME)
    assert (folder / made[0]).stat().st_ino != spare
    other.commit([made])  # renamed over the file, the spare left as it is
    assert (folder / NAME).read_bytes() == b"from the other"
    assert (folder / spare_name(NAME)).read_bytes() == b"from one"
    one.commit([written])
    assert (folder / NAME).read_bytes() == b"from one"
    assert (folder / NAME).stat().st_ino == spare
    assert (folder / spare_name(NAME)).read_bytes() == b"from the other"
    assert names(folder) == [spare_name(NAME), NAME]
    one.close()
    assert other.hold()  # let go with the folder
    other.close()


def test_a_feed_removed_while_its_spare_is_written_stays_removed(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(staged, "SPARE_REST", 0.0)
    replace(folder, b"first")
    replace(folder, b"second")
    files = StagedFolder(folder)
    files.hold()
    files.write(NAME, [b"third"])
    for name in (NAME, spare_name(NAME)):  # its reader left meanwhile
        (folder / name).unlink()
    files.commit(files.take())
    files.close()
    assert names(folder) == []


def test_a_reader_sees_each_file_whole_while_it_is_replaced(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rest = 0.3
    monkeypatch.setattr(staged, "SPARE_REST", rest)
    contents = [bytes([65 + n]) * (50_000 + 40_000 * (n % 3)) for n in range(12)]
    replace(folder, contents[0])
    seen: list[bytes] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            with (folder / NAME).open("rb") as feed:
                seen.append(feed.read())

    reader = threading.Thread(target=read)
    reader.start()
    inodes = {(folder / NAME).stat().st_ino}
    reused = 0
    try:
        for content in contents[1:]:
            time.sleep(rest / 2)
            replace(folder, content)
            inode = (folder / NAME).stat().st_ino
            reused += inode in inodes
            inodes.add(inode)
    finally:
        stop.set()
        reader.join()
    assert reused >= 3  # the spares were written over meanwhile
    assert len(seen) > len(contents)
    torn = [len(read) for read in seen if read not in contents]
    assert not torn, torn
