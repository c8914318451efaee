"""Many feed files of one folder replaced together: each written under a temporary name,
then every one renamed over its old version, each rename one atomic step.

Writing every private feed replaces tens of thousands of files. Each replacement is a new
file (a new inode) renamed over the old one, whose inode is then freed. On ext4 without a
journal, the kernel looks for a new inode past every one freed in the last minutes
(``recently_deleted`` in its allocator, which reads each one's inode to check), so a new
file made after thousands were freed costs a scan over all of them: creating and renaming
in turn made the kernel's work per file grow with the files replaced before it. So all
the new files are made first, while no old one is freed yet, and the renames (which free
the old ones) come after all of them. A reader of the folder meanwhile sees each file
either old or new, never part written, as before.

The folder is opened once and every call names its files relative to it (``dir_fd``):
no path walked again per file, no ``stat`` of the folder, no random temporary name made
in Python (``tempfile``), and the file made with its mode at once (no ``fchmod``) unless
the umask would take a bit of it away.

**Old inodes kept as spares.** Making the new files first still makes a new inode for
each and frees the old one after: the next day's new inodes then scan past them if they
are recent, and freeing each one's blocks trims them on a ``discard`` mount. Where the
system can swap two names in one step (``exchange``: Linux's ``RENAME_EXCHANGE``), a
written file is swapped with the one it replaces instead, so the old file, inode and
blocks, stays under a hidden name (``.NAME.spare``). The next write of ``NAME`` writes
over that spare from the start (cut to the new length after, never emptied first) and
swaps it with ``NAME`` again, which sets the file replaced aside as the new spare: one
rename a file, no inode made or freed, no block freed but a shorter file's tail. Each
name still holds a whole file throughout.

Only the process that holds the folder's lock (``hold``: ``flock`` on the folder, for
its writing and putting in place, its forked writers included, each writing its own
names) writes over spares or makes them; another process writing the same folder
meanwhile writes new files and renames them over the old ones, as before, and leaves
the spares alone. A spare is written over only when it was set aside at least
``SPARE_REST`` seconds ago (its ``ctime``): whoever opened the file before it was set
aside (a web server caching open files) has read it by then. A spare that is not a
regular file of this process's user with one link (a symlink, a hard link, a FIFO) is
removed, never written through. Where the system cannot swap names, a written file is
renamed over the old one as before (``os.replace``), and no spare is made.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from digest.errors import WriteError
from digest.feeds import exchange

FEED_FILE = 0o644  # a web server running as another user serves the feeds
RENAMERS = 8  # threads renaming the files written over the old ones
_PIECES_AT_ONCE = 512  # under every system's IOV_MAX
_HASH_COMMENT = re.compile(rb"<!-- digest-content: ([0-9a-f]{64}) -->")
_READ = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
# a spare written over: never made, never followed, never waited on (a FIFO answers ENXIO)
_REUSE = os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
SPARE_REST = 300.0  # seconds a spare is left alone after it was set aside


_process = [os.getpid()]  # this process's id, kept without a system call for each file
os.register_at_fork(after_in_child=lambda: _process.__setitem__(0, os.getpid()))


def _umask() -> int | None:
    """The process's umask, read without setting it (threads may be making files); None
    when the system does not say."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return None


