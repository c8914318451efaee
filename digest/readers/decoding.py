"""Turning a listing file's bytes into text, refusing what is not text.

Dumps arrive from browsers, editors and scripts on every platform, so the
bytes may carry a byte-order mark (UTF-8, UTF-16, UTF-32), CRLF or CR line
ends, or a legacy encoding. The rule is:

1. a byte-order mark decides the encoding;
2. otherwise NUL bytes mean binary data, which is refused;
3. otherwise UTF-8 is tried, then cp1252 (what Windows tools write), then
   latin-1 (which decodes any byte, so it is the last resort);
4. text with many control characters is refused as binary.

Whole-file readers are capped at ``MAX_BYTES`` so a wrong path (a disk image,
a video) fails fast instead of filling memory.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from digest.errors import ListingError

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


def bom_encoding(head: bytes) -> tuple[str, int] | None:
    """The encoding a byte-order mark announces and the mark's length, or None."""
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return encoding, len(bom)
    return None


def read_capped(path: Path, limit: int | None = None) -> bytes:
    """The whole file, refusing one larger than ``limit`` (default ``MAX_BYTES``) bytes."""
    limit = MAX_BYTES if limit is None else limit
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise ListingError(f"cannot read file: {exc.strerror or exc}", str(path)) from None
    if len(data) > limit:
        raise ListingError(
            f"file is larger than {_size(limit)}; not a listing this reader accepts",
            str(path),
        )
    return data


def _size(limit: int) -> str:
    return f"{limit // (1024 * 1024)} MB" if limit >= 1024 * 1024 else f"{limit:,} bytes"


def decode_text(data: bytes, path: Path) -> str:
    """Decode a listing file's bytes (see the module rule), with line ends made ``\\n``."""
    found = bom_encoding(data)
    if found is not None:
        encoding, skip = found
        try:
            text = data[skip:].decode(encoding)
        except UnicodeDecodeError as exc:
            raise ListingError(
                f"byte-order mark says {encoding} but the bytes are not: {exc.reason}",
                str(path),
            ) from None
    elif b"\x00" in data:
        line = data.count(b"\n", 0, data.index(b"\x00")) + 1
        raise ListingError("binary data (NUL bytes), not a text listing", str(path), line)
    else:
        text = _decode_guessing(data)
    if _mostly_controls(text[:_CONTROL_SAMPLE]):
        raise ListingError("binary data (control characters), not a text listing", str(path))
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _decode_guessing(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        # cp1252 leaves five bytes undefined; a file using them is not cp1252.
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _mostly_controls(sample: str) -> bool:
    if not sample:
        return False
    controls = sum(1 for ch in sample if ch < " " and ch not in _TEXT_CONTROLS)
    # Real dumps have none; a stray one must not sink an otherwise good file.
    return controls * 100 > len(sample)


def collapse(text: str) -> str:
    """Every run of whitespace (newlines included) folded to one space, ends trimmed."""
    return " ".join(text.split())
