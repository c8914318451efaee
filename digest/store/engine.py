"""The store: engine set-up and the paper upsert that is the seen-papers diff.

SQLite gets WAL (readers never block the writer), foreign keys, a busy
timeout, and ``BEGIN IMMEDIATE`` for every transaction: a transaction that
reads and then writes takes the write lock up front, so it waits on the busy
timeout instead of failing with "database is locked" when another connection
wrote in between.

The database file is created readable by its owner only (it holds every
subscriber's address and token salt), and an older one found wider is
narrowed. SQLite's failures that an operator can act on come out of every
query as a one-line ``StoreError``: the database locked, the disk full, an I/O
error; a damaged file as ``StoreCorrupt``, with what ``PRAGMA
integrity_check`` says and what to do.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, ExceptionContext
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from digest.clock import as_utc
from digest.errors import StoreCorrupt, StoreError
from digest.files import PRIVATE, make_private
from digest.ingest.identity import paper_keys
from digest.ingest.listing import Entry
from digest.store.migrations import SCHEMA_VERSION, current_version, migrate
from digest.store.models import Paper, StoreMeta

BUSY_TIMEOUT_MS = 30_000
BATCH = 2_000  # entries per lookup/insert round trip; bounds memory on back-fills
INDEX_BATCH = 50_000  # papers added to the search index between two progress reports


def store_exists(url: str) -> bool:
    """Whether the store was made already (a database server's is taken to be there)."""
    if not url.startswith("sqlite"):
        return True
    path = sa.engine.make_url(url).database or ""
    return path in ("", ":memory:") or Path(path).is_file()


# SQLite result codes (the low byte of an extended code): a damaged file, and the failures
# of the machine (permission, busy, locked, no memory, read-only, I/O, full, cannot open).
_DAMAGED = frozenset({11, 26})
_ENVIRONMENT = frozenset({3, 5, 6, 7, 8, 10, 13, 14})


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get their folder, WAL and the pragmas above."""
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database or ""
        if path and path != ":memory:" and not path.startswith("file:"):
            _prepare_file(Path(path))
        engine = sa.create_engine(
            url,
            connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "isolation_level": None},
        )
        damage: dict[str, str] = {}  # integrity_check once per engine, however often it fails

        @sa.event.listens_for(engine, "handle_error", retval=True)
        def _on_error(context: ExceptionContext) -> BaseException | None:
            return _store_error(context.original_exception, path, damage)

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA synchronous=NORMAL")
            # 64 MB of page cache: the key indexes of a million-paper store stay in memory
            cursor.execute("PRAGMA cache_size=-65536")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            reads_only = conn.get_execution_options().get("digest_reading", False)
            conn.exec_driver_sql("BEGIN" if reads_only else "BEGIN IMMEDIATE")

        return engine
    try:
        return sa.create_engine(url, pool_pre_ping=True)
    except (SQLAlchemyError, ImportError) as exc:
        raise StoreError(f"cannot use database_url: {type(exc).__name__}") from None


def _prepare_file(path: Path) -> None:
    """The database's folder, and the file itself created 0600 (SQLite would use the umask;
    its -wal and -shm files take the database's mode)."""
    if not os.path.lexists(path):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, PRIVATE))
        except OSError as exc:
            raise StoreError(f"cannot create the database {path}: {exc.strerror}") from None
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        make_private(name)


def _store_error(error: BaseException, path: str, damage: dict[str, str]) -> StoreError | None:
    """The one-line error for an SQLite failure an operator can act on, else None (a bug)."""
    code = getattr(error, "sqlite_errorcode", None)
    if not isinstance(error, sqlite3.Error) or code is None:
        return None
    if code & 0xFF in _DAMAGED:
        if "check" not in damage:
            damage["check"] = _integrity_check(path)
        where = f"the database {path}" if path else "the database"
        return StoreCorrupt(
            f"{where} is damaged ({error}); PRAGMA integrity_check: {damage['check']};"
            " restore it from a backup, or move it aside to start an empty store"
        )
    if code & 0xFF in _ENVIRONMENT:
        return StoreError(f"database error: {error}")
    return None


def _integrity_check(path: str) -> str:
    """What ``PRAGMA integrity_check`` says of the file, on one line."""
    if not path or path == ":memory:":
        return "not run"
    try:
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = [str(row[0]) for row in conn.execute("PRAGMA integrity_check(3)")]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"cannot run ({exc})"
    text = " ".join(" ".join(rows).split())
    return text if len(text) <= 200 else text[:199] + "…"


