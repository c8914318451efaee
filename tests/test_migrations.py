"""Migrations on a store that already holds data: what it chose before, it chooses after."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa

from digest.ingest.diff import upsert_entries
from digest.ingest.listing import Entry
from digest.store.engine import (
    ingest_sequence,
    make_engine,
    open_store,
    transaction,
)
from digest.store.migrations import MIGRATIONS, SCHEMA_VERSION, current_version

T0 = datetime(2026, 3, 1, 7, 0, tzinfo=UTC)
INGESTS = [T0, T0 + timedelta(hours=1), T0 + timedelta(days=1), T0 + timedelta(days=2)]


def _store_at(url: str, version: int) -> sa.Engine:
    """A store brought only up to schema ``version``."""
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE schema_version (version INTEGER NOT NULL)"))
        for number in range(version):
            MIGRATIONS[number](conn)
            conn.execute(sa.text("INSERT INTO schema_version VALUES (:v)"), {"v": number + 1})
    return engine


def test_the_ingest_sequence_backfill_keeps_every_readers_cut_off(database_url: str) -> None:
    old = _store_at(database_url, 2)
    with old.begin() as conn:
        for n, moment in enumerate(INGESTS):
            conn.execute(
                sa.text(
                    "INSERT INTO paper (key, title_key, title, first_seen, last_seen)"
                    " VALUES (:k, :k, :k, :t, :t)"
                ),
                [{"k": f"title:paper {n} {i}", "t": moment} for i in range(3)],
            )
        readers = {
            "early": (T0 - timedelta(days=1), None),  # before every paper: gets them all
            "between": (T0 + timedelta(minutes=30), None),
            "on-the-dot": (INGESTS[1], None),  # joined the instant a dump went in: not theirs
            "served": (T0 - timedelta(days=3), INGESTS[2] + timedelta(hours=5)),
            "late": (INGESTS[3] + timedelta(hours=1), None),
        }
        for name, (joined, last) in readers.items():
            conn.execute(
                sa.text(
                    "INSERT INTO subscriber (email, token_salt, created_at, last_digest_at)"
                    " VALUES (:e, 'salt', :c, :l)"
                ),
                {"e": f"{name}@example.org", "c": joined, "l": last},
            )
        papers = conn.execute(sa.text("SELECT id, first_seen FROM paper")).all()
        before = {
            email: {pid for pid, seen in papers if _utc(seen) > _utc(last or joined)}
            for email, joined, last in conn.execute(
                sa.text("SELECT email, created_at, last_digest_at FROM subscriber")
            ).all()
        }
    old.dispose()

    engine = open_store(database_url)
    with transaction(engine) as conn:
        assert current_version(conn) == SCHEMA_VERSION
        upto = ingest_sequence(conn)
        assert upto == len(INGESTS)  # one number per ingest, in the order of first_seen
        after = {
            email: {
                pid
                for (pid,) in conn.execute(
                    sa.text("SELECT id FROM paper WHERE seq > :s AND seq <= :u"),
                    {"s": seen_upto, "u": upto},
                ).all()
            }
            for email, seen_upto in conn.execute(
                sa.text("SELECT email, seen_upto FROM subscriber")
            ).all()
        }
        assert after == before
        assert [len(after[f"{n}@example.org"]) for n in readers] == [12, 9, 6, 3, 0]
        # the next ingest takes the next number, whatever the clock says
        upsert_entries(conn, [Entry("A paper from a clock set back")], T0 - timedelta(days=9))
        seq = conn.execute(sa.text("SELECT seq FROM paper WHERE first_seen < :t"), {"t": T0})
        assert seq.scalar_one() == upto + 1 == ingest_sequence(conn)
    engine.dispose()


def _utc(value: object) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def test_papers_without_a_date_are_dated_by_the_day_they_were_first_seen(
    database_url: str,
) -> None:
    old = _store_at(database_url, 7)
    with old.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO paper (key, title_key, title, listing_date, first_seen, last_seen)"
                " VALUES (:k, :k, :k, :d, :t, :t)"
            ),
            [
                {"k": "title:undated", "d": None, "t": T0 + timedelta(hours=20)},
                {"k": "title:dated", "d": date(2026, 2, 20), "t": T0},
            ],
        )
    old.dispose()
    store = open_store(database_url)
    try:
        with store.connect() as conn:
            dates = dict(conn.execute(sa.text("SELECT key, listing_date FROM paper")).all())
        assert {k: _day(v) for k, v in dates.items()} == {
            "title:undated": date(2026, 3, 2),  # 03:00 UTC the next day
            "title:dated": date(2026, 2, 20),
        }
    finally:
        store.dispose()


def _day(value: object) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))
