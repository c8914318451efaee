"""Files and folders digest writes for itself alone.

The database, the outbox's messages (they carry each subscriber's unsubscribe
link), the inbox's error notes, exports and previews are readable by the service's
user only, whatever the umask: they are created ``0600`` and never widened. The
folders digest makes are ``0700`` (the feeds folder ``0755``), also whatever the
umask: at umask 000 a plain ``mkdir`` would leave an inbox anyone could drop a
listing into. Only the feeds are meant for a web server; ``feeds.write_atomically``
writes those.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

PRIVATE = 0o600
PRIVATE_FOLDER = 0o700
_WRITABLE_BY_OTHERS = 0o022


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (created or truncated) with mode 0600; nothing is left
    behind when a write fails, so a full disk leaves no half-written file."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(path, flags, PRIVATE)
    try:
        try:
            os.fchmod(fd, PRIVATE)  # a file that was already there keeps its old mode otherwise
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)  # on some file systems a full disk is only reported here
    except BaseException:
        Path(path).unlink(missing_ok=True)
        raise


def make_private(path: Path) -> None:
    """Take group and other permissions off an existing file we own; a no-op otherwise."""
    try:
        mode = os.stat(path, follow_symlinks=False).st_mode
        if stat.S_ISREG(mode) and mode & 0o077:
            os.chmod(path, stat.S_IMODE(mode) & 0o700)
    except OSError:
        pass  # not there, or not ours to change: the database still opens


def make_folder(path: Path, mode: int = PRIVATE_FOLDER) -> None:
    """Make ``path`` with ``mode`` (missing parents ``0700``), whatever the umask.

    A folder that is already there keeps its mode, less write permission for group and
    others: an operator may open the data folder to a web server's group (the feeds are
    in it), but a folder anyone could write to lets anyone plant a listing or a message.
    """
    missing: list[Path] = []
    folder = Path(path)
    while not os.path.lexists(folder):
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    if not missing:
        _not_writable_by_others(path)
        return
    for made in reversed(missing):
        try:
            os.mkdir(made, PRIVATE_FOLDER)
        except FileExistsError:  # made by another process a moment ago
            _not_writable_by_others(made)
            continue
        os.chmod(made, mode if made == missing[0] else PRIVATE_FOLDER)  # mkdir's is umasked


def _not_writable_by_others(path: Path) -> None:
    mode = os.stat(path).st_mode  # a link to a folder is followed, as mkdir -p would
    if not stat.S_ISDIR(mode):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
    if mode & _WRITABLE_BY_OTHERS:
        with contextlib.suppress(PermissionError):  # not ours: the owner decides
            os.chmod(path, stat.S_IMODE(mode) & ~_WRITABLE_BY_OTHERS)
