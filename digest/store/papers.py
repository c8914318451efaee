"""Papers: the one row type the rest of the code reads them as, and its named queries."""

from __future__ import annotations

import heapq
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from digest.store.models import Paper, StoreMeta

_PAPER = Paper.__table__  # type: ignore[attr-defined]
_META = StoreMeta.__table__  # type: ignore[attr-defined]
PARAMETERS = 900  # ids per ``IN (...)``: under every backend's bound-parameter cap
INDEX_BATCH = 50_000  # papers added to the search index between two progress reports
# A bulk addition to the search index (a back-fill) is followed by merging the whole index
# into one segment when it added at least this many papers and a tenth of the store.
OPTIMIZE_AFTER = 50_000


@dataclass(frozen=True, slots=True)
class PaperRow:
    """A stored paper as the ranker, the emails and the feeds read it."""

    id: int
    key: str
    title: str
    abstract: str
    url: str | None
    arxiv_id: str | None
    times_seen: int
    first_seen: datetime
    authors: str = ""
    seq: int = 0  # the ingest that first saw it
    first_key: str | None = None  # the key before it adopted an arXiv id
    listing_date: date | None = None  # the paper's own date (None only in rows of old stores)
    revised: date | None = None  # when it last changed, when its listing said

    def __hash__(self) -> int:
        # By its id and key, not every field: equal rows have equal ids and keys, and a row
        # is hashed for every distinct item a batch of digests carries (``stored_view``),
        # where hashing its dates and texts cost more than the lookup.
        return hash((self.id, self.key))

    @property
    def guid_key(self) -> str:
        """The key a paper was first seen under: what its feed GUID is made of."""
        return self.first_key or self.key

    @property
    def dated(self) -> date:
        """The paper's own date: its listing date, else the day it was first seen."""
        return self.listing_date or self.first_seen.astimezone(UTC).date()


# The columns are the row type's own fields, by name: one list, so a new column is a new
# field of ``PaperRow`` and nothing else here.
FIELDS = tuple(field.name for field in fields(PaperRow))
_COLUMNS = tuple(_PAPER.c[name] for name in FIELDS)
_ROW = sa.select(*_COLUMNS)


def paper_columns(prefix: str) -> tuple[sa.ColumnElement[Any], ...]:
    """The paper's columns labelled ``prefix`` + field name, for a query that joins papers
    to another table (read back with ``reader(result.keys(), prefix)``)."""
    return tuple(column.label(prefix + column.name) for column in _COLUMNS)


def reader(names: Iterable[str], prefix: str = "") -> Callable[[Any], PaperRow]:
    """Turns rows with these column ``names`` (a result's ``keys()``) into ``PaperRow``
    values, each field read from the column of its name (``prefix`` + name). The names are
    looked up once per result, not once per row."""
    where = {name: i for i, name in enumerate(names)}
    pick = operator.itemgetter(*(where[prefix + name] for name in FIELDS))
    return lambda row: PaperRow(*pick(row))


def _rows(conn: Connection, query: Any) -> list[PaperRow]:
    result = conn.execute(query)
    paper = reader(result.keys())
    return [paper(row) for row in result]


def _news(dialect: str, days: int) -> sa.ColumnElement[bool]:
    """Papers that were news when they came: dated at most ``days`` before the day they were
    first seen (UTC), or with no date of their own."""
    if dialect == "sqlite":  # first_seen is stored as 'YYYY-MM-DD HH:MM:SS' in UTC
        earliest: Any = sa.func.date(_PAPER.c.first_seen, f"-{int(days)} days")
    else:
        earliest = sa.cast(sa.func.timezone("UTC", _PAPER.c.first_seen), sa.Date) - int(days)
    return sa.or_(_PAPER.c.listing_date.is_(None), _PAPER.c.listing_date >= earliest)


def new_since(
    conn: Connection, after: int, upto: int, *, news_days: int | None = None
) -> list[PaperRow]:
    """Papers of the ingests numbered after ``after`` and up to ``upto``, by id; with
    ``news_days``, only those dated at most that many days before they were first seen (a
    back-fill of old papers is new to the store, and no news)."""
    query = _ROW.where(_PAPER.c.seq > after, _PAPER.c.seq <= upto)
    if news_days is not None:
        query = query.where(_news(conn.dialect.name, news_days))
    return _rows(conn, query.order_by(_PAPER.c.id))


