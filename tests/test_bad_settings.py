"""A bad setting, whatever the command: one line naming it on stderr, exit 2, no traceback.

Every kind of bad setting, written in the settings file and given as a ``DIGEST_*``
variable, against every command. The whole table runs in this process through ``main``;
a row of it runs as real processes too, where a traceback would be printed by Python
itself.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from digest.cli import main
from digest.cli.parser import build_parser

FIXTURES = Path(__file__).parent / "fixtures"

# Each command with arguments it accepts, so that only the setting can be at fault.
COMMANDS: dict[str, list[str]] = {
    "init": ["init"],
    "ingest": ["ingest", "dump.txt"],
    "ingest --inbox": ["ingest", "--inbox", "--json"],
    "subscribe": ["subscribe", "a@example.org", "--interest", "llm"],
    "unsubscribe": ["unsubscribe", "a@example.org"],
    "feedback": ["feedback", "a@example.org", "arxiv:2403.01234", "up"],
    "subscribers": ["subscribers"],
    "subscribers --export": ["subscribers", "--export", "out.csv"],
    "preview": ["preview", "a@example.org", "--out", "x.eml"],
    "search": ["search", "llm"],
    "run": ["run"],
    "run --dry-run": ["run", "--dry-run", "--json"],
    "serve": ["serve"],
    "web": ["web"],
    "backup": ["backup", "copy.db"],
    "papers listings": ["papers", "listings"],
    "papers remove": ["papers", "remove", "--listing", "1"],
    "keys list": ["keys", "list"],
    "keys rotate": ["keys", "rotate"],
    "worker": ["worker"],
    "run --hours": ["run", "--hours"],
    "status": ["status"],
    "status --json": ["status", "--json"],
}

# (setting, as TOML, as a DIGEST_ variable or None where a variable cannot say it)
BAD: dict[str, tuple[str, str, str | None]] = {
    "address": ("mail_from", 'mail_from = "not an address"', "not an address"),
    "short key": ("secret_key", 'secret_key = "short"', "short"),
    "url": ("base_url", 'base_url = "localhost:8000"', "localhost:8000"),
    "zone": ("timezone", 'timezone = "Mars/Olympus"', "Mars/Olympus"),
    "cron": ("schedule", 'schedule = "99 7 * * *"', "99 7 * * *"),
    "number": ("feed_items", "feed_items = 0", "0"),
    "wrong type": ("feed_items", 'feed_items = "many"', "many"),
    "transport": ("mail_transport", 'mail_transport = "pop3://mail.example.org"', "pop3://x.org"),
    "database": ("database_url", 'database_url = "nosuch://db"', "nosuch://db"),
    "host": ("web_host", 'web_host = "http://0.0.0.0"', "http://0.0.0.0"),
    "proxies": ("forwarded_allow_ips", 'forwarded_allow_ips = "proxy.lan"', "proxy.lan"),
    "unknown key": ("feed_itmes", "feed_itmes = 3", None),
    "subscriber": ("email", '[[subscribers]]\nemail = "nobody"\ninterests = ["llm"]', None),
    "interest": (
        "interests",
        '[[subscribers]]\nemail = "a@example.org"\ninterests = ["a or b"]',
        None,
    ),
    "two interests in one": (
        "interests",
        '[[subscribers]]\nemail = "a@example.org"\ninterests = ["llm; diffusion"]',
        None,
    ),
    "toml": ("bad.toml", "feed_items = = 3", None),
}
CASES = [
    (kind, where)
    for kind, (_, _, env) in BAD.items()
    for where in ("file", "env")
    if where == "file" or env
]


def _set_up(root: Path, kind: str, where: str) -> tuple[dict[str, str], list[str]]:
    """The environment and the extra arguments that make ``kind`` of bad setting."""
    name, toml, value = BAD[kind]
    shutil.copy(FIXTURES / "hf_text_layout_b.txt", root / "dump.txt")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    if where == "file":
        (root / "bad.toml").write_text(toml + "\n")
        return env, ["--config", "bad.toml"]
    assert value is not None
    env[f"DIGEST_{name.upper()}"] = value
    return env, []


def _check(code: int, out: str, err: str, name: str) -> None:
    assert "Traceback" not in out + err
    assert code == 2, (code, out, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("digest: ") and name in lines[0], lines[0]


def test_the_table_covers_every_command() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(commands) <= {args[0] for args in COMMANDS.values()}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(("kind", "where"), CASES)
def test_a_bad_setting_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, kind: str, where: str
) -> None:
    env, extra = _set_up(tmp_path, kind, where)
    monkeypatch.chdir(tmp_path)
    for variable in [v for v in os.environ if v.startswith("DIGEST_")]:
        monkeypatch.delenv(variable)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    before = sorted(path.name for path in tmp_path.iterdir())
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main([*COMMANDS[command], *extra], stdout=out)
    _check(code, out.getvalue(), err.getvalue(), BAD[kind][0])
    if command != "init":  # init writes digest.toml before it reads it back
        assert sorted(path.name for path in tmp_path.iterdir()) == before  # nothing made


def _process(root: Path, env: dict[str, str], args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "digest", *args],
        cwd=root,
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_as_a_process(tmp_path: Path, command: str) -> None:
    """The tester's case: a From line that is no address, in the file."""
    env, extra = _set_up(tmp_path, "address", "file")
    done = _process(tmp_path, env, [*COMMANDS[command], *extra])
    _check(done.returncode, done.stdout, done.stderr, "mail_from")


@pytest.mark.parametrize(("kind", "where"), CASES)
def test_every_kind_as_a_process(tmp_path: Path, kind: str, where: str) -> None:
    env, extra = _set_up(tmp_path, kind, where)
    done = _process(tmp_path, env, ["run", *extra])
    _check(done.returncode, done.stdout, done.stderr, BAD[kind][0])
