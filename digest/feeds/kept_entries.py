"""The private feeds' entries, in a file of the data folder, kept from one run to the next.

A reader's feed holds their newest items (``feed_items``, 100 by default: five or six
days of digests), and its file is written from an entry for each (paper, why it was
chosen). A run in a new process (cron's) would make every one again each day, though all
but the day's new ones were made by the run before; and a run holding every entry of
every feed as objects would hold more the more readers and days the feeds span (1.2 GB
at 15,000 readers on a sixth day, measured). So the entries a run uses are written to a
file (``FILE`` under ``data_dir``, not the feeds folder a web server serves), as bytes the
feed files are written from: the processes that write the feeds map the file and send
its bytes to each feed file as they stand, a reader's token put in each entry's holes.
What a process holds is an offset a wanted entry, whatever the number of days.

The next run copies from it every paper whose entries still read as they did (``paper_stamp``)
into the file it writes, and makes only the rest; the old file is replaced once the new
one is whole.

A file holds groups, one or more a paper: each group the distinct pieces of that paper's
entries (what its entries under several explanations, and a summary's Atom and RSS forms,
have in common is there once), then a record a (paper, explanation): when the paper is
dated, its GUID and key, each kind's hash and its pieces as spans of the group, a hole
where the token goes. An index of the groups ends the file.

What an entry is made of is checked, not trusted: the file names the code that made its
entries (a hash of the source of the packages that shape an entry, ``feeds``, ``present``
and ``rank``, and the versions of feedgen, lxml and markupsafe) and the site (its address
and GUID authority), and each group the paper it was made of. A file from other code,
another site, or that cannot be read is left unused (and written over by the run). The
file is written under a temporary name and renamed over the old one, readable by its
owner alone.
"""

from __future__ import annotations

import array
import contextlib
import errno
import functools
import hashlib
import importlib.metadata
import logging
import marshal
import mmap
import os
import struct
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from digest.feeds.site import FeedSite
from digest.feeds.xml import Entry
from digest.store.papers import PaperRow

log = logging.getLogger(__name__)

FILE = "feed-entries"  # under data_dir
_MAGIC = b"digest feed entries\n"
_FORMAT = 2  # how a file is laid out; raised when it changes
# the packages whose code shapes an entry (its XML, its text as shown, its marks): any
# change to them makes every entry again
_SHAPED_BY = ("feeds", "present", "rank")
HOLE = 0xFFFFFFFF  # a span's start (and end) where the reader's token goes
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# a record: the paper's date (microseconds since 1970, UTC), the record's own place in
# its group, the lengths of the GUID and the paper's key, each kind's hash and number of
# spans; then the GUID, the key, and the spans (where each starts and ends in the group)
_RECORD = struct.Struct("<qIHH32s32sHH")
_END = struct.Struct("<QQ")  # where the index starts, and its length: the file's last bytes


class Made(NamedTuple):
    """A paper's private entry under one explanation, made once for every reader it went
    to: its place in a feed (the paper's date, its GUID), the paper's key (what a reader's
    token signs), and its XML in each kind of feed."""

    published: datetime
    guid: str
    paper_key: str
    atom: Entry
    rss: Entry


class Shown(NamedTuple):
    """A record of the file as a feed file is written from it: its place in a feed, the
    paper's key, and each kind's hash and spans (where each starts and ends in ``group``,
    the file's bytes from the start of the record's group; ``HOLE`` where the token goes)."""

    published: int  # microseconds since 1970, UTC: ordered as the dates are
    guid: bytes  # its UTF-8: ordered as the text is
    paper_key: str
    atom_digest: bytes
    rss_digest: bytes
    group: memoryview
    atom: memoryview  # start, end, start, end, ... (unsigned 32-bit integers)
    rss: memoryview


# A group written: its paper, that paper's stamp, the group's bytes, and where in them
# each of its explanations' records is (by the explanation's ``named``).
Group = tuple[int, bytes, bytes, tuple[tuple[int, int], ...]]
# A group in a file: its paper, that paper's stamp, its place and length, its records.
Placed = tuple[int, bytes, int, int, tuple[tuple[int, int], ...]]


def entry_id(paper_id: int, name: int) -> int:
    """One number for an entry: its paper's id and its explanation's ``named``."""
    return paper_id << 64 | name


def named(explanation: str) -> int:
    """What an explanation is looked up by in a file: a 64-bit hash of it (a paper has
    at most a few hundred), not the text, which the index would hold a copy of."""
    return int.from_bytes(hashlib.blake2b(explanation.encode(), digest_size=8).digest(), "little")