def open_store(url: str) -> Engine:
    """Make the engine and bring the schema up to date."""
    engine = make_engine(url)
    try:
        # Most opens find the schema current: checked on a snapshot, so a command opening
        # the store never waits behind a long ingest holding the write lock.
        with reading(engine) as conn:
            current = current_version(conn) == SCHEMA_VERSION
        if not current:
            with engine.begin() as conn:
                migrate(conn)
    except OperationalError as exc:
        raise StoreError(f"cannot open the database: {exc.orig}") from None
    return engine


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection that only reads: on SQLite it reads a snapshot and never waits on a writer
    (``status`` answers during an hour-long back-fill)."""
    with engine.connect() as conn:
        conn.execution_options(digest_reading=True)
        yield conn


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """One write transaction; database errors become a ``StoreError``."""
    try:
        with engine.begin() as conn:
            yield conn
    except OperationalError as exc:
        raise StoreError(f"database error: {exc.orig}") from None


@contextmanager
def transaction_if_free(engine: Engine) -> Iterator[Connection]:
    """A write transaction that fails at once with a ``StoreError`` when another connection
    is writing, instead of waiting: for a reader (``status``) with a small write in passing."""
    if engine.dialect.name != "sqlite":
        with transaction(engine) as conn:
            yield conn
        return
    with engine.connect() as conn:
        conn.execution_options(digest_reading=True)  # plain BEGIN: the lock is tried on write
        conn.exec_driver_sql("PRAGMA busy_timeout=0")
        conn.commit()
        try:
            with conn.begin():
                yield conn
        except OperationalError as exc:
            raise StoreError(f"database error: {exc.orig}") from None
        finally:
            conn.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.commit()


def db_time(moment: datetime) -> datetime:
    return as_utc(moment, naive="refuse")  # moved: digest.clock.as_utc


@dataclass
class DiffCounts:
    """What a batch of entries did to the store."""

    entries: int = 0
    new: int = 0
    seen: int = 0


_PAPER = Paper.__table__  # type: ignore[attr-defined]
_COLUMNS = (
    "id",
    "key",
    "first_key",
    "title_key",
    "arxiv_id",
    "title",
    "abstract",
    "authors",
    "url",
    "listing_date",
    "last_seen",
)
_SELECT = sa.select(*(_PAPER.c[name] for name in _COLUMNS))
_INSERT = sa.insert(_PAPER)
_UPDATE = (
    sa.update(_PAPER)
    .where(_PAPER.c.id == sa.bindparam("_id"))
    .values(
        key=sa.bindparam("_key"),
        first_key=sa.bindparam("_first_key"),
        arxiv_id=sa.bindparam("_arxiv_id"),
        title=sa.bindparam("_title"),
        abstract=sa.bindparam("_abstract"),
        authors=sa.bindparam("_authors"),
        url=sa.bindparam("_url"),
        listing_date=sa.bindparam("_listing_date"),
        last_seen=sa.bindparam("_last_seen"),
        times_seen=_PAPER.c.times_seen + sa.bindparam("_bump"),
    )
)


def _chunks(items: Iterable[Entry], size: int) -> Iterator[list[Entry]]:
    chunk: list[Entry] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _lookup(conn: Connection, column: str, values: list[str]) -> list[dict[str, Any]]:
    """Existing papers whose ``column`` is one of ``values``."""
    rows: list[dict[str, Any]] = []
    for start in range(0, len(values), 900):  # stay under every backend's bound-parameter cap
        part = values[start : start + 900]
        result = conn.execute(_SELECT.where(_PAPER.c[column].in_(part)))
        rows.extend(dict(row._mapping) for row in result)
    return rows


def _merge(old_title: str, old_abstract: str, entry: Entry) -> tuple[str, str]:
    """The text kept when a paper is seen again: the fuller abstract wins, ties by order.

    Deterministic in the two inputs, so ingesting dumps in either order gives the same store.
    """
    mine = (len(entry.abstract), entry.abstract, entry.title)
    theirs = (len(old_abstract), old_abstract, old_title)
    best = max(mine, theirs)
    return best[2], best[1]


_SEQUENCE = sa.table("ingest_sequence", sa.column("value", sa.Integer))


def ingest_sequence(conn: Connection) -> int:
    """The number of the newest committed ingest: papers numbered up to it are all in."""
    return int(conn.execute(sa.select(_SEQUENCE.c.value)).scalar_one())


def next_ingest_sequence(conn: Connection) -> int:
    """Take the next ingest number for this transaction.

    The counter row stays locked until the transaction ends, so ingests number their papers
    one after another and a number another transaction can read is never handed out again:
    a digest's cut-off (``ingest_sequence``) never passes a paper still being written.
    """
    conn.execute(sa.update(_SEQUENCE).values(value=_SEQUENCE.c.value + 1))
    return ingest_sequence(conn)


def upsert_entries(conn: Connection, entries: Iterable[Entry], now: datetime) -> DiffCounts:
    """Record entries as seen at ``now``: insert the new, bump the known; return the counts.

    ``now`` must be unique to this call: a paper whose ``last_seen`` already equals it was
    met earlier in the same dump and is not counted twice. New papers get the next ingest
    sequence number, which digests use as their "new since" cut-off (never the clock).
    """
    counts = DiffCounts()
    now = db_time(now)
    seq = next_ingest_sequence(conn)
    # An entry with an arXiv id can only meet its paper under another key if the store has
    # papers known by title alone; a back-fill of the snapshot into a fresh store has none.
    title_only = _has_title_only_papers(conn)
    for chunk in _chunks(entries, BATCH):
        counts.entries += len(chunk)
        keyed = [(entry, *paper_keys(entry.title, entry.arxiv_id)) for entry in chunk]
        by_key = {row["key"]: row for row in _lookup(conn, "key", [k for _, k, _ in keyed])}
        by_title: dict[str, dict[str, Any]] = {}
        missing = [
            title_key
            for entry, key, title_key in keyed
            if key not in by_key and (title_only or entry.arxiv_id is None)
        ]
        if missing:
            for found in _lookup(conn, "title_key", missing):
                by_title.setdefault(found["title_key"], found)
        inserts: dict[str, dict[str, Any]] = {}
        updates: dict[int, dict[str, Any]] = {}
        for entry, key, title_key in keyed:
            row: dict[str, Any] | None = by_key.get(key) or _same_paper(
                by_title.get(title_key), entry
            )
            if row is None:
                fresh = inserts.get(key) or _same_paper(inserts.get("title:" + title_key), entry)
                if fresh is None:
                    fresh = {
                        "key": key,
                        "title_key": title_key,
                        "arxiv_id": entry.arxiv_id,
                        "title": entry.title,
                        "abstract": entry.abstract,
                        "authors": entry.authors,
                        "url": entry.url,
                        "listing_date": entry.published,
                        "first_seen": now,
                        "last_seen": now,
                        "times_seen": 1,
                        "seq": seq,
                    }
                    inserts[key] = fresh
                    if entry.arxiv_id is None:
                        inserts["title:" + title_key] = fresh
                else:
                    _absorb(fresh, entry, key)
                continue
            update = updates.get(row["id"])
            if update is None:
                already = row["last_seen"] == now  # met earlier in this same dump
                update = dict(row, times_seen=0 if already else 1)
                updates[row["id"]] = update
                counts.seen += 0 if already else 1
            _absorb(update, entry, key)
        fresh_rows = list({id(row): row for row in inserts.values()}.values())
        title_only = title_only or any(row["arxiv_id"] is None for row in fresh_rows)
        counts.new += len(fresh_rows)
        if fresh_rows:
            _insert_papers(conn, fresh_rows)
        if updates:
            conn.execute(
                _UPDATE,
                [
                    {
                        "_id": u["id"],
                        "_key": u["key"],
                        "_first_key": u["first_key"],
                        "_arxiv_id": u["arxiv_id"],
                        "_title": u["title"],
                        "_abstract": u["abstract"],
                        "_authors": u["authors"],
                        "_url": u["url"],
                        "_listing_date": u["listing_date"],
                        "_last_seen": now,
                        "_bump": u["times_seen"],
                    }
                    for u in updates.values()
                ],
            )
    return counts


_INSERT_COLUMNS = (
    "key", "title_key", "arxiv_id", "title", "abstract", "authors", "url", "listing_date",
    "first_seen", "last_seen", "times_seen", "seq",
)  # fmt: skip
_RAW_INSERT = (
    f"INSERT INTO paper ({', '.join(_INSERT_COLUMNS)})"
    f" VALUES ({', '.join('?' * len(_INSERT_COLUMNS))})"
)


def _insert_papers(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert new papers; on SQLite straight through the driver (a back-fill's hot path).

    SQLAlchemy's per-row parameter processing costs more than SQLite's insert itself,
    so on SQLite the stored forms of the times and dates are made here, once per value,
    with the dialect's own processors, and the rows go to ``executemany`` as tuples.
    """
    dialect = conn.dialect
    if dialect.name != "sqlite":
        conn.execute(_INSERT, rows)
        return
    stamp = _PAPER.c.first_seen.type.dialect_impl(dialect).bind_processor(dialect)
    day = _PAPER.c.listing_date.type.dialect_impl(dialect).bind_processor(dialect)
    times: dict[Any, Any] = {}
    days: dict[Any, Any] = {None: None}
    tuples = []
    for row in rows:
        seen = row["first_seen"]
        if seen not in times:
            times[seen] = stamp(seen) if stamp else seen
        listed = row["listing_date"]
        if listed not in days:
            days[listed] = day(listed) if day else listed
        tuples.append(
            (row["key"], row["title_key"], row["arxiv_id"], row["title"], row["abstract"],
             row["authors"], row["url"], days[listed], times[seen], times[row["last_seen"]], 1,
             row["seq"])
        )  # fmt: skip
    conn.exec_driver_sql(_RAW_INSERT, tuples)


