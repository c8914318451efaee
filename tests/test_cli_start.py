"""The command line as an operator meets it: how fast it starts, what it says about which
installation it read, and the small promises of a few commands (a dry run makes nothing,
--json means JSON, no digest for a day that has not begun)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from digest.cli import main

HEAVY = ("numpy", "sqlalchemy", "apscheduler", "jinja2", "pydantic", "digest.service")


def _loaded(args: list[str], cwd: Path) -> set[str]:
    """The top-level packages and digest modules a real ``digest ARGS`` process imported."""
    probe = (
        "import sys\n"
        "from digest.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "sys.stdout.flush()\n"
        "sys.stderr.write('\\n'.join(sorted(sys.modules)))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in done.stderr
    return set(done.stderr.splitlines())


def _any_of(modules: set[str], prefix: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for name in modules)


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["status", "--help"]])
def test_version_and_help_load_nothing_heavy(tmp_path: Path, args: list[str]) -> None:
    loaded = _loaded(args, tmp_path)
    assert "digest.cli" in loaded  # the probe did run the command line
    assert [name for name in HEAVY if _any_of(loaded, name)] == []


def test_status_loads_neither_numpy_nor_the_scheduler(tmp_path: Path) -> None:
    loaded = _loaded(["status"], tmp_path)
    assert "digest.service.status" in loaded
    # the next run is APScheduler's own answer: its cron trigger, not its schedulers
    heavy = ("numpy", "jinja2", "apscheduler.schedulers", "digest.service.cycle", "digest.rank")
    assert [name for name in heavy if _any_of(loaded, name)] == []


def test_version_as_a_process(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "digest", "--version"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.startswith("digest ")
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert "digest.cli" in imported
    assert not {"numpy", "sqlalchemy", "apscheduler", "pydantic"} & imported


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("DIGEST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_dry_run_in_an_empty_folder_makes_nothing(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / "digest.toml").write_text(
        '[[subscribers]]\nemail = "a@example.org"\ninterests = ["llm"]\n'
    )
    assert main(["run", "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dry_run"] is True
    assert sorted(path.name for path in folder.iterdir()) == ["digest.toml"]


@pytest.mark.parametrize("command", ["run", "preview"])
def test_a_period_after_tomorrow_is_refused(
    folder: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    later = (datetime.now(UTC).date() + timedelta(days=3)).isoformat()
    args = (
        [command, "--period", later]
        if command == "run"
        else [command, "a@x.org", "--period", later]
    )
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and later in err and "future" in err
    assert list(folder.iterdir()) == []


def test_yesterday_and_tomorrow_are_still_periods(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for day in (date.today() - timedelta(days=1), datetime.now(UTC).date() + timedelta(days=1)):
        assert main(["run", "--dry-run", "--period", day.isoformat()]) == 0
        assert f"dry run for {day.isoformat()}" in capsys.readouterr().out


def test_export_to_a_file_with_json_prints_json(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["subscribe", "a@example.org", "--interest", "llm"]) == 0
    capsys.readouterr()
    assert main(["subscribers", "--export", "out.csv", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"exported": 1, "path": "out.csv"}
    assert "a@example.org" in (folder / "out.csv").read_text()
    assert main(["subscribers", "--import", "out.csv", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["imported"] == 1
    assert main(["subscribers", "--export", "-", "--json"]) == 2
    assert "--json" in capsys.readouterr().err


def test_status_says_which_config_and_store_it_read(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2:] == [
        "config: none (the defaults and DIGEST_* variables)",
        f"store: not made yet at {folder / 'data' / 'digest.db'}"
        " (init, ingest, subscribe or run make it)",
    ]
    (folder / "site.toml").write_text('data_dir = "var"\n')
    from digest.service.status import status_lines
    from digest.store.engine import store_label

    assert store_label("postgresql+psycopg://digest:hunter2@db.example.org/digest") == (
        "postgresql+psycopg://digest:***@db.example.org/digest"
    )
    assert main(["status", "--json", "--config", "site.toml"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["config"] == str(folder / "site.toml")
    assert data["store"] == str(folder / "var" / "digest.db")
    assert status_lines(data)[-2:] == [
        f"config: {folder / 'site.toml'}",
        f"store: not made yet at {folder / 'var' / 'digest.db'}"
        " (init, ingest, subscribe or run make it)",
    ]
    assert main(["subscribe", "a@example.org", "--interest", "llm", "--config", "site.toml"]) == 0
    assert main(["status", "--config", "site.toml"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"store: {folder / 'var' / 'digest.db'}"


def test_backup_copies_the_store_while_a_writer_holds_it(
    folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    assert main(["subscribe", "a@example.org", "--interest", "llm"]) == 0
    writer = sqlite3.connect(folder / "data" / "digest.db", isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # a run in the middle of its transaction
        writer.execute("UPDATE subscriber SET status = 'paused'")
        capsys.readouterr()
        assert main(["backup", "copy.db", "--json"]) == 0
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    report = json.loads(capsys.readouterr().out)
    assert report["store"] == str(folder / "data" / "digest.db")
    assert report["bytes"] == (folder / "copy.db").stat().st_size
    assert (folder / "copy.db").stat().st_mode & 0o077 == 0
    copy = sqlite3.connect(folder / "copy.db")
    try:  # what was committed, not what was in flight
        assert copy.execute("SELECT email, status FROM subscriber").fetchall() == [
            ("a@example.org", "active")
        ]
    finally:
        copy.close()
    assert main(["backup", "copy.db"]) == 2  # never over a file
    assert "exists" in capsys.readouterr().err
    monkeypatch.setenv("DIGEST_DATABASE_URL", "postgresql+psycopg://digest@db.example.org/digest")
    assert main(["backup", "other.db"]) == 2
    assert "pg_dump" in capsys.readouterr().err
