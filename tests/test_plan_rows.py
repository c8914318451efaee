"""A planned batch written with the driver's ``executemany`` (``store.plan_rows``) stores the
very rows ``outbox.record`` stores: every column of the digests, their items and the
readers' cut-offs, a digest that takes in a waiting one included."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from digest.deliver import plan
from digest.ingest.dumps import ingest_inbox
from digest.service.subscriptions import operator_patch, upsert_subscriber
from digest.settings import Settings
from digest.store import outbox, plan_rows
from digest.store.models import Digest
from tests.test_cycle import DAY, JOINED, settings, store, ticking

__all__ = ["settings", "store"]  # the fixtures, shared with tests/test_cycle.py

MORE = {f"reader{n}@example.org": ["diffus*", "speech"][n % 2 :] for n in range(6)}
NOW = datetime(2026, 3, 12, 7, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def waiting(settings: Settings, store: Engine) -> Iterator[Engine]:
    """Eleven readers with the day ingested, the first five with a digest of the day before
    still waiting (tried twice, with an error)."""
    for address, interests in MORE.items():
        upsert_subscriber(store, operator_patch(address, interests), now=JOINED)
    ingest_inbox(store, settings.inbox, clock=ticking(datetime(2026, 3, 12, 6, 0, tzinfo=UTC)))
    before = DAY - timedelta(days=1)
    with store.begin() as conn:
        readers = outbox.owed_subscribers(conn, before)[:5]
        plans = plan.owed_plans(conn, period=before, subscribers=readers)
        _record(conn, plans, period=before, now=NOW - timedelta(days=1))
        conn.execute(
            sa.text("UPDATE digest SET attempts = 2, first_attempt_at = :at, last_error = 'x'"),
            {"at": NOW - timedelta(hours=20)},
        )
    yield store


def _record(conn: Connection, plans: Any, **kw: Any) -> dict[str, int]:
    return plan.record_plans(conn, plans, key=b"k" * 32, mail_from="d@x.org", run_id=None, **kw)


def _tables(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every column of the digests (a digest's id as its reader and period: PostgreSQL does
    not take back the ids of rows rolled back), their items and the readers."""
    digest = ", ".join(f"d.{c.name}" for c in Digest.__table__.columns if c.name != "id")  # type: ignore[attr-defined]
    queries = {
        "digest": f"SELECT {digest} FROM digest d ORDER BY d.id",
        "digestitem": "SELECT d.subscriber_id, d.period, i.paper_id, i.rank, i.score, i.matched"
        " FROM digestitem i JOIN digest d ON d.id = i.digest_id ORDER BY i.id",
        "subscriber": "SELECT * FROM subscriber ORDER BY id",
    }
    return {
        name: [tuple(row) for row in conn.execute(sa.text(query))]
        for name, query in queries.items()
    }