def index_papers(conn: Connection, progress: Callable[[str, int], None] | None = None) -> int:
    """Bring the SQLite search index up to the newest paper; returns how many were added.

    After a back-fill that deferred it this takes seconds: ``progress`` is told the count
    so far, in steps of ``INDEX_BATCH`` papers.
    """
    if conn.dialect.name != "sqlite":
        return 0
    upto = conn.exec_driver_sql("SELECT indexed_upto FROM search_state").scalar() or 0
    newest = conn.exec_driver_sql("SELECT coalesce(max(id), 0) FROM paper").scalar() or 0
    if newest <= upto:
        return 0
    added = 0
    for start in range(upto, newest, INDEX_BATCH):
        if progress is not None:
            progress("building the search index", added)
        added += conn.exec_driver_sql(
            "INSERT INTO paper_fts(rowid, title, abstract)"
            " SELECT id, title, abstract FROM paper WHERE id > ? AND id <= ? ORDER BY id",
            (start, min(start + INDEX_BATCH, newest)),
        ).rowcount
    if progress is not None:
        progress("building the search index", added)
    conn.exec_driver_sql("UPDATE search_state SET indexed_upto = ?", (newest,))
    return int(newest - upto)


FEED_AUTHORITY = "feed_authority"
_META = StoreMeta.__table__  # type: ignore[attr-defined]


