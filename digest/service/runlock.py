"""One run at a time, across processes: cron, the timer, ``digest serve`` and a manual run.

With SQLite (the default) the lock is an exclusive ``flock`` on
``<data_dir>/digest.lock``. The kernel drops a flock when its holder dies, so a
crashed run never leaves a stale lock behind; the file itself stays and only
tells ``status`` who holds it (pid, host, start time). It is never deleted:
unlinking a lock file lets a newcomer lock a fresh inode while someone still
holds the old one.

With a server database (PostgreSQL) runs may start on several hosts that share
no file system, so the lock is a session advisory lock in the database, held by
a connection kept open for the whole run. That connection can be ended under the
run (a failover, a proxy dropping idle connections, ``idle_session_timeout``,
``pg_terminate_backend``), and the lock with it: so a watcher queries it every
``GUARD_CHECK_SECONDS`` (which also keeps it from ever looking idle), and when it
is gone sets the run's stop event; the run stops between two messages and ends
with ``LockLost``. What stays exactly-once does not hang on this lock: planning
takes a transaction-scoped lock of its own (``store.engine.plan_lock``) and
sending claims each digest (``store.claims``); the run lock only keeps a second
run from doing the same work, and names the holder.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from digest.errors import AlreadyRunning, LockLost, WriteError
from digest.files import make_folder
from digest.settings import Settings
from digest.store.engine import HeldLock, advisory_lock

log = logging.getLogger("digest.run")

LOCK_NAME = "digest.lock"
# A fixed 63-bit key for pg_try_advisory_lock, derived from a name so it is easy to find in
# pg_locks and unlikely to collide with another application's keys.
ADVISORY_KEY = zlib.crc32(b"digest.run") << 16 | 0x6467
GUARD_CHECK_SECONDS = 1.0


class Watch:
    """Watches a held advisory lock from a thread of its own; ``lost`` says why it went."""

    def __init__(self, held: HeldLock, stop: threading.Event | None, every: float) -> None:
        self.held = held
        self.stop = stop
        self.every = every
        self.lost: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="run-lock-watch", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._done.wait(self.every):
            reason = self.held.check()
            if reason is not None:
                self.lost = reason
                log.info("run lock lost", extra={"error": reason})
                if self.stop is not None:
                    self.stop.set()
                return

    def end(self) -> None:
        """Stop watching and unlock; a lock whose connection is gone is released already,
        which is said in the log, never raised."""
        self._done.set()
        self._thread.join()
        if self.lost is None and (reason := self.held.release()) is not None:
            log.info("run lock went with its connection", extra={"error": reason})


@dataclass(frozen=True)
class LockInfo:
    """Who holds (or last held) the run lock."""

    pid: int | None
    host: str
    started_at: datetime | None
    watch: Watch | None = field(default=None, compare=False, repr=False)

    def check(self) -> None:
        """Raise ``LockLost`` when the lock went away under the holder (it cannot with a
        file lock: the kernel holds it as long as the process)."""
        if self.watch is not None and self.watch.lost is not None:
            raise LockLost(
                f"the run lock was lost with its database connection ({self.watch.lost});"
                " stopped; the next run sends what is left"
            )

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
def _advisory_lock(database_url: str, stop: threading.Event | None) -> Iterator[LockInfo]:
    pid, host = os.getpid(), socket.gethostname()
    # The session's name is how a loser learns the holder's pid and host.
    label = f"digest run pid={pid} host={host}"[:63]
    with advisory_lock(database_url, ADVISORY_KEY, label) as held:
        if isinstance(held, str):
            raise _busy(_holder_of(held))
        watch = Watch(held, stop, GUARD_CHECK_SECONDS)
        try:
            yield LockInfo(pid=pid, host=host, started_at=datetime.now(UTC), watch=watch)
        finally:
            watch.end()


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
    settings_or_path: Settings | str | os.PathLike[str],
    database_url: str | None = None,
    *,
    stop: threading.Event | None = None,
) -> Iterator[LockInfo]:
    """Hold the run lock for the block, or raise ``AlreadyRunning`` at once if someone has it.

    ``settings_or_path`` is the settings, a lock file, or the data folder. ``database_url``
    defaults to the settings' one; a PostgreSQL URL selects the advisory lock, which sets
    ``stop`` if it is lost under the block (``LockInfo.check`` then raises ``LockLost``).
    """
    if database_url is None and isinstance(settings_or_path, Settings):
        database_url = settings_or_path.database_url
    if database_url and uses_advisory_lock(database_url):
        with _advisory_lock(database_url, stop) as info:
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
    if info.pid is not None and info.host == socket.gethostname() and not process_alive(info.pid):
        return None  # the holder died; the kernel already dropped its lock
    return info


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True
