"""One run at a time, across processes: cron, the timer, ``digest serve`` and a manual run.

With SQLite (the default) the lock is an exclusive ``flock`` on
``<data_dir>/digest.lock``. The kernel drops a flock when its holder dies, so a
crashed run never leaves a stale lock behind; the file itself stays and only
tells ``status`` who holds it (pid, host, start time). It is never deleted:
unlinking a lock file lets a newcomer lock a fresh inode while someone still
holds the old one.

With a server database (PostgreSQL) runs may start on several hosts that share
no file system, so the lock is a session advisory lock in the database, held by
a connection kept open for the whole run.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from digest.errors import AlreadyRunning, WriteError
from digest.files import make_folder
from digest.settings import Settings
from digest.store.engine import advisory_lock

LOCK_NAME = "digest.lock"
# A fixed 63-bit key for pg_try_advisory_lock, derived from a name so it is easy to find in
# pg_locks and unlikely to collide with another application's keys.
ADVISORY_KEY = zlib.crc32(b"digest.run") << 16 | 0x6467


@dataclass(frozen=True)
class LockInfo:
    """Who holds (or last held) the run lock."""

    pid: int | None
    host: str
    started_at: datetime | None

    def describe(self) -> str:
        """``pid N`` (with the host when it is another machine), or ``pid unknown``."""
        if self.pid is None:
            return "pid unknown"
        if self.host and self.host != socket.gethostname():
            return f"pid {self.pid} on {self.host}"
        return f"pid {self.pid}"

    def to_json(self) -> dict[str, Any]:
        """A plain dict for ``status --json``."""
        return {
            "pid": self.pid,
            "host": self.host,
            "started_at": self.started_at.isoformat() if self.started_at else None,
        }


def _parse_info(text: str) -> LockInfo:
    try:
        data = json.loads(text)
        started = data.get("started_at")
        return LockInfo(
            pid=int(data["pid"]),
            host=str(data.get("host", "")),
            started_at=datetime.fromisoformat(started) if started else None,
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        # The winner writes its details just after taking the lock: a loser can read an empty
        # or half-written file in that instant.
        return LockInfo(pid=None, host="", started_at=None)


def _busy(info: LockInfo) -> AlreadyRunning:
    return AlreadyRunning(f"another digest run is already running ({info.describe()})")


def _lock_file_of(settings_or_path: Settings | str | os.PathLike[str]) -> Path:
    if isinstance(settings_or_path, Settings):
        return settings_or_path.lock_path
    path = Path(settings_or_path)
    return path / LOCK_NAME if path.is_dir() else path


def _cannot_write(path: Path, exc: OSError) -> WriteError:
    return WriteError(f"cannot write the run lock {path}: {exc.strerror or exc}")


@contextmanager
def _file_lock(path: Path) -> Iterator[LockInfo]:
    try:
        make_folder(path.parent)
        # os.open makes a non-inheritable descriptor: a child process (an SMTP helper, a
        # shell hook) must not keep the lock alive after this process exits.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _parse_info(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
            raise _busy(holder) from None
        info = LockInfo(pid=os.getpid(), host=socket.gethostname(), started_at=datetime.now(UTC))
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info.to_json()) + "\n").encode(), 0)
        except OSError as exc:  # the disk is full: no run could record anything either
            fcntl.flock(fd, fcntl.LOCK_UN)
            raise _cannot_write(path, exc) from None
        try:
            yield info
        finally:
            # Empty before unlocking, so nobody reads our details as a live holder's.
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def _advisory_lock(database_url: str) -> Iterator[LockInfo]:
    info = LockInfo(pid=os.getpid(), host=socket.gethostname(), started_at=datetime.now(UTC))
    # The session's name is how a loser learns the holder's pid and host.
    label = f"digest run pid={info.pid} host={info.host}"[:63]
    with advisory_lock(database_url, ADVISORY_KEY, label) as holder:
        if holder is not None:
            raise _busy(_holder_of(holder))
        yield info


def _holder_of(label: str) -> LockInfo:
    fields = dict(part.split("=", 1) for part in label.split() if "=" in part)
    try:
        pid = int(fields["pid"])
    except (KeyError, ValueError):
        return LockInfo(pid=None, host="", started_at=None)
    return LockInfo(pid=pid, host=fields.get("host", ""), started_at=None)


def uses_advisory_lock(database_url: str) -> bool:
    """Whether ``database_url`` is a server database locked in the database, not by a file."""
    return database_url.split(":", 1)[0].split("+", 1)[0] in {"postgresql", "postgres"}


@contextmanager
def hold_run_lock(
    settings_or_path: Settings | str | os.PathLike[str], database_url: str | None = None
) -> Iterator[LockInfo]:
    """Hold the run lock for the block, or raise ``AlreadyRunning`` at once if someone has it.

    ``settings_or_path`` is the settings, a lock file, or the data folder. ``database_url``
    defaults to the settings' one; a PostgreSQL URL selects the advisory lock.
    """
    if database_url is None and isinstance(settings_or_path, Settings):
        database_url = settings_or_path.database_url
    if database_url and uses_advisory_lock(database_url):
        with _advisory_lock(database_url) as info:
            yield info
    else:
        with _file_lock(_lock_file_of(settings_or_path)) as info:
            yield info


def lock_holder(settings_or_path: Settings | str | os.PathLike[str]) -> LockInfo | None:
    """Who holds the file lock right now (for ``status``), or None when no run is going on."""
    # Read, never probe with flock: a probe that holds even a shared lock for an instant can
    # make a scheduled run starting in that instant give up with AlreadyRunning.
    try:
        text = _lock_file_of(settings_or_path).read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError):
        return None
    if not text.strip():
        return None  # released cleanly: the holder empties the file before unlocking
    info = _parse_info(text)
    if info.pid is not None and info.host == socket.gethostname() and not _alive(info.pid):
        return None  # the holder died; the kernel already dropped its lock
    return info


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True
