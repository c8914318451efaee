"""Shared fixtures: a real SQLite file per test, listing dumps, a loopback SMTP server.

The tests read the sample dumps written for this project (``examples/dumps``). A few
checks also run on two real dumps of the Hugging Face papers page when a ``shared/dumps``
folder sits beside the repository (``../shared/dumps``): they carry the ``real_dumps``
mark and are skipped, with the reason below, when it is absent.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from digest.store.engine import open_store
from tests.smtp_server import SMTPServer, start_server

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_DUMPS = REPO / "examples" / "dumps"
EXAMPLE_A = EXAMPLE_DUMPS / "trending-layout-a.txt"
EXAMPLE_B = EXAMPLE_DUMPS / "daily-mar12-layout-b.txt"

REAL_DUMPS = REPO.parent / "shared" / "dumps"
REAL_A = REAL_DUMPS / "hf-trending-layout-a.txt"
REAL_B = REAL_DUMPS / "hf-daily-mar11-layout-b.txt"
REAL_DUMPS_MISSING = (
    "../shared/dumps is not beside the repo: the real-dump checks need it;"
    " the repo's own fixtures cover the same behaviour"
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "real_dumps: reads the real dumps in ../shared/dumps; skipped without them"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if REAL_A.is_file() and REAL_B.is_file():
        return
    skip = pytest.mark.skip(reason=REAL_DUMPS_MISSING)
    for item in items:
        if item.get_closest_marker("real_dumps"):
            item.add_marker(skip)


@pytest.fixture
def dump_a() -> Path:
    """A layout-A dump (trending page: no blank lines, no date) written for this project."""
    return EXAMPLE_A


@pytest.fixture
def dump_b() -> Path:
    """A layout-B dump (daily page: blank lines, dated "Mar 12") written for this project."""
    return EXAMPLE_B


# A PostgreSQL server URL with the right to create databases (CI sets it): the store tests
# then run on PostgreSQL too, each in a database of its own.
POSTGRES_URL = os.environ.get("DIGEST_TEST_POSTGRES_URL", "")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a real SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    if not POSTGRES_URL:
        pytest.skip("DIGEST_TEST_POSTGRES_URL is not set")
    name = f"digest_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield (
            sa.engine.make_url(POSTGRES_URL)
            .set(database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A fresh store (SQLite, and PostgreSQL when a server is configured)."""
    store = open_store(database_url)
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


@pytest.fixture
def site(tmp_path: Path, smtp_server: SMTPServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh installation (settings, store, CLI) sending to a loopback SMTP server."""
    from tests.test_service import installed_site

    with installed_site(tmp_path, smtp_server, monkeypatch) as made:
        yield made
