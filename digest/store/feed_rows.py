"""What the private feed files are made of, read as plain tuples: each reader's newest
sent items, by paper and why it was chosen.

The same items as ``outbox.sent_items`` (the same choice, in the same order), without
the time each was sent (a feed file does not show it), and read by the driver's own
cursor on the caller's connection: writing every reader's feed reads hundreds of
thousands of them, and a result object per row cost more than the query.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from sqlalchemy.engine import Connection

_SENT_ROWS = (
    "SELECT subscriber_id, paper_id, score, matched FROM ("
    "SELECT i.subscriber_id, i.paper_id, i.score, i.matched, row_number() OVER ("
    "PARTITION BY i.subscriber_id ORDER BY d.sent_at DESC, i.rank) AS n"
    " FROM digestitem i JOIN digest d ON d.id = i.digest_id JOIN paper p ON p.id = i.paper_id"
    " WHERE d.status = 'sent' AND i.subscriber_id IN ({marks})) numbered"
    " WHERE n <= {mark} ORDER BY subscriber_id, n"
)

# subscriber, paper, its score and its stored explanation (JSON text)
SentRow = tuple[int, int, float, str]


def sent_rows(conn: Connection, subscriber_ids: Sequence[int], limit: int) -> list[SentRow]:
    """The newest ``limit`` items sent to each of these subscribers, by subscriber, newest
    first, as (subscriber id, paper id, score, matched)."""
    if not subscriber_ids:
        return []
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    query = _SENT_ROWS.format(marks=", ".join([mark] * len(subscriber_ids)), mark=mark)
    cursor = conn.connection.cursor()
    try:
        cursor.execute(query, (*subscriber_ids, limit))
        return cast(list[SentRow], cursor.fetchall())
    finally:
        cursor.close()
