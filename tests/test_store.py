"""The store: migrations, pragmas, and the upsert that is the seen-papers diff."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

import digest.store.models  # noqa: F401  (registers the tables)
from digest.errors import StoreError
from digest.ingest.diff import upsert_entries
from digest.ingest.listing import Entry
from digest.store import papers as papers_store
from digest.store.engine import open_store, transaction
from digest.store.migrations import SCHEMA_VERSION, current_version
from digest.store.papers import index_papers

T0 = datetime(2026, 3, 11, 7, 0, tzinfo=UTC)


def papers(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM paper ORDER BY key")).mappings().all()
    return [dict(r) for r in rows]


def test_fresh_store_is_migrated_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    open_store(url).dispose()
    engine = open_store(url)  # second open: nothing to do, nothing duplicated
    with engine.connect() as conn:
        assert current_version(conn) == SCHEMA_VERSION
        count = conn.execute(sa.text("SELECT count(*) FROM schema_version")).scalar()
        assert count == SCHEMA_VERSION
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_models_match_the_migrated_schema(engine: Engine) -> None:
    inspector = sa.inspect(engine)
    for name, table in SQLModel.metadata.tables.items():
        assert inspector.has_table(name), name
        in_db = {c["name"] for c in inspector.get_columns(name)}
        assert in_db == {c.name for c in table.columns}, name


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    open_store(f"sqlite:///{path}").dispose()
    with sqlite3.connect(path) as raw:
        raw.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer"):
        open_store(f"sqlite:///{path}")


def test_new_then_seen(engine: Engine) -> None:
    day1 = [Entry("Paper One", "abstract one"), Entry("Paper Two", "abstract two")]
    with transaction(engine) as conn:
        counts = upsert_entries(conn, day1, T0)
    assert (counts.entries, counts.new, counts.seen) == (2, 2, 0)
    later = T0 + timedelta(days=1)
    with transaction(engine) as conn:
        counts = upsert_entries(conn, [Entry("paper one!", "abstract one"), Entry("Three")], later)
    assert (counts.entries, counts.new, counts.seen) == (2, 1, 1)
    rows = {r["title_key"]: r for r in papers(engine)}
    one = rows["paper one"]
    assert one["times_seen"] == 2
    assert str(one["first_seen"]).startswith("2026-03-11 07:00")
    assert str(one["last_seen"]).startswith("2026-03-12 07:00")
    assert rows["paper two"]["times_seen"] == 1


def test_repeat_within_one_dump_counts_once(engine: Engine) -> None:
    entries = [Entry("Same Paper", ""), Entry("Same  paper.", "now with an abstract")]
    with transaction(engine) as conn:
        counts = upsert_entries(conn, entries, T0)
    assert (counts.entries, counts.new, counts.seen) == (2, 1, 0)
    (row,) = papers(engine)
    assert row["abstract"] == "now with an abstract"
    with transaction(engine) as conn:
        counts = upsert_entries(conn, entries, T0 + timedelta(hours=1))
    assert (counts.new, counts.seen) == (0, 1)
    assert papers(engine)[0]["times_seen"] == 2


def test_title_only_paper_adopts_its_arxiv_id(engine: Engine) -> None:
    with transaction(engine) as conn:
        upsert_entries(conn, [Entry("Attention Is All You Need", "")], T0)
    with transaction(engine) as conn:
        counts = upsert_entries(
            conn,
            [Entry("Attention is all you need", "full", arxiv_id="1706.03762")],
            T0 + timedelta(1),
        )
    assert (counts.new, counts.seen) == (0, 1)
    (row,) = papers(engine)
    assert row["key"] == "arxiv:1706.03762"
    assert row["abstract"] == "full"
    with transaction(engine) as conn:  # and the text-only form finds it again by title
        counts = upsert_entries(conn, [Entry("Attention Is All You Need")], T0 + timedelta(2))
    assert (counts.new, counts.seen) == (0, 1)


def test_same_title_different_arxiv_ids_are_two_papers(engine: Engine) -> None:
    entries = [
        Entry("Survey", "a", arxiv_id="2401.00001"),
        Entry("Survey", "b", arxiv_id="2401.00002"),
    ]
    with transaction(engine) as conn:
        counts = upsert_entries(conn, entries, T0)
    assert counts.new == 2


def test_failed_transaction_changes_nothing(engine: Engine) -> None:
    def broken() -> object:
        yield Entry("Fine Paper", "x")
        raise RuntimeError("reader broke half-way")

    with pytest.raises(RuntimeError), transaction(engine) as conn:
        upsert_entries(conn, broken(), T0)  # type: ignore[arg-type]
    assert papers(engine) == []


def test_writer_is_not_locked_out_by_a_concurrent_reader(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    engine = open_store(url)
    with transaction(engine) as conn:
        upsert_entries(conn, [Entry(f"seed {i}") for i in range(100)], T0)
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        raw = sqlite3.connect(tmp_path / "c.db")
        while not stop.is_set():
            raw.execute("BEGIN")
            raw.execute("SELECT count(*) FROM paper").fetchone()
            raw.execute("COMMIT")
        raw.close()

    def write(n: int) -> None:
        other = open_store(url)
        try:
            for i in range(20):
                with transaction(other) as conn:
                    upsert_entries(conn, [Entry(f"w{n} {i}")], T0 + timedelta(seconds=n * 100 + i))
        except BaseException as exc:
            errors.append(exc)
        finally:
            other.dispose()

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(n,)) for n in range(3)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    reader.join()
    assert errors == []
    assert len(papers(engine)) == 160
    engine.dispose()


def test_search_index_follows_inserts_and_text_changes(engine: Engine) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("the full-text index is SQLite's")

    def hits(word: str) -> list[str]:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT p.title_key FROM paper_fts JOIN paper p ON p.id = paper_fts.rowid"
                " WHERE paper_fts MATCH ? ORDER BY p.title_key",
                (word,),
            ).all()
        return [r[0] for r in rows]

    with transaction(engine) as conn:
        upsert_entries(conn, [Entry("Diffusion Models", ""), Entry("Graph Networks", "short")], T0)
        assert index_papers(conn) == 2
        assert index_papers(conn) == 0
    assert hits("diffusion") == ["diffusion models"]
    assert hits("network") == ["graph networks"]  # the porter stemmer folds the plural
    with transaction(engine) as conn:  # seen again with a fuller abstract: reindexed
        upsert_entries(
            conn, [Entry("Graph Networks", "message passing over molecules")], T0 + timedelta(1)
        )
    assert hits("molecule") == ["graph networks"]
    with transaction(engine) as conn:
        upsert_entries(conn, [Entry("Graph Networks", "")], T0 + timedelta(2))
    assert hits("molecule") == ["graph networks"]  # a shorter abstract does not replace it


def test_a_bulk_addition_to_the_search_index_merges_it(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A back-fill's index is merged into one segment, so the daily dumps after it do not
    go on merging it; a small addition leaves its own segment."""
    if engine.dialect.name != "sqlite":
        pytest.skip("the full-text index is SQLite's")
    monkeypatch.setattr(papers_store, "OPTIMIZE_AFTER", 3, raising=False)

    def segments() -> int:
        with engine.connect() as conn:
            found = conn.exec_driver_sql("SELECT count(DISTINCT segid) FROM paper_fts_idx")
            return int(found.scalar_one())

    for day, title in enumerate(["Diffusion Models", "Graph Networks"]):
        with transaction(engine) as conn:
            upsert_entries(conn, [Entry(title, "")], T0 + timedelta(day))
            assert index_papers(conn) == 1
    assert segments() == 2
    bulk = [Entry(f"Sparse Attention {n}", "") for n in range(4)]
    with transaction(engine) as conn:
        upsert_entries(conn, bulk, T0 + timedelta(3))
        assert index_papers(conn) == 4
    assert segments() == 1
    with engine.connect() as conn:
        found = conn.exec_driver_sql(
            "SELECT count(*) FROM paper_fts WHERE paper_fts MATCH 'diffusion OR sparse'"
        )
        assert found.scalar_one() == 5


