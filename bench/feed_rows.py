"""What reading each reader's newest sent items costs, by how long the site has run.

Run by hand (not in CI):

    python bench/feed_rows.py [--readers 1000] [--days 3 30 120] [--items 18] [--limit 100]

For each number of days, a new SQLite store (the real schema, by its migrations) holding
``--readers`` readers, each sent one digest a day of ``--items`` items; then, alternating
twice, the items of every reader as the code before read them (every item of every digest,
numbered) and as ``feed_rows.newest_sent`` reads them (each reader's newest digests first),
with the CPU a reader each took, and a check that both gave the same rows.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from digest.store import feed_rows
from digest.store.engine import open_store, reading, transaction
from digest.store.models import Digest, DigestItem, Paper, Subscriber

T0 = datetime(2026, 1, 1, 8, tzinfo=UTC)


def fill(url: str, readers: int, days: int, items: int) -> None:
    """Readers sent a digest a day, each of ``items`` of that day's papers."""
    engine = open_store(url)
    with transaction(engine) as conn:
        conn.execute(
            sa.insert(Paper),
            [
                {
                    "id": n,
                    "key": f"arxiv:2601.{n:06d}",
                    "title_key": f"paper {n}",
                    "title": f"Paper {n}",
                    "first_seen": T0,
                    "last_seen": T0,
                }
                for n in range(1, days * 100 + 1)
            ],
        )
        conn.execute(
            sa.insert(Subscriber),
            [
                {"id": r, "email": f"r{r}@example.org", "token_salt": "s", "created_at": T0}
                for r in range(1, readers + 1)
            ],
        )
        matched = json.dumps([{"interest": "x", "marks": [[1, 0, 9]]}])
        digest = 0
        for day in range(days):
            sent = T0 + timedelta(days=day)
            rows = []
            items_of = []
            for reader in range(1, readers + 1):
                digest += 1
                rows.append(
                    {
                        "id": digest,
                        "subscriber_id": reader,
                        "period": date(2026, 1, 1) + timedelta(days=day),
                        "status": "sent",
                        "message_id": f"<{digest}@example.org>",
                        "created_at": sent,
                        "sent_at": sent + timedelta(seconds=reader),
                    }
                )
                first = day * 100 + (reader * 7) % (100 - items)
                items_of += [
                    {
                        "digest_id": digest,
                        "subscriber_id": reader,
                        "paper_id": first + rank + 1,
                        "rank": rank,
                        "score": 1.0,
                        "matched": matched,
                    }
                    for rank in range(items)
                ]
            conn.execute(sa.insert(Digest), rows)
            conn.execute(sa.insert(DigestItem), items_of)
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=1_000)
    parser.add_argument("--days", type=int, nargs="+", default=[3, 30, 120])
    parser.add_argument("--items", type=int, default=18, help="items in each daily digest")
    parser.add_argument("--limit", type=int, default=100, help="items a feed shows (feed_items)")
    args = parser.parse_args()
    print(f"{args.readers:,} readers, {args.items} items a digest, feeds of {args.limit}")
    print("| days of digests | every item, a reader | newest digests first, a reader | ratio |")
    print("| --- | --- | --- | --- |")
    for days in args.days:
        with tempfile.TemporaryDirectory(prefix="digest-feed-rows-") as folder:
            url = f"sqlite:///{Path(folder) / 'store.db'}"
            fill(url, args.readers, days, args.items)
            engine = open_store(url)
            ids = list(range(1, args.readers + 1))
            took: dict[str, list[float]] = {"before": [], "after": []}
            with reading(engine) as conn:
                for _ in range(2):
                    for name, read in (
                        ("before", feed_rows.every_sent),
                        ("after", feed_rows.newest_sent),
                    ):
                        started = time.process_time()
                        rows = read(conn, ids, args.limit)
                        took[name].append((time.process_time() - started) / len(ids) * 1e6)
                        if name == "before":
                            expected = rows
                        elif [tuple(r) for r in rows] != [tuple(r) for r in expected]:
                            raise SystemExit("the two readings differ")
            engine.dispose()
        before, after = min(took["before"]), min(took["after"])
        print(f"| {days} | {before:,.0f} us | {after:,.0f} us | {after / before:.2f}x |")


if __name__ == "__main__":
    main()
