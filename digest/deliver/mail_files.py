"""The file outbox's names, and taking a reader's mail out of it when they leave.

A ``file://`` transport writes one ``.eml`` per message, named ``<tag>.<message id>.eml``:
``tag`` is a short hash of the recipient's address, so the mail of one reader is found by
its name alone (a deleted reader's copies go without opening a file). The address itself
is in every one of those files, so the hash tells nobody anything the folder does not.

Files written before the tag (``<message id>.eml``) are read once by :func:`sweep_mail`:
renamed to their tagged name when their recipient is still a reader, removed when not.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Collection
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from pathlib import Path
from urllib.parse import unquote, urlsplit

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]")
_TAGGED = re.compile(r"^[0-9a-f]{16}\.")
HEADER_BYTES = 16_384  # a message's headers fit in this; the rest is never read


def eml_name(message_id: str) -> str:
    """A safe, stable file name for a message: its Message-ID, made safe, plus ``.eml``."""
    raw = message_id.strip().strip("<>")
    safe = _UNSAFE.sub("_", raw).lstrip(".")[:150]
    if safe != raw or not safe:
        # Two ids that differ only in unsafe characters must not share a file.
        safe += "-" + hashlib.sha256(raw.encode("utf-8", "replace")).hexdigest()[:12]
    return safe + ".eml"


def recipient_tag(address: str) -> str:
    """The 16 hex digits that start the file names of one recipient's mail."""
    return hashlib.sha256(address.strip().lower().encode("utf-8", "replace")).hexdigest()[:16]


def mail_file_name(recipient: str, message_id: str) -> str:
    """``<recipient tag>.<message id>.eml``: one file per message, found by its recipient."""
    return f"{recipient_tag(recipient)}.{eml_name(message_id)}"


def mail_folder(transport_url: str) -> Path | None:
    """The folder a ``file://`` transport writes to; None for any other transport."""
    parts = urlsplit(transport_url)
    if parts.scheme.lower() != "file":
        return None
    path = unquote(parts.netloc + parts.path)
    return Path(path) if path else None


def remove_mail_of(folder: Path, address: str) -> int:
    """Remove every tagged ``.eml`` file for ``address``; how many went."""
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for path in folder.glob(f"{recipient_tag(address)}.*.eml"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
    return removed


def _recipients(path: Path) -> list[str]:
    try:
        with path.open("rb") as handle:
            headers = BytesHeaderParser().parsebytes(handle.read(HEADER_BYTES))
    except OSError:
        return []
    return [address for _, address in getaddresses(headers.get_all("To", [])) if address]


def sweep_mail(folder: Path, addresses: Collection[str], *, before: float) -> int:
    """Remove the mail of everyone not in ``addresses`` (the store's readers, any status):
    the copies of a reader who deleted their data. Only files older than ``before`` (a
    time stamp) are judged: a newer one may be a reader's who joined since ``addresses``
    was read. Untagged files from before the tag are renamed to their tagged name, or
    removed. Returns how many files were removed."""
    kept = {recipient_tag(address) for address in addresses}
    removed = 0
    try:
        paths = [p for p in folder.iterdir() if p.suffix == ".eml" and p.is_file()]
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for path in paths:
        try:
            if path.stat().st_mtime >= before:
                continue
        except FileNotFoundError:
            continue
        if _TAGGED.match(path.name):
            gone = path.name[:16] not in kept
        else:
            tags = {recipient_tag(address) for address in _recipients(path)}
            if not tags:  # no recipient: not a message digest wrote; leave it be
                continue
            gone = not tags <= kept
            if not gone:
                with contextlib.suppress(OSError):
                    path.rename(path.with_name(f"{min(tags)}.{path.name}"))
        if gone:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
    return removed