class StagedFolder:
    """One folder's files, written under temporary names or over their spares (``write``)
    and put in place together (``commit``). Thread-safe: threads may write at once. A
    process forked after it was opened opens the folder again."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.staged: list[tuple[str, str]] = []  # (name written, name), not put in place
        self._fd: int | None = None
        self._pid = 0
        self._lock = threading.Lock()
        mask = _umask()
        self._chmod = mask is None or bool(mask & FEED_FILE)  # else made with its mode
        self._owner = os.geteuid()
        # whether written files are swapped with the old ones (kept as spares): until the
        # file system refuses a swap
        self.exchanging = exchange.available()
        self.sparing = False  # spares written over and made: while ``hold`` holds the folder

    def fd(self) -> int:
        """The folder, open (once per process)."""
        with self._lock:
            if self._fd is None or self._pid != _process[0]:
                try:
                    self._fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                except OSError as exc:
                    raise WriteError(
                        f"cannot open the feeds folder {self.folder}: {exc.strerror or exc}"
                    ) from None
                self._pid = _process[0]
                self.staged = []  # a forked child's own
            return self._fd

    def close(self) -> None:
        """Close the folder (its files written and not put in place are left as they are),
        and let go of its lock."""
        with self._lock:
            if self._fd is not None and self._pid == _process[0]:
                os.close(self._fd)
            self._fd = None
            self.sparing = False

    def stored_hash(self, name: str) -> str | None:
        """The content hash in the file ``name``'s first line or so, if it has one."""
        try:
            fd = os.open(name, _READ, dir_fd=self.fd())
        except OSError:
            return None
        try:
            head = os.read(fd, 512)
        except OSError:
            return None
        finally:
            os.close(fd)
        match = _HASH_COMMENT.search(head)
        return match.group(1).decode() if match else None

    def hold(self) -> bool:
        """Take the folder's lock for this process and the writers it forks, if no other
        process holds it: spares are then written over and made (until ``close``)."""
        try:
            fcntl.flock(self.fd(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held by another process (or no locks here)
            return False
        self.sparing = self.exchanging
        return True

    def write(self, name: str, pieces: Sequence[bytes | memoryview]) -> None:
        """Write the pieces, in order, to a file that is to replace ``name``: its spare when
        there is one to write over, else a new file."""
        folder = self.fd()
        taken = self._open_spare(folder, name) if self.sparing else None
        written = spare_name(name) if taken is not None else f".{name}.{_process[0]}.tmp"
        try:
            fd, length = taken if taken is not None else (self._create(folder, written), 0)
        except OSError as exc:
            raise WriteError(
                f"cannot write the feed {self.folder / name}: {exc.strerror or exc}"
            ) from None
        try:
            try:
                size = write_pieces(fd, pieces)
                if taken is None and self._chmod:
                    os.fchmod(fd, FEED_FILE)
                elif length > size:  # the spare's old tail
                    os.ftruncate(fd, size)
            finally:
                os.close(fd)  # on some file systems a full disk is only reported here
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(written, dir_fd=folder)
            if isinstance(exc, OSError):
                raise WriteError(
                    f"cannot write the feed {self.folder / name}: {exc.strerror or exc}"
                ) from None
            raise
        self.staged.append((written, name))

    def _create(self, folder: int, temp: str) -> int:
        """A new file named ``temp``, open for writing."""
        try:
            return os.open(temp, _CREATE, FEED_FILE, dir_fd=folder)
        except FileExistsError:  # left by a process of the same id that stopped part way
            os.unlink(temp, dir_fd=folder)
            return os.open(temp, _CREATE, FEED_FILE, dir_fd=folder)

    def _open_spare(self, folder: int, name: str) -> tuple[int, int] | None:
        """The spare of ``name`` open for writing over, and its length; None when there is
        none to write over (none, or set aside too lately). A spare not fit to write over
        is removed."""
        spare = spare_name(name)
        try:
            fd = os.open(spare, _REUSE, dir_fd=folder)
        except FileNotFoundError:
            return None
        except OSError:  # a symlink (ELOOP), a folder, a FIFO (ENXIO), not writable
            _remove(folder, spare)
            return None
        try:
            found = os.fstat(fd)
            if time.time() - found.st_ctime >= SPARE_REST and self._usable(found):
                if stat.S_IMODE(found.st_mode) != FEED_FILE:
                    os.fchmod(fd, FEED_FILE)
                return fd, found.st_size
            fit = self._usable(found)
        except OSError:
            fit = False
        os.close(fd)
        if not fit:
            _remove(folder, spare)
        return None

    def _usable(self, found: os.stat_result) -> bool:
        """Whether a spare may be written over: a regular file of ours, no other name's."""
        return stat.S_ISREG(found.st_mode) and found.st_nlink == 1 and found.st_uid == self._owner

    def take(self) -> list[tuple[str, str]]:
        """The files written and not put in place yet, handed to the caller."""
        self.fd()  # a forked child's list is its own
        staged, self.staged = self.staged, []
        return staged

    def commit(self, staged: Iterable[tuple[str, str]]) -> None:
        """Rename each written file over the file it replaces, in ``RENAMERS`` threads; on a
        failure, the rest are removed (the old files stay) and it is raised.

        A rename that replaces a file frees the old one, and freeing may wait on the
        disk (a mount with ``discard`` trims the old file's blocks there and then): the
        threads wait together."""
        folder = self.fd()
        pending = list(staged)
        if len(pending) < RENAMERS * 64:
            self._rename(folder, pending)
            return
        with ThreadPoolExecutor(RENAMERS) as pool:
            shares = [pending[i::RENAMERS] for i in range(RENAMERS)]
            for done in [pool.submit(self._rename, folder, share) for share in shares]:
                done.result()

    def _rename(self, folder: int, pending: Sequence[tuple[str, str]]) -> None:
        for done, (temp, name) in enumerate(pending):
            try:
                self._put(folder, temp, name)
            except OSError as exc:
                self.discard(pending[done:])
                raise WriteError(
                    f"cannot write the feed {self.folder / name}: {exc.strerror or exc}"
                ) from None
            except BaseException:
                self.discard(pending[done:])
                raise

    def _put(self, folder: int, written: str, name: str) -> None:
        """Put the file written (``written``) in place of ``name``: swapped with the old one,
        which is kept as ``name``'s spare, while the folder is held; else renamed over it."""
        if written == spare_name(name):  # the spare written over: swapped in
            with contextlib.suppress(FileNotFoundError):  # no file of that name yet
                if exchange.exchange(folder, written, name):
                    return
            with contextlib.suppress(FileNotFoundError):  # the spare removed meanwhile
                os.replace(written, name, src_dir_fd=folder, dst_dir_fd=folder)
            return
        if self.sparing:
            try:
                swapped = exchange.exchange(folder, written, name)
            except FileNotFoundError:  # the first of its name
                swapped = False
            else:
                self.sparing = self.exchanging = swapped
            if swapped:
                try:
                    os.rename(written, spare_name(name), src_dir_fd=folder, dst_dir_fd=folder)
                except OSError:
                    _remove(folder, written)
                return
        os.replace(written, name, src_dir_fd=folder, dst_dir_fd=folder)

    def discard(self, staged: Iterable[tuple[str, str]]) -> None:
        """Remove files written and not put in place."""
        folder = self.fd()
        for written, _ in staged:
            _remove(folder, written)


def _remove(folder: int, name: str) -> None:
    """Remove the file ``name`` of the folder, if it can."""
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=folder)


def spare_name(name: str) -> str:
    """The hidden name the file ``name`` replaced is kept under, to be written over next."""
    return f".{name}.spare"


def write_pieces(fd: int, pieces: Sequence[bytes | memoryview]) -> int:
    """Write the pieces in order, as one buffer would be, without joining them first; how
    many bytes that was."""
    total = 0
    for start in range(0, len(pieces), _PIECES_AT_ONCE):
        batch = pieces[start : start + _PIECES_AT_ONCE]
        size = sum(map(len, batch))
        done = os.writev(fd, batch)
        if done < size:  # a short write: the rest one piece at a time
            rest = memoryview(b"".join(batch))[done:]
            while rest:
                rest = rest[os.write(fd, rest) :]
        total += size
    return total
