"""A reader's newest sent items, read from their newest digests: the same items, in the
same order, as reading every digest they were ever sent, whatever their digests hold."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa

from digest.store.engine import open_store, reading, transaction
from digest.store.feed_rows import FEW, every_sent, sent_rows
from digest.store.models import Digest, DigestItem, Paper, Subscriber

T0 = datetime(2026, 1, 1, 8, tzinfo=UTC)
LIMIT = 10
# readers by how many items their daily digests hold, over 3 * FEW days: full ones, thin
# ones (FEW digests hold fewer than a feed shows), a new one, two digests sent at the same
# moment, and one never sent anything; and the newest day's first paper gone from the store
READERS = {1: 6, 2: 1, 3: 2, 4: 6, 5: 3, 6: 0}
DAYS = 3 * FEW


def test_the_newest_digests_give_the_items_of_every_digest(database_url: str) -> None:
    engine = open_store(database_url)
    with transaction(engine) as conn:
        conn.execute(
            sa.insert(Paper),
            [
                {
                    "id": n,
                    "key": f"arxiv:2601.{n:05d}",
                    "title_key": f"paper {n}",
                    "title": f"Paper {n}",
                    "first_seen": T0,
                    "last_seen": T0,
                }
                for n in range(1, DAYS * 6 + 1)
            ],
        )
        conn.execute(
            sa.insert(Subscriber),
            [
                {"id": sid, "email": f"r{sid}@example.org", "token_salt": "s", "created_at": T0}
                for sid in READERS
            ],
        )
        digest_id = 0
        for sid, each in READERS.items():
            days = 2 if sid == 3 else DAYS  # reader 3 is new
            for day in range(days):
                if not each:
                    break
                digest_id += 1
                sent = T0 + timedelta(days=day)
                if sid == 5 and day == DAYS - FEW:  # sent at the moment of the next one
                    sent += timedelta(days=1)
                conn.execute(
                    sa.insert(Digest).values(
                        id=digest_id,
                        subscriber_id=sid,
                        period=date(2026, 1, 1) + timedelta(days=day),
                        status="sent" if day != 1 else "failed",  # one never went out
                        message_id=f"<{digest_id}@example.org>",
                        created_at=sent,
                        sent_at=sent if day != 1 else None,
                    )
                )
                conn.execute(
                    sa.insert(DigestItem),
                    [
                        {
                            "digest_id": digest_id,
                            "subscriber_id": sid,
                            "paper_id": day * 6 + rank + 1,
                            "rank": rank,
                            "score": 1.0 / (rank + 1),
                            "matched": json.dumps([{"interest": f"i{sid}"}]),
                        }
                        for rank in range(each)
                    ],
                )
        gone = DAYS * 6 - 6 + 1  # the newest day's first paper: reader 2's newest digest empty
        conn.execute(sa.delete(DigestItem).where(DigestItem.paper_id == gone))  # type: ignore[arg-type]
        conn.execute(sa.delete(Paper).where(Paper.id == gone))  # type: ignore[arg-type]
    ids = sorted(READERS)
    with reading(engine) as conn:
        expected = [row[:4] for row in every_sent(conn, ids, LIMIT)]
        found = sent_rows(conn, ids, LIMIT)
        alone = [row for sid in ids for row in sent_rows(conn, [sid], LIMIT)]
    engine.dispose()
    assert [tuple(row) for row in found] == [tuple(row) for row in expected]
    assert [tuple(row) for row in alone] == [tuple(row) for row in expected]
    counts = {sid: sum(1 for row in found if row[0] == sid) for sid in ids}
    assert counts == {1: LIMIT, 2: LIMIT, 3: 2, 4: LIMIT, 5: LIMIT, 6: 0}
    newest = [row[1] for row in found if row[0] == 1][:6]
    day = (DAYS - 1) * 6  # the newest day's papers, by rank, but the one gone; then the day before
    assert newest == [day + rank + 1 for rank in range(1, 6)] + [day - 5]
