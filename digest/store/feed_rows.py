"""What the private feed files are made of, read as plain tuples: each reader's newest
sent items, by paper and why it was chosen.

The items ``outbox.sent_items`` gives the web front's live feeds, read by the driver's own
cursor on the caller's connection: writing every reader's feed reads hundreds of
thousands of them, and a result object per row cost more than the query.

A reader's newest items are in their newest digests: the items of their ``FEW`` newest
sent digests (and of any sent at the same moment as the last of them) are read first,
found through the index of each reader's sent digests by time, so a reader's feed costs
the same on the first day and after years of digests. Only a reader those digests give
fewer than ``limit`` items (a paper gone from the store may leave a digest empty), who
has more than ``FEW`` sent digests, has all their items read.

An item's paper is not joined: a paper is deleted only with the items naming it
(``listings._forget``, and the foreign key holds both stores to it), and looking each one
up cost a third of the query (2.3 of 6.2 µs a row on a sixth day's store).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy.engine import Connection

from digest.store.engine import driver_mark

FEW = 8  # a reader's newest sent digests read first: a feed's items, unless digests are thin

_NUMBERED = (
    "SELECT subscriber_id, paper_id, score, matched{sent} FROM ("
    "SELECT i.subscriber_id, i.paper_id, i.score, i.matched, d.sent_at, row_number() OVER ("
    "PARTITION BY i.subscriber_id ORDER BY d.sent_at DESC, i.rank) AS n FROM ({digests}) d"
    " JOIN digestitem i ON i.digest_id = d.id) numbered"
    " WHERE n <= {mark} ORDER BY subscriber_id, n"
)
# the items of the digests found, newest digest first, each digest's in rank order: cut to
# each reader's ``limit`` here, not numbered by a window in the query, which sorted them
# twice more (0.37-0.44 against 0.27-0.30 ms a reader for 100 items of 144, on SQLite)
_ITEMS = (
    "SELECT i.subscriber_id, i.paper_id, i.score, i.matched{sent} FROM ({digests}) d"
    " JOIN digestitem i ON i.digest_id = d.id ORDER BY i.subscriber_id, d.sent_at DESC, i.rank"
)
# every sent digest of these readers
_ALL = "SELECT id, sent_at FROM digest WHERE status = 'sent' AND subscriber_id IN ({marks})"
# their newest FEW (the reader first: each one's few found by the index, in the order of time)
_NEWEST = (
    "SELECT d.id, d.sent_at FROM subscriber s CROSS JOIN digest d"
    " WHERE d.subscriber_id = s.id AND d.status = 'sent'"
    " AND d.sent_at >= (SELECT min(sent_at) FROM (SELECT d2.sent_at FROM digest d2"
    " WHERE d2.subscriber_id = s.id AND d2.status = 'sent' ORDER BY d2.sent_at DESC"
    " LIMIT {mark}) newest) AND s.id IN ({marks})"
)

_COUNTS = (
    "SELECT subscriber_id, count(*) FROM digest WHERE status = 'sent'"
    " AND subscriber_id IN ({marks}) GROUP BY subscriber_id"
)

# subscriber, paper, its score and its stored explanation (JSON text)
SentRow = tuple[int, int, float, str]


def sent_rows(conn: Connection, subscriber_ids: Sequence[int], limit: int) -> list[SentRow]:
    """The newest ``limit`` items sent to each of these subscribers, by subscriber, newest
    first, as (subscriber id, paper id, score, matched)."""
    return cast(list[SentRow], newest_sent(conn, subscriber_ids, limit))


def newest_sent(
    conn: Connection, subscriber_ids: Sequence[int], limit: int, *, sent_at: bool = False
) -> list[Any]:
    """The newest ``limit`` items sent to each of these subscribers, by subscriber, newest
    first, as the driver reads them: (subscriber id, paper id, score, matched), and when
    each was sent as the driver reads it (``sent_at``)."""
    if not subscriber_ids:
        return []
    mark = driver_mark(conn.dialect)
    marks = ", ".join([mark] * len(subscriber_ids))
    sent = ", d.sent_at" if sent_at else ""
    query = _ITEMS.format(digests=_NEWEST.format(mark=mark, marks=marks), sent=sent)
    found: dict[int, list[Any]] = {sid: [] for sid in subscriber_ids}
    for row in _fetch(conn, query, (FEW, *subscriber_ids)):
        rows = found[row[0]]
        if len(rows) < limit:
            rows.append(row)
    short = [sid for sid, rows in found.items() if len(rows) < limit]
    if short:  # fewer items than a feed shows: all of them, where they have more digests
        marks = ", ".join([mark] * len(short))
        counts = dict(_fetch(conn, _COUNTS.format(marks=marks), tuple(short)))
        short = [sid for sid in short if counts.get(sid, 0) > FEW]
    if short:
        for sid in short:
            found[sid] = []
        for row in every_sent(conn, short, limit, sent_at=sent_at):
            found[row[0]].append(row)
    return [row for sid in sorted(found) for row in found[sid]]


def every_sent(
    conn: Connection, subscriber_ids: Sequence[int], limit: int, *, sent_at: bool = False
) -> list[Any]:
    """``newest_sent``'s rows read from every digest these subscribers were ever sent: what
    it reads for a reader whose newest digests give too few items."""
    mark = driver_mark(conn.dialect)
    marks = ", ".join([mark] * len(subscriber_ids))
    sent = ", sent_at" if sent_at else ""
    query = _NUMBERED.format(digests=_ALL.format(marks=marks), mark=mark, sent=sent)
    return _fetch(conn, query, (*subscriber_ids, limit))


def _fetch(conn: Connection, query: str, values: tuple[Any, ...]) -> list[Any]:
    cursor = conn.connection.cursor()
    try:
        cursor.execute(query, values)
        return cast(list[Any], cursor.fetchall())
    finally:
        cursor.close()


def explanations(conn: Connection, paper_ids: Sequence[int]) -> list[tuple[int, str]]:
    """Every explanation these papers were sent with (each once), as (paper id, matched)."""
    found: list[tuple[int, str]] = []
    mark = driver_mark(conn.dialect)
    for start in range(0, len(paper_ids), 500):
        batch = tuple(paper_ids[start : start + 500])
        marks = ", ".join([mark] * len(batch))
        query = f"SELECT DISTINCT paper_id, matched FROM digestitem WHERE paper_id IN ({marks})"
        found += _fetch(conn, query, batch)
    return found


def shrink_cache(conn: Connection) -> None:
    """Hand back the page cache SQLite kept of what this connection read (up to the 64 MB
    of ``cache_size``): the processes forked next would each count it in their resident
    memory. Pages a statement still uses stay; PostgreSQL keeps its pages in the server."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA shrink_memory")
