"""Shared fixtures: a real SQLite file per test, the shared dumps."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from digest.store import open_store

SHARED_DUMPS = Path(__file__).resolve().parents[1].parent / "shared" / "dumps"
DUMP_A = SHARED_DUMPS / "hf-trending-layout-a.txt"
DUMP_B = SHARED_DUMPS / "hf-daily-mar11-layout-b.txt"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A fresh store in a real SQLite file."""
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    yield store
    store.dispose()
