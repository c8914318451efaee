"""Opening a listing file and turning its bytes into text, refusing what is not text.

Only a regular file is a listing. A device (``/dev/zero``) or a FIFO would be
read forever or block, so ``open_listing`` opens without blocking and checks
what it opened before reading a byte; the inbox also refuses symbolic links,
which could point anywhere on the machine.

Dumps arrive from browsers, editors and scripts on every platform, so the
bytes may carry a byte-order mark (UTF-8, UTF-16, UTF-32), CRLF or CR line
ends, or a legacy encoding. The rule is:

1. a byte-order mark decides the encoding;
2. otherwise NUL bytes mean binary data, which is refused;
3. otherwise UTF-8, when the file reads as UTF-8 at least as often as it does
   not: a few bad bytes in a UTF-8 file are replaced with U+FFFD, one by one,
   and reported, instead of turning every accent in the file into mojibake
   ("GervÃ¡sio") by reading it all in another encoding;
4. otherwise cp1252 (what Windows tools write), then latin-1 (which decodes
   any byte, so it is the last resort), also reported;
5. text with many control characters is refused as binary.

Whole-file readers are capped at ``MAX_BYTES`` so a wrong path (a disk image,
a video) fails fast instead of filling memory.
"""

from __future__ import annotations

import codecs
import errno
import os
import re
import stat
from pathlib import Path
from typing import BinaryIO

from digest.errors import ListingError, ListingUnreadable

MAX_BYTES = 64 * 1024 * 1024

# Checked longest first: the UTF-32-LE mark begins with the UTF-16-LE one.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

# Control characters that plain text legitimately contains.
_TEXT_CONTROLS = frozenset("\t\n\r\f\v")
_CONTROL_SAMPLE = 65536

# What ``errors="surrogateescape"`` makes of each byte that is not UTF-8.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
_NON_ASCII = re.compile("[^\x00-\x7f]")

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


def open_listing(path: Path, *, follow_symlinks: bool = True) -> BinaryIO:
    """``path`` opened for reading, if it is a regular file (and not a symbolic link,
    unless ``follow_symlinks``); the check is made on what was opened, so nothing can
    be swapped in between."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO must not block the open
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise ListingError(
                f"a symbolic link{_target(path)}; only regular files are read here", str(path)
            ) from None
        raise ListingUnreadable(f"cannot read file: {exc.strerror or exc}", str(path)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "a special file")
            raise ListingError(f"{kind}, not a regular file; not a listing", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _target(path: Path) -> str:
    try:
        return f" to {display_path(os.readlink(path))}"
    except OSError:
        return ""


def display_path(path: str | os.PathLike[str]) -> str:
    """A path as text that can always be printed and stored: bytes of a file name that are
    not UTF-8 are shown as ``\\xe9``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def bom_encoding(head: bytes) -> tuple[str, int] | None:
    """The encoding a byte-order mark announces and the mark's length, or None."""
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return encoding, len(bom)
    return None


def read_capped(handle: BinaryIO, path: Path, limit: int | None = None) -> bytes:
    """The whole file from its start, refusing one larger than ``limit`` (default
    ``MAX_BYTES``) bytes."""
    limit = MAX_BYTES if limit is None else limit
    try:
        handle.seek(0)
        data = handle.read(limit + 1)
    except OSError as exc:
        raise ListingUnreadable(f"cannot read file: {exc.strerror or exc}", str(path)) from None
    if len(data) > limit:
        raise ListingError(
            f"file is larger than {_size(limit)}; not a listing this reader accepts",
            str(path),
        )
    return data


def _size(limit: int) -> str:
    return f"{limit // (1024 * 1024)} MB" if limit >= 1024 * 1024 else f"{limit:,} bytes"


def decode_text(data: bytes, path: Path) -> tuple[str, list[str]]:
    """Decode a listing file's bytes (see the module rule), with line ends made ``\\n``;
    also what the reader should report (bytes replaced, a legacy encoding)."""
    notes: list[str] = []
    found = bom_encoding(data)
    if found is not None:
        encoding, skip = found
        try:
            errors = "surrogateescape" if encoding == "utf-8" else "strict"
            text = data[skip:].decode(encoding, errors)
        except UnicodeDecodeError as exc:
            raise ListingError(
                f"byte-order mark says {encoding} but the bytes are not: {exc.reason}",
                str(path),
            ) from None
    elif b"\x00" in data:
        line = data.count(b"\n", 0, data.index(b"\x00")) + 1
        raise ListingError("binary data (NUL bytes), not a text listing", str(path), line)
    else:
        text, legacy = _decode_guessing(data)
        if legacy:
            notes.append(f"not UTF-8; read as {legacy}")
    if _mostly_controls(text[:_CONTROL_SAMPLE]):
        raise ListingError("binary data (control characters), not a text listing", str(path))
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    first = None if text.isascii() else _ESCAPED_BYTE.search(text)
    if first is not None:
        line = text.count("\n", 0, first.start()) + 1
        text, count = _ESCAPED_BYTE.subn("\ufffd", text)
        what = "byte that is" if count == 1 else "bytes that are"
        notes.append(f"{count} {what} not valid UTF-8 replaced with U+FFFD (line {line})")
    return text, notes


def _decode_guessing(data: bytes) -> tuple[str, str | None]:
    """The text (bad UTF-8 bytes left as escapes), and the legacy encoding used, if any."""
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        pass
    text = data.decode("utf-8", "surrogateescape")
    bad = sum(1 for _ in _ESCAPED_BYTE.finditer(text))
    readable = sum(1 for _ in _NON_ASCII.finditer(text)) - bad
    # A UTF-8 file with a stray byte still has its accents as valid sequences; a legacy
    # file's accents are almost never valid UTF-8, so few or none of them read.
    if readable >= bad:
        return text, None
    try:
        # cp1252 leaves five bytes undefined; a file using them is not cp1252.
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def _mostly_controls(sample: str) -> bool:
    if not sample:
        return False
    controls = sum(1 for ch in sample if ch < " " and ch not in _TEXT_CONTROLS)
    # Real dumps have none; a stray one must not sink an otherwise good file.
    return controls * 100 > len(sample)


def collapse(text: str) -> str:
    """Every run of whitespace (newlines included) folded to one space, ends trimmed."""
    text = text.strip()
    # The common line, printable ASCII with single spaces (the only spacing that is
    # printable), is collapsed already: splitting it into words to join them again was
    # most of what reading a dump cost.
    if text.isascii() and text.isprintable() and "  " not in text:
        return text
    return " ".join(text.split())
