"""What the private feed files are made of, read as plain tuples: each reader's newest
sent items, by paper and why it was chosen.

The same items as ``outbox.sent_items`` (the same choice, in the same order), without
the time each was sent (a feed file does not show it) and without a result object per
row: writing every reader's feed reads hundreds of thousands of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import col

from digest.store.models import Digest, DigestItem, Paper

_RAW = sa.types.NullType()  # no result processing: ints, a float and text as the driver gives

_NUMBERED = (
    sa.select(
        col(DigestItem.subscriber_id),
        col(DigestItem.paper_id),
        col(DigestItem.score),
        col(DigestItem.matched),
        sa.func.row_number()
        .over(
            partition_by=col(DigestItem.subscriber_id),
            order_by=(col(Digest.sent_at).desc(), col(DigestItem.rank)),
        )
        .label("n"),
    )
    .join(Digest, col(Digest.id) == col(DigestItem.digest_id))
    .join(Paper, col(Paper.id) == col(DigestItem.paper_id))
    .where(
        col(Digest.status) == "sent",
        col(DigestItem.subscriber_id).in_(sa.bindparam("ids", expanding=True)),
    )
    .subquery()
)
_SENT_ROWS = (
    sa.select(
        sa.type_coerce(_NUMBERED.c.subscriber_id, _RAW),
        sa.type_coerce(_NUMBERED.c.paper_id, _RAW),
        sa.type_coerce(_NUMBERED.c.score, _RAW),
        sa.type_coerce(_NUMBERED.c.matched, _RAW),
    )
    .where(_NUMBERED.c.n <= sa.bindparam("limit"))
    .order_by(_NUMBERED.c.subscriber_id, _NUMBERED.c.n)
)

# subscriber, paper, its score and its stored explanation (JSON text)
SentRow = tuple[int, int, float, str]


def sent_rows(conn: Connection, subscriber_ids: Sequence[int], limit: int) -> list[SentRow]:
    """The newest ``limit`` items sent to each of these subscribers, by subscriber, newest
    first, as (subscriber id, paper id, score, matched)."""
    if not subscriber_ids:
        return []
    rows = conn.execute(_SENT_ROWS, {"ids": list(subscriber_ids), "limit": limit})
    return cast(list[SentRow], [tuple(row) for row in rows])
