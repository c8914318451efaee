"""The store: engine set-up, transactions and the ingest sequence.

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
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, ExceptionContext
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from digest.errors import StoreCorrupt, StoreError, UsageError
from digest.files import PRIVATE, make_folder, make_private
from digest.store.migrations import SCHEMA_VERSION, current_version, migrate
from digest.store.models import StoreMeta

BUSY_TIMEOUT_MS = 30_000


def store_exists(url: str) -> bool:
    """Whether the store was made already (a database server's is taken to be there)."""
    if not url.startswith("sqlite"):
        return True
    path = sa.engine.make_url(url).database or ""
    return path in ("", ":memory:") or Path(path).is_file()


def url_problem(url: str) -> str | None:
    """Why ``url`` names no store digest can open (unparseable, an unknown database, its
    driver not installed), or None; said when the settings are read, not at the first query.
    """
    try:
        parsed = sa.engine.make_url(url)
        dialect = parsed.get_dialect()
    except (SQLAlchemyError, ValueError):
        return "is not a database URL (sqlite:///PATH or postgresql+psycopg://USER@HOST/NAME)"
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        return f"needs the Python package {exc.name or 'of its driver'}, which is not installed"
    return None


def store_label(url: str) -> str:
    """The store as an operator knows it: the SQLite file, or the URL without its password."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or ":memory:"
    return parsed.render_as_string(hide_password=True)


def backup_sqlite(url: str, target: Path) -> int:
    """Copy the SQLite store to the new file ``target`` while other processes read and write
    it (SQLite's online backup: one consistent snapshot, the WAL included); its size."""
    parsed = sa.engine.make_url(url)
    source = parsed.database or ""
    if parsed.get_backend_name() != "sqlite":
        raise UsageError("backup copies an SQLite store; back up PostgreSQL with pg_dump")
    if source in ("", ":memory:") or not Path(source).is_file():
        raise StoreError(f"there is no store at {source or 'memory'} to back up")
    if os.path.lexists(target):
        raise UsageError(f"backup: {target} exists; give a new file")
    draft = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        os.close(os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE))
        origin = sqlite3.connect(source, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            copy = sqlite3.connect(draft)
            try:
                origin.backup(copy)
            finally:
                copy.close()
        finally:
            origin.close()
        os.link(draft, target)  # whole or not at all, and never over a file made meanwhile
    except (OSError, sqlite3.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise StoreError(f"cannot back up the store to {target}: {reason}") from None
    finally:
        draft.unlink(missing_ok=True)
    return target.stat().st_size


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
        # named, so an operator (or a test) finds this process's connections in pg_stat_activity
        args = (
            {"application_name": f"digest pid={os.getpid()}"} if url.startswith("postgres") else {}
        )
        engine = sa.create_engine(url, pool_pre_ping=True, connect_args=args)
    except (SQLAlchemyError, ImportError) as exc:
        raise StoreError(f"cannot use database_url: {type(exc).__name__}") from None

    @sa.event.listens_for(engine, "handle_error", retval=True)
    def _on_server_error(context: ExceptionContext) -> BaseException | None:
        # A connection the server ended (a restart, pg_terminate_backend, idle_session_timeout)
        # is the machine's failure, told in one line; the pool opens a new one next time.
        if context.is_disconnect and not context.is_pre_ping:
            return StoreError(
                f"the database connection was lost: {_one_line(context.original_exception)}"
            )
        return None

    return engine


def _prepare_file(path: Path) -> None:
    """The database's folder, and the file itself created 0600 (SQLite would use the umask;
    its -wal and -shm files take the database's mode)."""
    if not os.path.lexists(path):
        try:
            make_folder(path.parent)
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
                schema_lock(conn)  # hosts started at once: one migrates, the rest find it done
                migrate(conn)
    except OperationalError as exc:
        raise StoreError(f"cannot open the database: {exc.orig}") from None
    except DBAPIError as exc:  # the server refused it: no right to create the tables, …
        first = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else ""
        raise StoreError(
            f"cannot bring the database up to date ({store_label(url)}): {first}"
        ) from None
    return engine


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection that only reads: on SQLite it reads a snapshot and never waits on a writer
    (``status`` answers during an hour-long back-fill)."""
    with engine.connect() as conn:
        conn.execution_options(digest_reading=True)
        yield conn


def driver_mark(dialect: sa.Dialect) -> str:
    """Where a value goes in a statement run through the driver itself: ``?`` (sqlite3) or
    ``%s`` (psycopg)."""
    return "?" if dialect.paramstyle == "qmark" else "%s"


def driver_form(dialect: sa.Dialect, column: sa.ColumnElement[Any]) -> Callable[[Any], Any]:
    """A value of ``column`` as SQLAlchemy sends it to the driver (None as None): for
    statements run through the driver itself, which store the same text."""
    # The type as this dialect implements it: what SQLAlchemy's own statements convert with
    # (the type's ``bind_processor`` alone writes times with their offset on SQLite).
    convert = column.type.dialect_impl(dialect).bind_processor(dialect)
    if convert is None:
        return lambda value: value
    return lambda value: None if value is None else convert(value)


def read_form(dialect: sa.Dialect, column: sa.ColumnElement[Any]) -> Callable[[Any], Any]:
    """A value of ``column`` as the driver reads it, made what SQLAlchemy's own statements
    give (None as None): for statements run through the driver itself."""
    convert = column.type.dialect_impl(dialect).result_processor(dialect, None)
    if convert is None:
        return lambda value: value
    return lambda value: None if value is None else convert(value)


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """One write transaction; database errors become a ``StoreError``."""
    try:
        with engine.begin() as conn:
            yield conn
    except OperationalError as exc:
        raise StoreError(f"database error: {exc.orig}") from None


# A dump's commit checkpoints only when the WAL holds this many pages (200 MB at SQLite's
# 4 KB pages): a back-fill's commit still does, and dumps ingested one after another leave
# no more than this, and one dump, waiting in the WAL.
BULK_CHECKPOINT_PAGES = 50_000


@contextmanager
def bulk_transaction(engine: Engine) -> Iterator[Connection]:
    """A write transaction of many pages (a dump's papers and their index entries). On SQLite
    its commit syncs the WAL, and copying the pages into the database (the checkpoint) is
    left to a later commit or to the connection's close, unless the WAL holds
    ``BULK_CHECKPOINT_PAGES`` by then.

    A commit that leaves more than ``wal_autocheckpoint`` pages (a thousand) in the WAL
    checkpoints at once, before it returns: it reads every page back from the WAL, writes
    it into the database and syncs both files. For a daily dump that is 14,000 pages, and
    nothing the dump needs: readers find the committed pages in the WAL, and a crash
    after the commit leaves them there, to be copied by whoever opens the store next. What
    the checkpoint gave besides, the commit's pages on disk before it returns (with
    ``synchronous=NORMAL`` a power cut may take back the last commits), the sync of the WAL
    gives here: a dump leaves the inbox only once its papers would survive one.
    """
    full = 2  # synchronous=FULL
    pragmas = {"wal_autocheckpoint": BULK_CHECKPOINT_PAGES, "synchronous": full}
    with transaction_under(engine, pragmas) as conn:
        yield conn


@contextmanager
def transaction_under(engine: Engine, pragmas: Mapping[str, int]) -> Iterator[Connection]:
    """A write transaction (``transaction``) that on SQLite runs with these ``PRAGMA``
    settings, each set before it begins (SQLite takes some only outside a transaction)
    and set back to what it was before the connection returns to the pool; a connection
    that does not read its settings back as they were is dropped instead."""
    if engine.dialect.name != "sqlite":
        with transaction(engine) as conn:
            yield conn
        return
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        if raw is None:  # pragma: no cover - a pooled connection always has its driver's
            raise StoreError("database error: no connection")
        before = {name: int(raw.execute(f"PRAGMA {name}").fetchone()[0]) for name in pragmas}
        try:
            for name, value in pragmas.items():
                raw.execute(f"PRAGMA {name}={int(value)}")
            with conn.begin():
                yield conn
        except OperationalError as exc:
            raise StoreError(f"database error: {exc.orig}") from None
        finally:
            try:
                for name, value in before.items():
                    raw.execute(f"PRAGMA {name}={value}")
                back = all(
                    int(raw.execute(f"PRAGMA {name}").fetchone()[0]) == value
                    for name, value in before.items()
                )
            except sqlite3.Error:
                back = False
            if not back:
                conn.invalidate()  # never back in the pool with a setting of its own


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


def write_lock(conn: Connection) -> None:
    """Take the write lock now (SQLite's ``BEGIN IMMEDIATE`` runs on the first statement)."""
    conn.execute(sa.select(1))


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


class HeldLock:
    """A PostgreSQL session advisory lock held on a connection of its own."""

    def __init__(self, conn: Connection, key: int) -> None:
        self.conn = conn
        self.key = key

    def check(self) -> str | None:
        """None while the lock is still held; else why it is not (its connection was lost).

        The lock lives exactly as long as its session: a query that goes through proves the
        session, and so the lock, is still there (and keeps it from looking idle).
        """
        try:
            self.conn.execute(sa.text("SELECT 1")).scalar()
            self.conn.commit()
        except (SQLAlchemyError, OSError) as exc:
            return _one_line(exc)
        return None

    def release(self) -> str | None:
        """Unlock; never raises: None when done, else why it could not be (a lost connection
        released the lock already)."""
        try:
            self.conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
            self.conn.commit()
        except (SQLAlchemyError, OSError) as exc:
            return _one_line(exc)
        return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(getattr(exc, "orig", None) or exc).split())
    return text[:300]


@contextmanager
def advisory_lock(database_url: str, key: int, label: str) -> Iterator[HeldLock | str]:
    """Hold PostgreSQL's session advisory lock ``key`` from a connection of its own named
    ``label``; yields the held lock, or, when another session holds it, that session's name
    (and holds nothing)."""
    try:
        engine = sa.create_engine(
            database_url, poolclass=sa.pool.NullPool, connect_args={"application_name": label}
        )
        conn = engine.connect()
    except (SQLAlchemyError, ImportError) as exc:
        raise StoreError(f"cannot reach the database to take the run lock: {exc}") from None
    try:
        try:
            got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar()
            if not got:
                row = conn.execute(
                    sa.text(
                        "SELECT a.application_name FROM pg_locks l"
                        " JOIN pg_stat_activity a ON a.pid = l.pid"
                        " WHERE l.locktype = 'advisory' AND l.granted"
                        " AND l.objsubid = 1"
                        " AND (l.classid::bigint << 32 | l.objid::bigint) = :key"
                    ),
                    {"key": key},
                ).first()
                conn.rollback()
                yield str(row[0] if row else "")
                return
            conn.commit()  # the lock is session-level; no transaction stays open all run
        except OperationalError as exc:
            raise StoreError(f"cannot take the run lock: {_one_line(exc)}") from None
        yield HeldLock(conn, key)
    finally:
        with suppress(SQLAlchemyError, OSError):  # a lost connection has nothing to close
            conn.close()
        engine.dispose()


# The planners' lock (pg_advisory_xact_lock): a 63-bit key derived from a name, like the run's.
PLAN_KEY = zlib.crc32(b"digest.plan") << 16 | 0x6467


SCHEMA_KEY = zlib.crc32(b"digest.schema") << 16 | 0x6467


def schema_lock(conn: Connection) -> None:
    """Make this transaction the only one changing the schema until it ends: on PostgreSQL a
    transaction-scoped advisory lock (the migrations run in that transaction, and one that
    waited reads the version the first one wrote), on SQLite the write lock."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_KEY})
    else:
        write_lock(conn)


def plan_lock(conn: Connection) -> None:
    """Make this transaction the only one planning the outbox until it ends.

    On PostgreSQL a transaction-scoped advisory lock: it goes with the transaction's commit,
    rollback or lost connection, so it can never outlive the writes it guards, and a planner
    that waited for it reads what the one before it wrote (one digest per reader and
    period). On SQLite the write lock (``BEGIN IMMEDIATE``) does the same.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": PLAN_KEY})
    else:
        write_lock(conn)


def insert_or_skip(conn: Connection, table: sa.Table) -> Any:
    """An ``INSERT`` of the connection's dialect that can take ``ON CONFLICT`` (SQLite 3.35
    and PostgreSQL alike): how rows every host may write at once are made exactly once."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table)
    raise StoreError(f"the store needs SQLite or PostgreSQL, not {conn.dialect.name}")
