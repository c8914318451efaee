"""Two names of one folder swapped in one atomic step: Linux's ``renameat2`` with
``RENAME_EXCHANGE``, which Python's ``os`` does not offer, called through the C library.

Each name keeps existing throughout: whoever opens either name meanwhile finds a whole
file, the one before the swap or the one after. Linux 3.15 and later, glibc 2.28 and
later; the file system must support it too (ext4, xfs, btrfs and tmpfs do).
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from collections.abc import Callable

RENAME_EXCHANGE = 2  # linux/fs.h
# What the system answers when it cannot swap names: no such call (ENOSYS), a file system
# that does not know the flag (EINVAL) or the operation (EOPNOTSUPP).
UNSUPPORTED = frozenset({errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP})

Renameat2 = Callable[[int, bytes, int, bytes, int], int]


def _load() -> Renameat2 | None:
    """The C library's ``renameat2``, or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.renameat2
    except (OSError, AttributeError):  # an old C library
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    call.restype = ctypes.c_int
    function: Renameat2 = call
    return function


RENAMEAT2: Renameat2 | None = _load()


def available() -> bool:
    """Whether this system has the call at all (a file system may still refuse it)."""
    return RENAMEAT2 is not None


def exchange(folder: int, first: str, second: str) -> bool:
    """Swap the files named ``first`` and ``second`` in the folder open as ``folder``:
    True when swapped, False when this system or file system cannot; any other failure
    (either name missing: ``FileNotFoundError``) is raised."""
    call = RENAMEAT2
    if call is None:
        return False
    if call(folder, os.fsencode(first), folder, os.fsencode(second), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), first, None, second)