def newest(
    conn: Connection, limit: int, *, by: Literal["id", "first_seen", "dated"] = "id"
) -> list[PaperRow]:
    """The ``limit`` newest papers, newest first: by id, by when first seen, or by their own
    date (so a back-filled old paper is never the newest)."""
    if by == "id":
        return _rows(conn, _ROW.order_by(_PAPER.c.id.desc()).limit(limit))
    if by == "dated":
        # Every paper has a listing date since schema 8 (its first day seen when the listing
        # gave none), so the listing_date index answers this without a scan.
        return _rows(
            conn,
            _ROW.where(_PAPER.c.listing_date.is_not(None))
            .order_by(_PAPER.c.listing_date.desc(), _PAPER.c.id.desc())
            .limit(limit),
        )
    return _rows(conn, _ROW.order_by(_PAPER.c.first_seen.desc(), _PAPER.c.id.desc()).limit(limit))


def by_ids(conn: Connection, ids: Sequence[int]) -> dict[int, PaperRow]:
    """The papers with these ids, by id."""
    found: dict[int, PaperRow] = {}
    for start in range(0, len(ids), PARAMETERS):
        for row in _rows(conn, _ROW.where(_PAPER.c.id.in_(ids[start : start + PARAMETERS]))):
            found[row.id] = row
    return found


def stats_ids(conn: Connection, sample: int) -> list[int]:
    """The ids of the papers whose terms stand for the store's: every paper's, or those of
    the ``sample`` papers whose ids hash lowest (``_spread``), in order.

    A uniform sample that depends on the store's papers alone (the same store always gives
    the same one), and that moves little as papers come: a new paper takes the place of
    one of the sample with the odds of any paper, so a day's papers change a few hundred
    of the sample's (and its counts can be brought up to date from those alone)."""
    ids = list(conn.execute(sa.select(_PAPER.c.id)).scalars())
    if len(ids) > sample:
        ids = heapq.nsmallest(sample, ids, key=_spread)
    ids.sort()
    return ids


def _spread(paper_id: int) -> int:
    """An id's place in the sampling order: ids scattered over 64 bits (Fibonacci hashing)."""
    return (paper_id * 0x9E3779B97F4A7C15) & 0xFFFF_FFFF_FFFF_FFFF


def stats_texts(conn: Connection, ids: Sequence[int]) -> dict[int, tuple[str, str]]:
    """(title, abstract) of the papers of ``ids`` still in the store, by id."""
    query = sa.select(_PAPER.c.id, _PAPER.c.title, _PAPER.c.abstract)
    found: dict[int, tuple[str, str]] = {}
    for start in range(0, len(ids), PARAMETERS):
        part = query.where(_PAPER.c.id.in_(ids[start : start + PARAMETERS]))
        for ident, title, abstract in conn.execute(part):
            found[ident] = (title, abstract)
    return found


def stats_sample(conn: Connection, sample: int) -> list[tuple[str, str]]:
    """(title, abstract) of every paper, or of the uniform sample of ``sample`` of them
    that ``stats_ids`` chooses, in the order of their ids."""
    ids = stats_ids(conn, sample)
    texts = stats_texts(conn, ids)
    return [texts[ident] for ident in ids if ident in texts]


KEPT_STATS = "term_counts"  # the row of ``StoreMeta`` that keeps the sample's counts


def kept_counts(conn: Connection) -> str | None:
    """The term counts of the statistics' sample as kept by the last run (JSON), if any."""
    found = conn.execute(sa.select(_META.c.value).where(_META.c.name == KEPT_STATS)).scalar()
    return None if found is None else str(found)


def keep_counts(conn: Connection, value: str) -> None:
    """Keep ``value`` (JSON) as the term counts of the statistics' sample."""
    conn.execute(sa.delete(_META).where(_META.c.name == KEPT_STATS))
    conn.execute(sa.insert(_META).values(name=KEPT_STATS, value=value))


def fts_candidates(
    conn: Connection, match: str, limit: int, *, since: datetime | None = None
) -> list[PaperRow] | None:
    """The best ``limit`` papers the SQLite full-text index finds for the ``MATCH``
    expression ``match`` (first seen at or after ``since``, when given), by id; None off
    SQLite (no index there)."""
    if conn.dialect.name != "sqlite":
        return None
    if since is None:
        sql = "SELECT rowid FROM paper_fts WHERE paper_fts MATCH ? ORDER BY rank LIMIT ?"
        params: tuple[Any, ...] = (match, limit)
    else:
        # Papers are numbered as they come, so the recent ones are a range of rowids, which
        # the index seeks to instead of ranking every match of a common word in the store.
        # min(id) would walk the ids from the oldest: the first_seen index finds the few
        recent = conn.execute(sa.select(_PAPER.c.id).where(_PAPER.c.first_seen >= since))
        first = min(recent.scalars(), default=None)
        if first is None:
            return []
        sql = (
            "SELECT rowid FROM paper_fts WHERE paper_fts MATCH ? AND rowid >= ?"
            " ORDER BY rank LIMIT ?"
        )
        params = (match, first, limit)
    ids = [row[0] for row in conn.exec_driver_sql(sql, params).all()]
    found = by_ids(conn, ids)
    return [found[i] for i in sorted(found) if since is None or found[i].first_seen >= since]


