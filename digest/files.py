"""Files digest writes into its data folder for itself alone.

The database, the outbox's messages (they carry each subscriber's unsubscribe
link) and the inbox's error notes are readable by the service's user only,
whatever the umask: they are created ``0600`` and never widened. Only the feeds
are meant for a web server; ``feeds.write_atomically`` writes those.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE = 0o600


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