def feed_authority(engine: Engine, host: str) -> str:
    """The authority of the store's feed GUIDs (``tag:`` URIs), ``host`` if none yet.

    Recorded the first time feeds are published, so a site that moves to another
    ``base_url`` keeps its GUIDs and its readers do not see every paper again.
    """
    query = sa.select(_META.c.value).where(_META.c.name == FEED_AUTHORITY)
    with reading(engine) as conn:
        found = conn.execute(query).scalar()
    if found is None:
        with transaction(engine) as conn:
            found = conn.execute(query).scalar()
            if found is None:
                conn.execute(sa.insert(_META).values(name=FEED_AUTHORITY, value=host))
                found = host
    return str(found)


def _has_title_only_papers(conn: Connection) -> bool:
    """Whether any paper is known by its title alone (a range probe of the key index)."""
    found = conn.execute(
        sa.select(_PAPER.c.id).where(_PAPER.c.key >= "title:", _PAPER.c.key < "title;").limit(1)
    ).first()
    return found is not None


def _same_paper(row: dict[str, Any] | None, entry: Entry) -> dict[str, Any] | None:
    """``row`` found by title is this entry's paper unless both carry different arXiv ids."""
    if row is not None and row["arxiv_id"] and entry.arxiv_id and row["arxiv_id"] != entry.arxiv_id:
        return None
    return row


def _absorb(row: dict[str, Any], entry: Entry, key: str) -> None:
    """Fold what ``entry`` adds into ``row``: an arXiv id, fuller text, authors, link, date."""
    if entry.arxiv_id and not row["arxiv_id"]:
        if row.get("id") is not None and row["first_key"] is None:
            # A stored paper keeps the key it was first seen under for its feed GUID; one
            # met earlier in this same batch was never published and simply takes the new.
            row["first_key"] = row["key"]
        row["arxiv_id"] = entry.arxiv_id
        row["key"] = key
    row["title"], row["abstract"] = _merge(row["title"], row["abstract"], entry)
    if entry.authors and not row["authors"]:
        row["authors"] = entry.authors
    if entry.url and not row["url"]:
        row["url"] = entry.url
    if entry.published and (row["listing_date"] is None or entry.published < row["listing_date"]):
        row["listing_date"] = entry.published