@dataclass(frozen=True, slots=True)
class PaperPage:
    """A paper as its web page shows it: the row, and when and how often it was listed."""

    row: PaperRow
    listing_date: date | None
    last_seen: datetime


def _under_key(conn: Connection, query: sa.Select[Any], key: str) -> sa.Row[Any] | None:
    """``query``'s row for the paper stored under ``key``, or first seen under it (a link
    sent before the paper adopted its arXiv id still names it)."""
    found = conn.execute(query.where(_PAPER.c.key == key)).first()
    if found is None:
        found = conn.execute(query.where(_PAPER.c.first_key == key).limit(1)).first()
    return found


def row_by_key(conn: Connection, key: str) -> PaperRow | None:
    """The paper stored under ``key`` (or first seen under it), if any."""
    page = by_key(conn, key)
    return None if page is None else page.row


def by_key(conn: Connection, key: str) -> PaperPage | None:
    """The paper stored under ``key`` (or first seen under it), if any, as its page shows it."""
    query = sa.select(*paper_columns("paper_"), _PAPER.c.listing_date, _PAPER.c.last_seen)
    found = _under_key(conn, query, key)
    if found is None:
        return None
    paper = reader(found._fields, "paper_")
    return PaperPage(paper(found), found.listing_date, found.last_seen)


def first_seen_since(conn: Connection, since: datetime, limit: int) -> list[PaperRow]:
    """Papers first seen at or after ``since``, newest first, at most ``limit``."""
    return _rows(
        conn,
        _ROW.where(_PAPER.c.first_seen >= since)
        .order_by(_PAPER.c.first_seen.desc(), _PAPER.c.id.desc())
        .limit(limit),
    )


def trending(conn: Connection, since: datetime, limit: int) -> list[PaperRow]:
    """Papers first seen since ``since`` that came back in several listings, most seen first."""
    return _rows(
        conn,
        _ROW.where(_PAPER.c.first_seen >= since, _PAPER.c.times_seen > 1)
        .order_by(_PAPER.c.times_seen.desc(), _PAPER.c.first_seen.desc(), _PAPER.c.id.desc())
        .limit(limit),
    )


def latest_ingest(engine: Engine) -> int:
    """The number of the newest committed ingest (``ingest_sequence``), read in one statement
    on a pooled driver connection: what every poll of the public feed asks first."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("SELECT value FROM ingest_sequence")
        row = cursor.fetchone()
        cursor.close()
    finally:
        raw.close()
    return int(row[0]) if row else 0


def count(conn: Connection) -> int:
    """How many papers the store holds."""
    return int(conn.execute(sa.select(sa.func.count()).select_from(_PAPER)).scalar_one())


def has_any(conn: Connection) -> bool:
    """Whether the store holds any paper at all."""
    return conn.execute(sa.select(_PAPER.c.id).limit(1)).first() is not None


def counts(conn: Connection, since: datetime) -> tuple[int, int, datetime | None]:
    """How many papers the store holds, how many were first seen since ``since``, and when
    the newest was."""
    total = conn.execute(sa.select(sa.func.count()).select_from(_PAPER)).scalar_one()
    newest_seen = conn.execute(sa.select(sa.func.max(_PAPER.c.first_seen))).scalar()
    recent = conn.execute(
        sa.select(sa.func.count()).select_from(_PAPER).where(_PAPER.c.first_seen >= since)
    ).scalar_one()
    return int(total), int(recent), newest_seen


# The paper write side, for the seen-papers diff: plain row dicts in and out.
_LOOKUP_COLUMNS = (
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
    "revised",
    "last_seen",
)
_LOOKUP = sa.select(*(_PAPER.c[name] for name in _LOOKUP_COLUMNS))
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
        revised=sa.bindparam("_revised"),
        last_seen=sa.bindparam("_last_seen"),
        times_seen=_PAPER.c.times_seen + sa.bindparam("_bump"),
    )
)


def lookup(conn: Connection, column: str, values: list[str]) -> list[dict[str, Any]]:
    """Existing papers whose ``column`` is one of ``values``, as row dicts.

    On SQLite straight through the driver, the values read back by the column types' own
    processors: a daily dump looks up every entry, and the statement's expansion and its
    parameters' processing in SQLAlchemy cost as much as the index probes themselves.
    """
    if conn.dialect.name == "sqlite":
        return _lookup_sqlite(conn, _PAPER.c[column].name, values)
    rows: list[dict[str, Any]] = []
    for start in range(0, len(values), PARAMETERS):
        part = values[start : start + PARAMETERS]
        result = conn.execute(_LOOKUP.where(_PAPER.c[column].in_(part)))
        rows.extend(dict(row._mapping) for row in result)
    return rows


_RAW_LOOKUP = f"SELECT {', '.join(_LOOKUP_COLUMNS)} FROM paper WHERE "


def _lookup_sqlite(conn: Connection, column: str, values: list[str]) -> list[dict[str, Any]]:
    dialect = conn.dialect
    processors = [
        (i, processor)
        for i, name in enumerate(_LOOKUP_COLUMNS)
        if (processor := _PAPER.c[name].type.dialect_impl(dialect).result_processor(dialect, None))
    ]
    rows: list[dict[str, Any]] = []
    for start in range(0, len(values), PARAMETERS):
        part = tuple(values[start : start + PARAMETERS])
        sql = f"{_RAW_LOOKUP}{column} IN ({', '.join('?' * len(part))})"
        for found in conn.exec_driver_sql(sql, part).all():
            row = list(found)
            for i, processor in processors:
                row[i] = processor(row[i])
            rows.append(dict(zip(_LOOKUP_COLUMNS, row, strict=True)))
    return rows


def lookup_title_prefix(conn: Connection, prefix: str, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` papers whose title key starts with ``prefix``, as row dicts (a range
    of the title-key index)."""
    query = _LOOKUP.where(_PAPER.c.title_key >= prefix, _PAPER.c.title_key < prefix + "\uffff")
    return [dict(row._mapping) for row in conn.execute(query.order_by(_PAPER.c.id).limit(limit))]