@functools.cache
def code_stamp() -> str:
    """A hash of the code that shapes an entry: the source of these packages of digest,
    and the versions of the libraries that write and escape it."""
    digest = hashlib.sha256(str(_FORMAT).encode())
    root = Path(__file__).resolve().parents[1]
    for package in _SHAPED_BY:
        sources = sorted((root / package).glob("*.py"))
        if not sources:  # installed without its source: its version stands for it
            digest.update(_version("digest").encode())
        for source in sources:
            digest.update(source.name.encode() + b"\0" + source.read_bytes())
    for library in ("feedgen", "lxml", "markupsafe"):
        digest.update(_version(library).encode())
    return digest.hexdigest()


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def paper_stamp(row: PaperRow) -> bytes:
    """A hash of every field of the paper an entry shows."""
    fields = (
        row.key,
        row.first_key,
        row.title,
        row.abstract,
        row.url,
        row.arxiv_id,
        row.authors,
        row.first_seen.isoformat(),
        row.listing_date.isoformat() if row.listing_date else None,
        row.revised.isoformat() if row.revised else None,
    )
    return hashlib.sha256(repr(fields).encode()).digest()[:16]


def _stamps(site: FeedSite) -> tuple[str, str, str]:
    """What a file's head says: the code, the site, and how this machine stores the spans
    (read in place: another byte order or size would read them wrong)."""
    machine = f"{sys.byteorder} {array.array('I').itemsize}"
    return code_stamp(), f"{site.base_url}\n{site.authority}", machine


def group(paper_id: int, stamp: bytes, entries: Sequence[tuple[str, Made]]) -> Group:
    """One paper's entries (each under its explanation) as a group of the file: each
    distinct piece once, then a record an entry."""
    area = bytearray()
    placed: dict[bytes, int] = {}  # each distinct piece, and where it is in the area

    def spans(entry: Entry) -> list[int]:
        found: list[int] = []
        holes = set(entry.holes)
        for at, piece in enumerate(entry.pieces):
            if at in holes:
                found += (HOLE, HOLE)
                continue
            if not piece:
                continue
            where = placed.get(piece)
            if where is None:
                where = placed[piece] = len(area)
                area.extend(piece)
            if found and found[-1] == where:  # right after the span before: one span
                found[-1] += len(piece)
            else:
                found += (where, where + len(piece))
        return found

    laid = [(explanation, made, spans(made.atom), spans(made.rss)) for explanation, made in entries]
    records = bytearray()
    where: list[tuple[int, int]] = []
    for explanation, made, atom, rss in laid:
        at = len(area) + len(records)
        guid, key = made.guid.encode(), made.paper_key.encode()
        published = (made.published - _EPOCH) // _MICROSECOND
        records += _RECORD.pack(
            published,
            at,
            len(guid),
            len(key),
            made.atom.digest,
            made.rss.digest,
            len(atom) // 2,
            len(rss) // 2,
        )
        records += guid + key + array.array("I", atom + rss).tobytes()
        where.append((named(explanation), at))
    return paper_id, stamp, bytes(area + records), tuple(where)


@dataclass
class EntryFile:
    """A file of entries, mapped: each paper's groups with their stamps and places."""

    path: Path
    fd: int
    data: mmap.mmap
    groups: list[Placed]
    view: memoryview = field(init=False, repr=False)  # the file's bytes, sliced without a copy
    in_memory: bool = False  # copied through this process's memory, not file to file

    def __post_init__(self) -> None:
        self.view = memoryview(self.data)

    @classmethod
    def open(cls, path: Path, site: FeedSite) -> EntryFile | None:
        """The entries kept in ``path`` for ``site`` by this code; None when there is no
        such file, or it was written by other code or for another site, or cannot be read."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("the kept feed entries cannot be read, so they are made again: %s", exc)
            return None
        try:
            if os.fstat(fd).st_size < len(_MAGIC) + _END.size:
                raise ValueError("too short")
            data = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            os.close(fd)
            log.warning("the kept feed entries cannot be read, so they are made again: %s", exc)
            return None
        try:
            groups = _index(data, site)
        except (EOFError, ValueError, TypeError, KeyError, IndexError, struct.error) as exc:
            log.warning("the kept feed entries cannot be read, so they are made again: %s", exc)
            groups = None
        if groups is None:
            data.close()
            os.close(fd)
            return None
        return cls(path, fd, data, groups)

    def places(self) -> dict[int, int]:
        """Where each entry's record is, by its ``entry_id``."""
        return {
            entry_id(paper_id, name): place + at
            for paper_id, _, place, _, records in self.groups
            for name, at in records
        }

    def names(self) -> set[int]:
        """The ``entry_id`` of each entry in the file."""
        return {
            entry_id(paper_id, name)
            for paper_id, _, _, _, records in self.groups
            for name, _ in records
        }

    def close(self) -> None:
        """Let the file's mapping go (when a slice of it is still held: once that is let go)."""
        with contextlib.suppress(OSError):
            os.close(self.fd)
        with contextlib.suppress(BufferError):
            self.view.release()
            self.data.close()

    def let_go(self) -> None:
        """Give up the pages of the file this process has read (the system's cache keeps
        them while it has room): a process that reads the whole file holds none of it for
        long."""
        self.data.madvise(mmap.MADV_DONTNEED)

    def shown(self, at: int) -> Shown:
        """The record at ``at``."""
        data, view = self.data, self.view
        published, rel, guid_length, key_length, atom_digest, rss_digest, atoms, rsss = (
            _RECORD.unpack_from(data, at)
        )
        guid = at + _RECORD.size
        key = guid + guid_length
        spans = key + key_length
        middle = spans + 8 * atoms
        return Shown(
            published,
            data[guid:key],
            data[key:spans].decode(),
            atom_digest,
            rss_digest,
            view[at - rel :],
            view[spans:middle].cast("I"),
            view[middle : middle + 8 * rsss].cast("I"),
        )


