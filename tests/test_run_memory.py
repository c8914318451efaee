"""A run hands back to the system what a step freed before the next step forks: the
processes it forks (senders, feed writers) each count the pages they start with."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from digest.deliver.transports import RecordingTransport
from digest.service import cycle
from digest.service.cycle import run_cycle
from digest.settings import Settings
from tests.test_cycle import DAY, settings, store, ticking

__all__ = ["settings", "store"]  # the fixtures of tests/test_cycle.py


def test_a_run_hands_back_memory_after_planning_and_after_sending(
    settings: Settings, store: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps: list[str] = []
    record_plans, deliver = cycle.record_plans, cycle.deliver_in_processes

    def planned(*args: Any, **kwargs: Any) -> Any:
        steps.append("plan")
        return record_plans(*args, **kwargs)

    def sent(*args: Any, **kwargs: Any) -> Any:
        steps.append("send")
        return deliver(*args, **kwargs)

    monkeypatch.setattr(cycle, "record_plans", planned)
    monkeypatch.setattr(cycle, "deliver_in_processes", sent)
    monkeypatch.setattr(
        cycle, "give_back_memory", lambda collect=False: steps.append(f"give back {collect}")
    )
    monkeypatch.setattr(
        cycle.plan_rows, "release_cache", lambda engine: steps.append("release cache")
    )
    clock = ticking(datetime(2026, 3, 12, 7, 0, tzinfo=UTC))
    report = run_cycle(settings, store, clock=clock, period=DAY, transport=RecordingTransport())
    assert report.delivered.sent > 0
    between = ["release cache", "give back True"]
    assert steps == ["plan", *between, "send", *between]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_memory_freed_between_live_objects_is_handed_back() -> None:
    # In a process of its own: many blocks too large for Python's own allocator, every
    # fiftieth kept, so that the C allocator keeps the freed ones between live ones.
    script = """
from pathlib import Path
from digest.rank.workers import give_back_memory
def rss(): return int(Path("/proc/self/statm").read_text().split()[1])
blocks = [bytes(1000) + bytes([i % 256]) for i in range(200_000)]
kept = blocks[::50]
del blocks
before = rss()
give_back_memory()
print(before, rss())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    before, after = map(int, done.stdout.split())
    assert after < before / 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_store_page_cache_is_handed_back(tmp_path: Path) -> None:
    # A store whose table is larger than a connection's page cache, read through, so that
    # the pooled connection holds a full cache; then handed back between steps.
    script = f"""
from pathlib import Path
from digest.rank.workers import give_back_memory
from digest.store.engine import open_store
from digest.store.plan_rows import release_cache
def rss(): return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 // 2**20
engine = open_store("sqlite:///{tmp_path / "store.db"}")
with engine.begin() as conn:
    conn.exec_driver_sql("CREATE TABLE filler (id INTEGER PRIMARY KEY, text TEXT)")
    conn.exec_driver_sql(
        "INSERT INTO filler (text) SELECT hex(randomblob(500)) FROM"
        " (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 90000)"
        " SELECT i FROM n)"
    )
engine.dispose()
give_back_memory()
with engine.connect() as conn:
    conn.exec_driver_sql("SELECT sum(length(text)) FROM filler").scalar()
    conn.rollback()
give_back_memory()
full = rss()
release_cache(engine)
give_back_memory()
print(full, rss())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    full, after = map(int, done.stdout.split())
    assert full - after > 40  # MB: most of the 64 MB cache
