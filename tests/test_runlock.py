"""The run lock: one run at a time across processes, and no stale lock after a crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from digest.errors import AlreadyRunning
from digest.service.runlock import hold_run_lock, lock_holder, uses_advisory_lock

TRY_LOCK = """
import sys
from digest.errors import AlreadyRunning
from digest.service.runlock import hold_run_lock
try:
    with hold_run_lock(sys.argv[1]):
        print("locked")
except AlreadyRunning as exc:
    print(exc)
    sys.exit(exc.exit_code)
"""

# Takes the lock and dies without releasing it: no finally blocks, no atexit.
DIE_HOLDING = """
import os, sys
from digest.service.runlock import hold_run_lock
lock = hold_run_lock(sys.argv[1])
lock.__enter__()
print(os.getpid(), flush=True)
os._exit(9)
"""


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )


def test_second_process_is_refused_while_held(tmp_path: Path) -> None:
    with hold_run_lock(tmp_path) as info:
        assert info.pid == os.getpid()
        other = _python(TRY_LOCK, str(tmp_path))
    assert other.returncode == 75, other.stderr
    assert other.stdout.strip() == f"another digest run is already running (pid {os.getpid()})"


def test_lock_file_names_the_holder_and_is_emptied_on_release(tmp_path: Path) -> None:
    lock_file = tmp_path / "digest.lock"
    with hold_run_lock(lock_file):
        data = json.loads(lock_file.read_text())
        assert data["pid"] == os.getpid()
        assert data["started_at"]
        holder = lock_holder(tmp_path)
        assert holder is not None and holder.pid == os.getpid()
    assert lock_file.read_text() == ""
    assert lock_holder(tmp_path) is None


def test_released_lock_can_be_taken_again(tmp_path: Path) -> None:
    with hold_run_lock(tmp_path):
        pass
    assert _python(TRY_LOCK, str(tmp_path)).stdout.strip() == "locked"
    with hold_run_lock(tmp_path):
        pass


def test_same_process_cannot_nest_runs(tmp_path: Path) -> None:
    with hold_run_lock(tmp_path), pytest.raises(AlreadyRunning), hold_run_lock(tmp_path):
        pass


def test_lock_of_a_dead_process_does_not_block(tmp_path: Path) -> None:
    dead = _python(DIE_HOLDING, str(tmp_path))
    assert dead.returncode == 9, dead.stderr
    pid = int(dead.stdout)
    # The file still names the dead holder; only the kernel's flock is gone.
    assert json.loads((tmp_path / "digest.lock").read_text())["pid"] == pid
    assert lock_holder(tmp_path) is None
    with hold_run_lock(tmp_path) as info:
        assert info.pid == os.getpid()


def test_server_databases_use_the_advisory_lock() -> None:
    assert uses_advisory_lock("postgresql+psycopg://u:p@db/digest")
    assert uses_advisory_lock("postgresql://db/digest")
    assert not uses_advisory_lock("sqlite:///data/digest.db")
    assert not uses_advisory_lock("")


def test_postgresql_advisory_lock_lets_one_run_in(tmp_path: Path) -> None:
    from tests.conftest import POSTGRES_URL

    if not POSTGRES_URL:
        pytest.skip("DIGEST_TEST_POSTGRES_URL is not set")
    with (
        hold_run_lock(tmp_path, POSTGRES_URL),
        pytest.raises(AlreadyRunning, match=f"pid {os.getpid()}"),
        hold_run_lock(tmp_path, POSTGRES_URL),
    ):
        pass  # pragma: no cover - never reached
    with hold_run_lock(tmp_path, POSTGRES_URL):  # released: the next run gets it
        pass