def filled(entry: Shown, atom: bool, token: bytes) -> list[bytes | memoryview]:
    """The pieces of ``entry`` in a feed (Atom's when ``atom``, else RSS's), ``token`` in its
    holes: joined, the bytes of its ``Entry.filled``."""
    group = entry.group
    ends = iter(entry.atom if atom else entry.rss)
    return [
        token if start == HOLE else group[start:end] for start, end in zip(ends, ends, strict=True)
    ]


def _index(data: mmap.mmap, site: FeedSite) -> list[Placed] | None:
    """The groups of a file, when it is this code's for this site: (paper, stamp, place,
    length, records)."""
    if data[: len(_MAGIC)] != _MAGIC:  # an earlier layout's (before an upgrade): made again
        return None
    head_length = int.from_bytes(data[len(_MAGIC) : len(_MAGIC) + 4], "little")
    start = len(_MAGIC) + 4
    if marshal.loads(data[start : start + head_length]) != _stamps(site):
        return None
    index_at, index_length = _END.unpack_from(data, len(data) - _END.size)
    if index_at + index_length + _END.size != len(data):
        raise ValueError("its index is not where its end says")
    groups = marshal.loads(data[index_at : index_at + index_length])
    if type(groups) is not list:
        raise ValueError("its index is not as written")
    for paper_id, stamp, place, length, records in groups:
        if not (type(paper_id) is int and type(stamp) is bytes and 0 <= place <= index_at):
            raise ValueError("a group is not as written")
        if place + length > index_at or any(not 0 <= at < length for _, at in records):
            raise ValueError("a group is not where the index says")
    return groups


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data`` to ``fd``, however short each write is."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class EntryWriter:
    """A new file of entries, its groups written as they come; ``commit`` ends it with its
    index and puts it in place of the old file."""

    def __init__(self, path: Path, site: FeedSite) -> None:
        self.path = path
        self.temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.fd = os.open(
            self.temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600
        )
        head = marshal.dumps(_stamps(site), 4)
        self.place = 0
        self._write(_MAGIC + len(head).to_bytes(4, "little") + head)
        self.groups: list[Placed] = []

    def _write(self, data: bytes | memoryview) -> None:
        _write_all(self.fd, data)
        self.place += len(data)

    def add(self, found: Group) -> None:
        """Write a group made this run."""
        paper_id, stamp, data, records = found
        self.groups.append((paper_id, stamp, self.place, len(data), records))
        self._write(data)

    def copy(self, old: EntryFile, groups: Sequence[Placed]) -> None:
        """Write these groups of ``old`` as they stand there: file to file in the kernel
        where it can (``copy_file_range``; this process maps none of their pages), each run
        of groups next to each other in one go."""
        start = end = 0
        for paper_id, stamp, place, length, records in sorted(groups, key=lambda g: g[2]):
            if place != end:
                self._copied(old, start, end)
                start = place
            end = place + length
            self.groups.append((paper_id, stamp, self.place, length, records))
            self.place += length
        self._copied(old, start, end)

    def _copied(self, old: EntryFile, start: int, end: int) -> None:
        """Bytes ``start`` to ``end`` of ``old`` written here (``self.place`` counts them
        already)."""
        while start < end and not old.in_memory:
            try:
                done = os.copy_file_range(old.fd, self.fd, end - start, start)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                old.in_memory = True  # not between these files here: through memory
                break
            if not done:
                raise OSError(errno.EIO, f"{old.path} ended before its groups")
            start += done
        _write_all(self.fd, old.view[start:end])

    def commit(self) -> None:
        """End the file with its index, and put it in place of the old one."""
        index = marshal.dumps(self.groups, 4)
        self._write(index + _END.pack(self.place, len(index)))
        os.close(self.fd)
        self.fd = -1
        os.replace(self.temporary, self.path)

    def discard(self) -> None:
        """Leave the old file as it was."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
        with contextlib.suppress(OSError):
            self.temporary.unlink()


def records_of(groups: Iterable[Placed]) -> int:
    """How many records these groups hold."""
    return sum(len(records) for *_, records in groups)