def test_the_rows_written_are_those_outbox_record_writes(
    waiting: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = []
    for record in (outbox.record, plan_rows.record):
        monkeypatch.setattr(plan_rows, "record", record)
        with waiting.connect() as conn:
            plans = plan.owed_plans(conn, period=DAY, take_in=True, batch=4)
            counts = _record(conn, plans, period=DAY, now=NOW)
            carried = conn.execute(
                sa.text("SELECT count(*) FROM digest WHERE attempts = 2 AND status = 'pending'")
            ).scalar_one()
            written.append((counts, carried, _tables(conn)))
            conn.rollback()
    (counts, carried, tables), (*others, their_tables) = written
    assert (counts, carried) == tuple(others)
    for name, rows in tables.items():  # a table at a time, row by row: a difference shows
        assert len(rows) == len(their_tables[name])
        for ours, theirs in zip(rows, their_tables[name], strict=True):
            assert ours == theirs
    assert counts["pending"] >= 10
    assert len(tables["digestitem"]) > 20
    assert carried >= 4  # the new digests that took in waiting ones carried their attempts


def test_a_digest_column_filled_by_a_function_is_left_to_sqlalchemy(
    waiting: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    column = plan_rows._DIGEST.c.subject
    monkeypatch.setattr(column, "default", sa.ColumnDefault(lambda: "made"))
    plan_rows._constant_defaults.cache_clear()
    try:
        assert plan_rows._constant_defaults() is None
        taken: list[int] = []
        record = outbox.record

        def recording(conn: Any, planned: Any, **kw: Any) -> None:
            taken.append(len(planned))
            record(conn, planned, **kw)

        monkeypatch.setattr(outbox, "record", recording)
        with waiting.connect() as conn:
            _record(conn, plan.owed_plans(conn, period=DAY), period=DAY, now=NOW)
            conn.rollback()
        assert sum(taken) >= 10  # every reader recorded by outbox.record
    finally:
        plan_rows._constant_defaults.cache_clear()


def _foreign_keys(conn: Connection) -> int:
    return int(conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one())


def test_the_plan_transaction_writes_unchecked_and_gives_the_checks_back(
    waiting: Engine,
) -> None:
    if waiting.dialect.name != "sqlite":
        pytest.skip("foreign keys are SQLite's pragma")
    with plan_rows.planning(waiting) as conn:
        assert _foreign_keys(conn) == 0
        plans = plan.owed_plans(conn, period=DAY)
        counts = _record(conn, plans, period=DAY, now=NOW)
    assert counts["pending"] > 0
    with waiting.connect() as conn:  # the pooled connection again: checked, as before
        assert _foreign_keys(conn) == 1
        orphan = "INSERT INTO digestitem (digest_id, subscriber_id, paper_id, rank, score, matched)"
        with pytest.raises(sa.exc.IntegrityError):
            conn.exec_driver_sql(orphan + " VALUES (999999, 999999, 999999, 1, 1.0, '[]')")
        conn.rollback()
    with waiting.connect() as conn:  # and what the plan wrote refers to rows that are there
        assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
        conn.rollback()


def test_a_plan_transaction_that_fails_gives_the_checks_back(waiting: Engine) -> None:
    if waiting.dialect.name != "sqlite":
        pytest.skip("foreign keys are SQLite's pragma")
    with pytest.raises(RuntimeError), plan_rows.planning(waiting) as conn:
        conn.exec_driver_sql("DELETE FROM digestitem")
        raise RuntimeError("planning died")
    with waiting.connect() as conn:
        assert _foreign_keys(conn) == 1
        assert conn.exec_driver_sql("SELECT count(*) FROM digestitem").scalar_one() > 0
        conn.rollback()


def test_a_pass_reads_each_paper_once_and_gets_the_items_a_batch_gets(
    waiting: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[list[int]] = []
    by_ids = outbox.by_ids

    def counting(conn: Connection, ids: Any) -> Any:
        asked.append(list(ids))
        return by_ids(conn, ids)

    monkeypatch.setattr(outbox, "by_ids", counting)
    with waiting.connect() as conn:
        ids = [int(i) for i in conn.execute(sa.text("SELECT id FROM digest ORDER BY id")).scalars()]
        alone = [outbox.items_of(conn, [i]) for i in ids]  # each batch its own read
        read = outbox.PapersRead()
        asked.clear()
        shared = [outbox.items_of(conn, [i], read) for i in ids]
        conn.rollback()
    assert shared == alone and sum(len(items[i]) for items, i in zip(shared, ids, strict=True)) > 5
    papers = [paper for batch in asked for paper in batch]
    assert len(papers) == len(set(papers)) == len(read.rows)  # each read once in the pass
    # a paper in two batches is the one object in both
    rows = [item.paper for items in shared for rows in items.values() for item in rows]
    assert len({id(row) for row in rows}) == len({row.id for row in rows}) < len(rows)
    # held to a size: past it, what was kept goes and is read again
    small = outbox.PapersRead(most=1)
    with waiting.connect() as conn:
        again = [outbox.items_of(conn, [i], small) for i in ids]
        conn.rollback()
    assert again == alone and len(small.rows) < len(read.rows)
