"""Ingest end to end on real files: listing dumps, bad input, the inbox moves, the CLI."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from digest.cli import main
from digest.ingest.dumps import Clock, ingest_inbox, ingest_paths
from tests.conftest import EXAMPLE_A, EXAMPLE_B, REAL_A, REAL_B

START = datetime(2026, 3, 12, 8, 0, tzinfo=UTC)


def clock() -> Clock:
    return Clock(lambda: START)


def snapshot(engine: Engine) -> list[tuple[object, ...]]:
    """The store's papers without the times, which depend on when they were ingested."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT key, title, abstract, arxiv_id, listing_date, times_seen"
                    " FROM paper ORDER BY key"
                )
            ).all()
        )


def count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() or 0)


def test_same_bytes_twice_is_a_duplicate_and_changes_nothing(engine: Engine, dump_b: Path) -> None:
    (first,) = ingest_paths(engine, [dump_b], clock=clock())
    assert first.status == "ok" and first.new == first.entries > 0
    before = snapshot(engine)
    (again,) = ingest_paths(engine, [dump_b], clock=clock())
    assert again.status == "duplicate"
    assert (again.new, again.seen) == (0, 0)
    assert snapshot(engine) == before
    assert count(engine, "dump") == 1


@pytest.mark.parametrize(
    ("dump_a", "dump_b", "unique", "in_both"),
    [
        # worked out from the raw files: 10 titles in A, 9 in B, 3 in both
        pytest.param(EXAMPLE_A, EXAMPLE_B, 10 + 9 - 3, 3, id="examples"),
        # worked out from the raw files: 266 titles in A, 64 in B, 5 in both
        pytest.param(REAL_A, REAL_B, 266 + 64 - 5, 5, id="real", marks=pytest.mark.real_dumps),
    ],
)
def test_either_order_gives_the_same_store(
    tmp_path: Path, dump_a: Path, dump_b: Path, unique: int, in_both: int
) -> None:
    from digest.store.engine import open_store

    stores = []
    for name, order in (("ab", [dump_a, dump_b]), ("ba", [dump_b, dump_a])):
        engine = open_store(f"sqlite:///{tmp_path / name}.db")
        results = ingest_paths(engine, order, clock=clock())
        assert [r.status for r in results] == ["ok", "ok"]
        stores.append(snapshot(engine))
        engine.dispose()
    assert stores[0] == stores[1]
    assert len(stores[0]) == unique
    assert sum(1 for row in stores[0] if row[-1] == 2) == in_both


def test_ingest_inbox_moves_each_file(engine: Engine, tmp_path: Path, dump_b: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(dump_b, inbox / "good.txt")
    (inbox / "broken.txt").write_bytes(b"\x00\x01\x02 not a listing \xff" * 50)
    (inbox / ".partial.txt").write_text("still being written")
    results = ingest_inbox(engine, inbox, clock=clock())
    by_name = {Path(r.path).name: r for r in results}
    assert by_name["good.txt"].status == "ok"
    assert by_name["broken.txt"].status == "failed"
    assert (inbox / "processed" / "good.txt").exists()
    assert (inbox / "failed" / "broken.txt").exists()
    error = (inbox / "failed" / "broken.txt.error").read_text()
    assert "broken.txt" in error
    assert (inbox / ".partial.txt").exists()  # a temp file is left for its writer
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == [".partial.txt"]


BAD_INPUTS = {
    "binary.txt": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4,
    "empty.txt": b"",
    "blank.txt": b"\n\n   \n",
    "one-long-line.txt": b"word " * (8 * 1024 * 1024 // 5),
    "error-page.html": (
        b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
        b"<body><h1>502 Bad Gateway</h1><hr><center>nginx</center></body></html>\n"
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_fails_cleanly_and_changes_nothing(
    engine: Engine, tmp_path: Path, dump_b: Path, name: str
) -> None:
    ingest_paths(engine, [dump_b], clock=clock())
    before = snapshot(engine)
    bad = tmp_path / name
    bad.write_bytes(BAD_INPUTS[name])
    good = tmp_path / "later.txt"
    good.write_text(
        "Get trending papers in your email inbox!\n"
        "SubscribeA Fresh Paper On Something\n"
        + "An abstract long enough to be an abstract, " * 5
        + "\n"
    )
    results = ingest_paths(engine, [bad, good], clock=clock())
    assert [r.status for r in results] == ["failed", "ok"]  # the other file still goes in
    error = results[0].error or ""
    assert str(bad) in error and "\n" not in error
    assert count(engine, "dump") == 2
    assert len(snapshot(engine)) == len(before) + 1


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_ingest_json_contract(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    dump_a: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIGEST_CONFIG", raising=False)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"")
    code, out, err = run_cli(["ingest", str(dump_a), str(bad), "--json"], capsys)
    assert code == 1
    data = json.loads(out)
    assert [d["status"] for d in data["dumps"]] == ["ok", "failed"]
    for dump in data["dumps"]:
        assert set(dump) >= {"path", "status", "entries", "new", "seen", "error"}
    assert "Traceback" not in err
    code, out, _ = run_cli(["ingest", str(dump_a), "--json"], capsys)
    assert code == 0 and json.loads(out)["dumps"][0]["status"] == "duplicate"


def test_cli_ingest_lines_and_usage_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    dump_b: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIGEST_CONFIG", raising=False)
    code, out, _ = run_cli(["ingest", str(dump_b)], capsys)
    assert code == 0
    assert "ok" in out and "new" in out and "seen" in out
    code, _, err = run_cli(["ingest"], capsys)
    assert code == 2 and "PATH" in err
    code, _, err = run_cli(["ingest", "--bogus"], capsys)
    assert code == 2


def test_cli_init_writes_config_and_folders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIGEST_CONFIG", raising=False)
    code, _, _ = run_cli(["init"], capsys)
    assert code == 0
    assert (tmp_path / "digest.toml").read_text().startswith("#")
    # where the SMTP password and the secret key go: the service's user alone reads it
    assert (tmp_path / "digest.toml").stat().st_mode & 0o777 == 0o600
    for folder in ("data", "data/inbox", "data/feeds", "data/outbox"):
        assert (tmp_path / folder).is_dir()
    assert (tmp_path / "data" / "digest.db").exists()


def test_cli_bad_setting_is_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    dump_b: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIGEST_FEED_ITEMS", "lots")
    code, _, err = run_cli(["ingest", str(dump_b)], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "feed_items" in err


@pytest.mark.parametrize(
    ("dump_b", "listed"),
    [
        # "Mar 12" without a year, ingested on 2026-03-12: this year's, the same day
        pytest.param(EXAMPLE_B, "2026-03-12", id="examples"),
        # "Mar 11" without a year, ingested on 2026-03-12: the nearest Mar 11 not in the future
        pytest.param(REAL_B, "2026-03-11", id="real", marks=pytest.mark.real_dumps),
    ],
)
def test_papers_carry_the_listing_date_of_their_dump(
    engine: Engine, dump_b: Path, listed: str
) -> None:
    ingest_paths(engine, [dump_b], clock=clock())
    with engine.connect() as conn:
        dates = conn.execute(sa.text("SELECT DISTINCT listing_date FROM paper")).scalars().all()
    assert [str(d) for d in dates] == [listed]