def update_papers(conn: Connection, rows: Sequence[dict[str, Any]], now: datetime) -> None:
    """Write back papers seen again at ``now``; each row's ``times_seen`` is what to add."""
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
                "_revised": u["revised"],
                "_last_seen": now,
                "_bump": u["times_seen"],
            }
            for u in rows
        ],
    )


_INSERT_COLUMNS = (
    "key", "title_key", "arxiv_id", "title", "abstract", "authors", "url", "listing_date",
    "first_seen", "last_seen", "times_seen", "seq", "revised",
)  # fmt: skip
_RAW_INSERT = (
    f"INSERT INTO paper ({', '.join(_INSERT_COLUMNS)})"
    f" VALUES ({', '.join('?' * len(_INSERT_COLUMNS))})"
)


def insert_papers(conn: Connection, rows: list[dict[str, Any]]) -> None:
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
        listed, revised = row["listing_date"], row["revised"]
        if listed not in days:
            days[listed] = day(listed) if day else listed
        if revised not in days:
            days[revised] = day(revised) if day else revised
        tuples.append(
            (row["key"], row["title_key"], row["arxiv_id"], row["title"], row["abstract"],
             row["authors"], row["url"], days[listed], times[seen], times[row["last_seen"]], 1,
             row["seq"], days[revised])
        )  # fmt: skip
    conn.exec_driver_sql(_RAW_INSERT, tuples)


def has_title_only_papers(conn: Connection) -> bool:
    """Whether any paper is known by its title alone (a range probe of the key index)."""
    found = conn.execute(
        sa.select(_PAPER.c.id).where(_PAPER.c.key >= "title:", _PAPER.c.key < "title;").limit(1)
    ).first()
    return found is not None


def index_papers(conn: Connection, progress: Callable[[str, int], None] | None = None) -> int:
    """Bring the SQLite search index up to the newest paper; returns how many were added.

    After a back-fill that deferred it this takes seconds: ``progress`` is told the count
    so far, in steps of ``INDEX_BATCH`` papers.

    A bulk addition (``OPTIMIZE_AFTER`` papers or more, and a tenth of the store) ends by
    merging the index into one segment. The full-text index is a stack of segments that
    every later write goes on merging, a share of pages per page it writes: a back-fill of
    a million papers leaves merges under way through most of the index, and each daily
    dump after it would pay for them, eight pages of merging for each of its own at a
    million papers, until they are done. Merged once here, at the back-fill's speed, a
    daily dump writes its own segment and merges only small ones.
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
    if added >= OPTIMIZE_AFTER and added * 10 >= newest:
        if progress is not None:
            progress("merging the search index", added)
        conn.exec_driver_sql("INSERT INTO paper_fts(paper_fts) VALUES ('optimize')")
    conn.exec_driver_sql("UPDATE search_state SET indexed_upto = ?", (newest,))
    return int(newest - upto)