def test_term_statistics_cover_the_store_and_are_repeatable(engine: Engine) -> None:
    from digest.rank.corpus import store_stats

    entries = [
        Entry(f"Paper {i} on {'graphs' if i % 4 else 'diffusion'}", "text") for i in range(60)
    ]
    with transaction(engine) as conn:
        upsert_entries(conn, entries, T0)
    with engine.connect() as conn:
        whole = store_stats(conn)
        sampled = [store_stats(conn, sample=20) for _ in range(2)]
    assert whole.documents == 60
    assert whole.doc_freq("diffusion") == 15
    assert sampled[0] == sampled[1]  # seeded by the store: the same ranking run after run
    assert sampled[0].documents == 20
    assert 0 < sampled[0].doc_freq("graph") < 20


def test_a_reader_does_not_wait_for_a_long_write(tmp_path: Path) -> None:
    from digest.store.engine import reading

    engine = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    with transaction(engine) as conn:
        upsert_entries(conn, [Entry("Known Paper")], T0)
    counts: list[int] = []

    def read() -> None:
        with reading(engine) as conn:
            counts.append(conn.exec_driver_sql("SELECT count(*) FROM paper").scalar_one())

    with transaction(engine) as writer:  # a back-fill holding the write lock
        upsert_entries(writer, [Entry("Paper In Flight")], T0 + timedelta(1))
        reader = threading.Thread(target=read)
        reader.start()
        reader.join(timeout=10)  # a reader taking the write lock would wait out the busy timeout
        assert not reader.is_alive()
    assert counts == [1]  # the snapshot before the write
    engine.dispose()


def test_opening_a_current_store_never_waits_for_a_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import digest.store.engine

    path = tmp_path / "store.db"
    open_store(f"sqlite:///{path}").dispose()
    monkeypatch.setattr(digest.store.engine, "BUSY_TIMEOUT_MS", 100)  # a wait would fail at once
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # a long ingest holding the write lock
        engine = open_store(f"sqlite:///{path}")
        with digest.store.engine.reading(engine) as conn:
            assert current_version(conn) == SCHEMA_VERSION
        engine.dispose()
    finally:
        writer.execute("ROLLBACK")
        writer.close()
