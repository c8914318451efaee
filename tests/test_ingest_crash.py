"""A dump's ingest and a crash: the store is as before or holds the whole dump, never part.

An ingest's commit leaves its pages in the WAL (the copy into the database file, the
checkpoint, comes at a later commit or at the close), so these tests kill a process that
ingested a dump before it could close the store, and one in the middle of its ingest,
and open what it left.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import digest.store.engine as engine_module
from digest.ingest.dumps import Clock, ingest_file
from digest.store.engine import open_store
from digest.store.papers import keep_counts

PAPERS = 3_000  # some 20 MB of pages: far more than the thousand that make a commit checkpoint
WORDS = (
    "graph", "neural", "network", "sparse", "attention", "model", "training", "data", "robust",
    "efficient", "learning", "retrieval", "reasoning", "protein", "molecule", "quantum",
    "circuit", "kernel", "bayesian", "inference",
)  # fmt: skip


def write_dump(path: Path, papers: int) -> Path:
    """A papers-page text dump (layout A) of ``papers`` made-up titles and abstracts."""
    rng = random.Random(7)
    lines = ["Get trending papers in your email inbox once a day!"]
    for i in range(papers):
        title = " ".join(word.capitalize() for word in rng.choices(WORDS, k=6))
        lines.append(f"{title} Number {i}")
        lines.append("We study " + " ".join(rng.choices(WORDS, k=150)) + ".")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_child(script: str, *args: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def papers_and_dumps(path: Path) -> tuple[int, int]:
    """How many papers and dumps the store at ``path`` holds, as a fresh reader sees it."""
    with sqlite3.connect(path) as conn:
        found = conn.execute("SELECT (SELECT count(*) FROM paper), (SELECT count(*) FROM dump)")
        papers, dumps = found.fetchone()
    conn.close()
    return int(papers), int(dumps)


def database_file_alone(path: Path, folder: Path) -> tuple[int, int]:
    """What the database file holds without its WAL: what was checkpointed into it."""
    folder.mkdir()
    alone = folder / path.name
    shutil.copyfile(path, alone)
    return papers_and_dumps(alone)


KILLED_AFTER_COMMIT = """
    import os, sys
    from pathlib import Path
    from digest.ingest.dumps import Clock, ingest_file
    from digest.store.engine import open_store

    engine = open_store(f"sqlite:///{sys.argv[1]}")
    result = ingest_file(engine, Path(sys.argv[2]), clock=Clock())
    print(result.status, result.new, flush=True)
    os._exit(9)  # killed before the store is closed: nothing checkpoints the WAL
"""


def test_a_process_killed_after_its_ingest_leaves_every_paper_in_the_store(
    tmp_path: Path,
) -> None:
    db = tmp_path / "store.db"
    open_store(f"sqlite:///{db}").dispose()
    dump = write_dump(tmp_path / "daily.txt", PAPERS)
    done = run_child(KILLED_AFTER_COMMIT, db, dump)
    assert (done.returncode, done.stdout.split()) == (9, ["ok", str(PAPERS)]), done.stderr
    # The dump's pages were left in the WAL, not yet in the database file ...
    assert Path(f"{db}-wal").stat().st_size > 0
    assert database_file_alone(db, tmp_path / "alone") == (0, 0)
    # ... and the next process to open the store finds the whole dump there.
    assert papers_and_dumps(db) == (PAPERS, 1)
    engine = open_store(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
            hits = conn.exec_driver_sql(
                "SELECT count(*) FROM paper_fts WHERE paper_fts MATCH 'number'"
            ).scalar()
        assert hits == PAPERS  # the search index came with the papers
    finally:
        engine.dispose()


KILLED_MID_INGEST = """
    import os, sys
    from pathlib import Path
    import digest.ingest.dumps as dumps
    from digest.store.engine import open_store

    def killed(conn, *args, **kwargs):
        print("killed with the papers written, before the commit", flush=True)
        os._exit(9)

    dumps.index_papers = killed  # the last step before the commit
    engine = open_store(f"sqlite:///{sys.argv[1]}")
    dumps.ingest_file(engine, Path(sys.argv[2]), clock=dumps.Clock())
"""


def test_a_process_killed_in_the_middle_of_its_ingest_leaves_the_store_as_before(
    tmp_path: Path,
) -> None:
    db = tmp_path / "store.db"
    open_store(f"sqlite:///{db}").dispose()
    dump = write_dump(tmp_path / "daily.txt", PAPERS)
    done = run_child(KILLED_MID_INGEST, db, dump)
    assert done.returncode == 9 and "killed" in done.stdout, done.stderr
    assert papers_and_dumps(db) == (0, 0)
    engine = open_store(f"sqlite:///{db}")
    try:
        result = ingest_file(engine, dump, clock=Clock())  # not a duplicate: it goes in whole
        assert (result.status, result.new) == ("ok", PAPERS)
    finally:
        engine.dispose()
    assert papers_and_dumps(db) == (PAPERS, 1)


def test_the_connection_checkpoints_again_after_an_ingest(tmp_path: Path) -> None:
    """The ingest's connection goes back to the pool with its checkpoints and its syncs as
    they were: the next commit on it copies the dump into the database file."""
    db = tmp_path / "store.db"
    open_store(f"sqlite:///{db}").dispose()  # the schema in the database file
    engine = open_store(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            before = [
                conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("wal_autocheckpoint", "synchronous")
            ]
        result = ingest_file(engine, write_dump(tmp_path / "daily.txt", PAPERS), clock=Clock())
        assert result.status == "ok"
        assert database_file_alone(db, tmp_path / "before") == (0, 0)
        with engine.begin() as conn:
            settings = [
                conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("wal_autocheckpoint", "synchronous")
            ]
            keep_counts(conn, "{}")  # any write of another transaction
        assert settings == before == [1000, 1]
        assert database_file_alone(db, tmp_path / "after") == (PAPERS, 1)
    finally:
        engine.dispose()


def test_a_dump_checkpoints_at_its_commit_once_the_wal_holds_enough(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The WAL does not grow without end while dumps go in one after another (nor does a
    back-fill's commit leave its gigabytes there): past ``BULK_CHECKPOINT_PAGES`` the
    commit checkpoints as any other does."""
    monkeypatch.setattr(engine_module, "BULK_CHECKPOINT_PAGES", 1_000)
    db = tmp_path / "store.db"
    open_store(f"sqlite:///{db}").dispose()
    engine = open_store(f"sqlite:///{db}")
    try:
        result = ingest_file(engine, write_dump(tmp_path / "daily.txt", PAPERS), clock=Clock())
        assert result.status == "ok"
        assert Path(f"{db}-wal").stat().st_size > 1_000 * 4096  # past the bound ...
        assert database_file_alone(db, tmp_path / "alone") == (PAPERS, 1)  # ... so copied
    finally:
        engine.dispose()
