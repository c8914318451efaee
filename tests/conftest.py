"""Shared fixtures: a real SQLite file per test, the shared dumps, a loopback SMTP server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from digest.store import open_store
from tests.smtp_server import SMTPServer, start_server

SHARED_DUMPS = Path(__file__).resolve().parents[1].parent / "shared" / "dumps"
DUMP_A = SHARED_DUMPS / "hf-trending-layout-a.txt"
DUMP_B = SHARED_DUMPS / "hf-daily-mar11-layout-b.txt"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A fresh store in a real SQLite file."""
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    yield store
    store.dispose()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--regen-expected",
        action="store_true",
        default=False,
        help="rewrite the files under tests/expected/ from the current output",
    )


@pytest.fixture
def regen_expected(request: pytest.FixtureRequest) -> bool:
    """True when the run was asked to rewrite the expected-output files."""
    return bool(request.config.getoption("--regen-expected"))


@pytest.fixture
def smtp_server() -> Iterator[SMTPServer]:
    """A real SMTP server on a free loopback port, with a scriptable handler."""
    server = start_server()
    yield server
    server.controller.stop()
