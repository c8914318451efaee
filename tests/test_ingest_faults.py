"""Every dump fails alone, through the real command line: exit code, one line on stderr, no
traceback, and the store as it should be.

Cases that could hang or blow the stack if they came back (``/dev/zero``, a FIFO, JSON
nested 100,000 deep) run ``python -m digest`` in a process of its own, with a time limit;
the rest call ``digest.cli.main`` here, where faults of the machine (a full disk, a locked
database, no memory) can be staged.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from digest.cli import main
from digest.ingest import dumps as ingest
from digest.store import engine as store
from tests.conftest import EXAMPLE_A as DUMP_A
from tests.conftest import EXAMPLE_B as DUMP_B
from tests.conftest import store_rows
from tests.faults import database_full, disk_full

REPO = Path(__file__).resolve().parents[1]
ABSTRACT = "We study a problem. Our method improves the baseline on every benchmark we tried."


@dataclass
class Result:
    code: int
    out: str
    err: str

    def one_error_line(self, *needles: str) -> str:
        """The single stderr line, checked for the needles and the absence of a traceback."""
        assert "Traceback" not in self.err, self.err
        assert self.err.count("\n") == 1 and self.err.endswith("\n"), self.err
        for needle in needles:
            assert needle in self.err, self.err
        return self.err


Cli = Callable[..., Result]


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installation's data folder; the command line finds it through the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIGEST_CONFIG", raising=False)
    folder = tmp_path / "data"
    monkeypatch.setenv("DIGEST_DATA_DIR", str(folder))
    return folder


@pytest.fixture
def cli(data: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    def run(*args: str) -> Result:
        code = main(list(args))
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def run_process(data: Path, *args: str, timeout: float = 60) -> Result:
    """``python -m digest ARGS`` in a process of its own; a hang fails the test, not the suite."""
    env = {**os.environ, "DIGEST_DATA_DIR": str(data), "PYTHONPATH": str(REPO)}
    env.pop("DIGEST_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "digest", *args],
        cwd=data.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def count(data: Path, table: str) -> int:
    return int(store_rows(data, f"SELECT count(*) FROM {table}")[0][0])  # type: ignore[call-overload]


def names(folder: Path) -> list[bytes]:
    """What a folder holds, as the file system names it (bytes: not every name is UTF-8)."""
    return sorted(os.listdir(os.fsencode(folder)))


def snapshot_line(arxiv_id: str, title: str, **more: object) -> str:
    return json.dumps({"id": arxiv_id, "title": title, "abstract": ABSTRACT, **more})


# --- bad in itself: refused, the rest goes on ----------------------------------------------


def test_a_snapshot_line_nested_100000_deep(data: Path, tmp_path: Path) -> None:
    dump = tmp_path / "snapshot.json"
    deep = "[" * 100_000 + "]" * 100_000
    dump.write_text(
        snapshot_line("2403.00001", "Fine") + "\n" + snapshot_line("2403.00002", "Deep")[:-1]
        + f', "x": {deep}}}\n',
        "utf-8",
    )  # fmt: skip
    result = run_process(data, "ingest", str(dump), str(DUMP_B))
    assert result.code == 1
    result.one_error_line(f"{dump}:2: JSON nested too deeply")
    assert count(data, "dump") == 1  # DUMP_B went in after it
    assert count(data, "paper") == 9  # and nothing of the snapshot, not even line 1


def test_a_daily_papers_json_number_of_5000_digits(cli: Cli, data: Path, tmp_path: Path) -> None:
    dump = tmp_path / "daily.json"
    paper = {"id": "2403.00001", "title": "A Title", "summary": ABSTRACT}
    dump.write_text(f'[{{"paper": {json.dumps(paper)}, "upvotes": {"9" * 5000}}}]', "utf-8")
    result = cli("ingest", str(dump))
    assert result.code == 1
    result.one_error_line(str(dump), "not valid JSON", "4300 digits")
    assert count(data, "paper") == 0


def test_file_names_that_are_not_utf8_in_the_inbox(cli: Cli, data: Path) -> None:
    inbox = os.fsencode(data / "inbox")
    os.makedirs(inbox)
    bad, good = inbox + b"/bad-caf\xe9.txt", inbox + b"/good-caf\xe9.txt"
    with open(bad, "wb"):
        pass  # empty: no listing
    shutil.copyfile(DUMP_B, good)
    shutil.copyfile(DUMP_A, inbox + b"/later.txt")
    for age, name in enumerate((bad, good, inbox + b"/later.txt")):
        os.utime(name, ns=(age * 10**9, age * 10**9))  # the bad one first
    result = cli("ingest", "--inbox")
    assert result.code == 1
    result.one_error_line("bad-caf\\xe9.txt: empty file; not a listing")
    assert names(data / "inbox" / "failed") == [b"bad-caf\xe9.txt", b"bad-caf\xe9.txt.error"]
    with open(inbox + b"/failed/bad-caf\xe9.txt.error", "rb") as note:
        assert note.read().decode("utf-8").endswith("bad-caf\\xe9.txt: empty file; not a listing\n")
    assert names(data / "inbox" / "processed") == [b"good-caf\xe9.txt", b"later.txt"]
    assert "processed/good-caf\\xe9.txt: ok, 9 entries" in result.out
    assert store_rows(data, "SELECT name FROM dump ORDER BY id") == [
        ("good-caf\\xe9.txt",),
        ("later.txt",),
    ]
    assert count(data, "paper") == 16


def test_dev_zero_and_a_fifo_are_refused_at_once(data: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)
    result = run_process(data, "ingest", "/dev/zero", timeout=30)
    assert result.code == 1
    result.one_error_line("/dev/zero: a character device, not a regular file")
    result = run_process(data, "ingest", str(fifo), timeout=30)
    assert result.code == 1
    result.one_error_line(f"{fifo}: a FIFO, not a regular file")
    (data / "inbox").mkdir()
    os.mkfifo(data / "inbox" / "pipe.txt")
    result = run_process(data, "ingest", "--inbox", timeout=30)
    assert result.code == 1
    result.one_error_line("pipe.txt: a FIFO, not a regular file")
    assert names(data / "inbox" / "failed") == [b"pipe.txt", b"pipe.txt.error"]
    assert count(data, "dump") == 0


def test_a_symlink_in_the_inbox_is_not_followed(cli: Cli, data: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.txt"
    shutil.copyfile(DUMP_B, outside)
    (data / "inbox").mkdir(parents=True)
    (data / "inbox" / "link.txt").symlink_to(outside)
    result = cli("ingest", "--inbox")
    assert result.code == 1
    result.one_error_line(f"link.txt: a symbolic link to {outside}; only regular files")
    assert (data / "inbox" / "failed" / "link.txt").is_symlink()  # the link moved, not its file
    assert outside.read_bytes() == DUMP_B.read_bytes()
    assert count(data, "paper") == 0


# --- data that must not be bent --------------------------------------------------------------


def test_one_bad_byte_is_replaced_alone_and_reported(cli: Cli, data: Path, tmp_path: Path) -> None:
    dump = tmp_path / "dump.txt"
    text = f"A Study By Gerv\u00e1sio\n{ABSTRACT}\nSecond Title\n{ABSTRACT} Caf\u00e9.\n"
    dump.write_bytes(text.encode("utf-8").replace(b"Second", b"Sec\xe1ond"))
    result = cli("ingest", str(dump))
    assert result.code == 0
    warning = "1 byte that is not valid UTF-8 replaced with U+FFFD (line 3)"
    result.one_error_line(f"digest: warning: {dump}: {warning}")
    assert result.out.endswith(f"; {warning}\n")
    assert sorted(store_rows(data, "SELECT title, substr(abstract, -6) FROM paper")) == [
        ("A Study By Gerv\u00e1sio", "tried."),
        ("Sec\ufffdond Title", " Caf\u00e9."),
    ]
    shutil.rmtree(data)
    result = cli("ingest", str(dump), "--json")
    assert json.loads(result.out)["dumps"][0]["warnings"] == [warning]


def test_ids_one_digit_too_long_are_never_cut(cli: Cli, data: Path, tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshot.json"
    lines = [snapshot_line(f"2403.{n}v1", f"Paper {n}") for n in (123456, 123457)]
    snapshot.write_text("\n".join(lines) + "\n", "utf-8")
    result = cli("ingest", str(snapshot))
    assert result.code == 1
    result.one_error_line(f"{snapshot}:1: not an arXiv id: '2403.123456v1'")
    assert count(data, "paper") == 0
    daily = tmp_path / "daily.json"
    papers = [{"id": f"2403.12345{n}", "title": f"Paper {n}", "summary": ABSTRACT} for n in (6, 7)]
    daily.write_text(json.dumps(papers), "utf-8")
    result = cli("ingest", str(daily))
    assert (result.code, result.err) == (0, "")
    assert store_rows(data, "SELECT arxiv_id, url FROM paper ORDER BY url") == [
        (None, "https://huggingface.co/papers/2403.123456"),
        (None, "https://huggingface.co/papers/2403.123457"),
    ]


# --- failures of the machine: the dump stays in the inbox and is tried again ---------------


def drop(data: Path, dump: Path, name: str) -> Path:
    inbox = data / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(dump, inbox / name)
    return inbox / name


def test_a_full_database_leaves_a_good_dump_in_the_inbox(
    cli: Cli, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("ingest", "--inbox").code == 0  # a store with its schema, and no room to grow
    dump = drop(data, DUMP_B, "daily.txt")
    real = store.make_engine
    database_full(monkeypatch)
    result = cli("ingest", "--inbox")
    assert result.code == 1
    result.one_error_line(
        f"{dump}: database error: database or disk is full; left in the inbox, to be tried again"
    )
    assert dump.exists() and not (data / "inbox" / "failed").exists()
    assert count(data, "paper") == 0
    monkeypatch.setattr(store, "make_engine", real)  # room again: the next run takes it
    result = cli("ingest", "--inbox")
    assert (result.code, result.err) == (0, "")
    assert names(data / "inbox" / "processed") == [b"daily.txt"]
    assert count(data, "paper") == 9


def test_a_locked_database_leaves_a_good_dump_in_the_inbox(
    cli: Cli, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("ingest", "--inbox").code == 0
    dump = drop(data, DUMP_B, "daily.txt")
    monkeypatch.setattr(store, "BUSY_TIMEOUT_MS", 50)
    other = sqlite3.connect(data / "digest.db", isolation_level=None)
    read_listing = ingest.read_listing

    def meanwhile(*args: Any, **kwargs: Any) -> Any:
        other.execute("BEGIN IMMEDIATE")  # another writer takes the lock while we read
        return read_listing(*args, **kwargs)

    monkeypatch.setattr(ingest, "read_listing", meanwhile)
    try:
        result = cli("ingest", "--inbox")
    finally:
        other.close()
    assert result.code == 1
    result.one_error_line(f"{dump}: database error: database is locked; left in the inbox")
    assert dump.exists() and count(data, "paper") == 0


def test_running_out_of_memory_leaves_a_good_dump_in_the_inbox(
    cli: Cli, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = drop(data, DUMP_B, "first.txt")
    second = drop(data, DUMP_A, "second.txt")
    os.utime(first, ns=(0, 0))
    upsert = ingest.upsert_entries
    calls: list[int] = []

    def short_of_memory(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError
        return upsert(*args, **kwargs)

    monkeypatch.setattr(ingest, "upsert_entries", short_of_memory)
    result = cli("ingest", "--inbox")
    assert result.code == 1
    result.one_error_line(f"{first}: out of memory; left in the inbox, to be tried again")
    assert first.exists() and not second.exists()  # the next one still went in
    assert count(data, "paper") == 10


def test_a_full_disk_keeps_a_bad_dump_in_the_inbox_until_its_note_can_be_written(
    cli: Cli, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = data / "inbox" / "empty.txt"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"")
    os.utime(bad, ns=(0, 0))
    drop(data, DUMP_B, "daily.txt")
    disk_full(monkeypatch, data / "inbox")
    result = cli("ingest", "--inbox")
    assert result.code == 1
    result.one_error_line(
        f"{bad}: empty file; not a listing; cannot set it aside in failed/:"
        " No space left on device; left in the inbox, to be tried again"
    )
    assert bad.exists() and names(data / "inbox" / "failed") == []  # no half-written note
    assert names(data / "inbox" / "processed") == [b"daily.txt"]
    assert count(data, "paper") == 9


# --- a damaged database -----------------------------------------------------------------------


def test_a_database_of_random_bytes(cli: Cli, data: Path) -> None:
    data.mkdir()
    (data / "digest.db").write_bytes(os.urandom(64 * 1024))
    before = (data / "digest.db").read_bytes()
    for args in (("ingest", str(DUMP_B)), ("status",)):
        result = cli(*args)
        assert result.code == 1
        result.one_error_line(
            f"digest: the database {data / 'digest.db'} is damaged (file is not a database);"
            " PRAGMA integrity_check: cannot run (file is not a database);"
            " restore it from a backup"
        )
    assert (data / "digest.db").read_bytes() == before


def test_a_database_with_damaged_pages(cli: Cli, data: Path) -> None:
    assert cli("ingest", str(DUMP_A)).code == 0
    drop(data, DUMP_B, "daily.txt")
    with open(data / "digest.db", "r+b") as db:
        db.seek(4096 * 3)
        db.write(os.urandom(4096 * 5))
    result = cli("ingest", "--inbox")
    assert result.code == 1
    result.one_error_line(
        "is damaged (database disk image is malformed); PRAGMA integrity_check: ",
        "restore it from a backup",
    )
    assert (data / "inbox" / "daily.txt").exists()  # nothing is set aside for the store's fault


# --- a full disk elsewhere, and who may read the data folder ----------------------------------


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The loosest umask there is: the modes below must not depend on it."""
    before = os.umask(0)
    try:
        yield
    finally:
        os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_full_disk_for_the_run_lock(
    cli: Cli, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("ingest", "--inbox").code == 0
    drop(data, DUMP_B, "daily.txt")
    disk_full(monkeypatch, data / "digest.lock")
    result = cli("run")
    assert result.code == 1
    result.one_error_line(
        f"digest: cannot write the run lock {data / 'digest.lock'}: No space left on device"
    )
    assert count(data, "run") == 0 and count(data, "paper") == 0
    assert (data / "inbox" / "daily.txt").exists()


def test_a_full_disk_for_the_feeds(cli: Cli, data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli("subscribe", "ann@example.org", "--interest", "video").code == 0
    drop(data, DUMP_B, "daily.txt")
    disk_full(monkeypatch, data / "feeds")
    result = cli("run")
    assert result.code == 1
    result.one_error_line("digest: cannot write the feed ", ": No space left on device")
    assert count(data, "paper") == 9  # all before the feeds went through
    assert store_rows(data, "SELECT count(*) FROM digest WHERE status = 'sent'") == [(1,)]
    assert store_rows(data, "SELECT status FROM run") == [("failed",)]
    assert not [name for name in os.listdir(data / "feeds") if name.endswith(".tmp")]


def test_the_data_folder_is_private_but_the_feeds_are_served(
    cli: Cli, data: Path, open_umask: None
) -> None:
    assert cli("subscribe", "ann@example.org", "--interest", "video").code == 0
    drop(data, DUMP_B, "daily.txt")
    (data / "inbox" / "empty.txt").write_bytes(b"")
    result = cli("run")
    assert result.code == 1  # the empty dump failed; the rest went through
    result.one_error_line("digest: 1 dump(s) failed; see digest status")
    assert count(data, "paper") == 9
    assert mode(data / "digest.db") == 0o600
    assert mode(data / "digest.lock") == 0o600
    assert not (data / "secret.key").exists()  # the site's key is kept in the database
    [eml] = (data / "outbox").glob("*.eml")
    assert mode(eml) == 0o600  # its links carry the reader's unsubscribe token
    assert mode(data / "inbox" / "failed" / "empty.txt.error") == 0o600
    # a web server running as another user serves the feeds; nobody can list private ones
    assert mode(data / "feeds" / "papers.atom") == 0o644
    assert mode(data / "feeds" / "private") == 0o711
    [private] = (data / "feeds" / "private").glob("*.atom")
    assert mode(private) == 0o644


def test_an_older_database_readable_by_all_is_narrowed(cli: Cli, data: Path) -> None:
    assert cli("ingest", "--inbox").code == 0
    os.chmod(data / "digest.db", 0o644)
    assert cli("status").code == 0
    assert mode(data / "digest.db") == 0o600
