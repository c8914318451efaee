"""Faults of the machine, staged in this process: a full disk, a full or locked database.

``disk_full`` makes Python's writes into one folder fail with ENOSPC, as a full file
system would: ``os.write``/``os.pwrite`` and every file opened for writing through
``open``/``io.open``/``os.fdopen`` (so ``Path.write_bytes`` and friends too). Opening and
renaming still work, as they mostly do on a full disk. SQLite writes through its own C
code and is not affected; ``database_full`` fills the database instead.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from digest.store import engine as store


def _no_space() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _path_of(file: Any) -> Path | None:
    if isinstance(file, int):
        try:
            return Path(os.readlink(f"/proc/self/fd/{file}"))
        except OSError:
            return None
    if isinstance(file, str | bytes | os.PathLike):
        return Path(os.path.abspath(os.fsdecode(file)))
    return None


class _FullFile:
    """A file opened for writing whose writes find no space left."""

    def __init__(self, file: Any) -> None:
        self._file = file

    def write(self, _data: Any) -> int:
        raise _no_space()

    def writelines(self, _lines: Any) -> None:
        raise _no_space()

    def __enter__(self) -> _FullFile:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._file.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def disk_full(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """From now on, Python's writes to files under ``folder`` fail with ENOSPC."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell which file a descriptor is")
    root = Path(os.path.abspath(folder))

    def full(file: Any) -> bool:
        path = _path_of(file)
        return path is not None and path.is_relative_to(root)

    real_open, real_write, real_pwrite, real_writev = io.open, os.write, os.pwrite, os.writev

    def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        opened = real_open(file, mode, *args, **kwargs)
        return _FullFile(opened) if set(mode) & set("wax+") and full(file) else opened

    def fdopen(fd: int, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        return open_(fd, mode, *args, **kwargs)

    def write(fd: int, data: Any) -> int:
        if data and full(fd):
            raise _no_space()
        return real_write(fd, data)

    def pwrite(fd: int, data: Any, offset: int) -> int:
        if data and full(fd):
            raise _no_space()
        return real_pwrite(fd, data, offset)

    def writev(fd: int, buffers: Any) -> int:
        buffers = list(buffers)
        if any(buffers) and full(fd):
            raise _no_space()
        return real_writev(fd, buffers)

    monkeypatch.setattr(io, "open", open_)
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(os, "fdopen", fdopen)
    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "pwrite", pwrite)
    monkeypatch.setattr(os, "writev", writev)


def database_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on, stores opened cannot grow: SQLite answers "database or disk is full"."""
    real = store.make_engine

    def make_engine(url: str) -> sa.engine.Engine:
        engine = real(url)

        @sa.event.listens_for(engine, "connect")
        def _cap(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
            pages = dbapi_conn.execute("PRAGMA page_count").fetchone()[0]
            dbapi_conn.execute(f"PRAGMA max_page_count = {max(pages, 1)}")

        return engine

    monkeypatch.setattr(store, "make_engine", make_engine)
