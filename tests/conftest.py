"""Shared fixtures: a real SQLite file per test, listing dumps, a loopback SMTP server.

The tests read the sample dumps written for this project (``examples/dumps``). A few
checks also run on two real dumps of the Hugging Face papers page when a ``shared/dumps``
folder sits beside the repository (``../shared/dumps``): they carry the ``real_dumps``
mark and are skipped, with the reason below, when it is absent.
"""

from __future__ import annotations

import contextlib
import email
import email.message
import email.policy
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from starlette.testclient import TestClient

from digest.cli import main
from digest.settings import load_settings
from digest.store.engine import open_store
from tests.smtp_server import SMTPServer, free_port, start_server

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


# The fixtures are listings of 2024 and dumps that name a day without a year ("Mar 12", up
# to a year ago): news for every test that does not ask for the news window itself.
FIXTURE_NEWS_DAYS = "3650"


@pytest.fixture(autouse=True)
def news_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command of a test takes the fixtures' papers as news (see FIXTURE_NEWS_DAYS)."""
    monkeypatch.setenv("DIGEST_NEWS_DAYS", FIXTURE_NEWS_DAYS)


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


def drop_database(admin: Engine, name: str) -> None:
    """Drop a test's PostgreSQL database. The server's autovacuum may be at work in it, and a
    role that is no superuser cannot end that worker (``WITH (FORCE)`` is refused while it
    runs): try again for a while."""
    for attempt in range(60):
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            return
        except sa.exc.DBAPIError:
            if attempt == 59:
                raise
            time.sleep(0.5)


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
        drop_database(admin, name)
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
def site(
    tmp_path: Path, smtp_server: SMTPServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Site]:
    """A fresh installation (settings, store, CLI) sending to a loopback SMTP server."""
    with installed_site(tmp_path, smtp_server, monkeypatch) as made:
        yield made


SITE_HOST = "papers.example.org"
SENDER = f"digest@{SITE_HOST}"


@dataclass
class Result:
    """What a command did: its exit code and its two streams."""

    code: int
    out: str
    err: str

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.out)
        return data


@dataclass
class DigestRow:
    """One outbox row as the store holds it."""

    email: str
    period: str
    status: str
    message_id: str
    attempts: int


@dataclass
class Site:
    """One installation in a temporary folder, mailing through ``server``."""

    root: Path
    server: SMTPServer
    env: dict[str, str] = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def cli(self, *args: str) -> Result:
        """Run a command in this process (the environment is already this site's)."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(list(args), stdout=out)
        return Result(code, out.getvalue(), err.getvalue())

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "digest", *args]

    def spawn(self, *args: str, **options: Any) -> subprocess.Popen[str]:
        """Start a command as a separate process."""
        return subprocess.Popen(
            self.command(*args), cwd=self.root, env=self.env, text=True, **options
        )

    def process(self, *args: str, timeout: float = 30) -> Result:
        """Run a command as a separate process and wait for it."""
        done = subprocess.run(
            self.command(*args),
            cwd=self.root,
            env=self.env,
            text=True,
            capture_output=True,
            timeout=timeout,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def subscribe(self, people: dict[str, list[str]]) -> None:
        for address, interests in people.items():
            args = ["subscribe", address]
            for interest in interests:
                args += ["--interest", interest]
            result = self.cli(*args)
            assert result.code == 0, result.err

    def drop_in_inbox(self, dump: Path, name: str) -> None:
        inbox = self.data / "inbox"
        inbox.mkdir(parents=True, exist_ok=True)
        shutil.copy(dump, inbox / name)

    def digests(self) -> list[DigestRow]:
        """Every outbox row, read straight from the database file."""
        engine = sa.create_engine(f"sqlite:///{self.data / 'digest.db'}")
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.text(
                        "SELECT s.email, d.period, d.status, d.message_id, d.attempts"
                        " FROM digest d JOIN subscriber s ON s.id = d.subscriber_id"
                        " ORDER BY s.email, d.period"
                    )
                ).all()
        finally:
            engine.dispose()
        return [DigestRow(r[0], str(r[1]), r[2], r[3], r[4]) for r in rows]

    def web(self) -> TestClient:
        """The web front of this site, driven in-process through the ASGI test client."""
        from digest.web.app import create_app

        app = create_app(load_settings(None))
        return TestClient(app, base_url=self.env["DIGEST_BASE_URL"], raise_server_exceptions=False)

    def received(self) -> list[tuple[str, email.message.EmailMessage]]:
        """Envelope recipient and parsed message of everything the server accepted."""
        with self.server.handler.lock:
            accepted = list(self.server.handler.received)
        messages = []
        for item in accepted:
            assert len(item.rcpt_tos) == 1, item.rcpt_tos
            parsed = email.message_from_bytes(item.data, policy=email.policy.default)
            assert isinstance(parsed, email.message.EmailMessage)
            messages.append((item.rcpt_tos[0], parsed))
        return messages


def make_site(root: Path, server: SMTPServer, monkeypatch: pytest.MonkeyPatch) -> Site:
    """A site in ``root`` sending to ``server``; its settings are in this process's environment too."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update(
        DIGEST_DATA_DIR=str(root / "data"),
        DIGEST_MAIL_TRANSPORT=server.url(),
        DIGEST_MAIL_FROM=f"Paper digest <{SENDER}>",
        DIGEST_BASE_URL=f"https://{SITE_HOST}",
        DIGEST_SITE_NAME="Paper digest",
        DIGEST_SECRET_KEY="a-fixed-key-for-tests-only-0123456789",
        DIGEST_TIMEZONE="UTC",
        DIGEST_SMTP_CONNECTIONS="2",
        DIGEST_SMTP_RETRIES="0",
        DIGEST_SMTP_TIMEOUT="10",
        DIGEST_LOG_FORMAT="json",
        DIGEST_NEWS_DAYS=FIXTURE_NEWS_DAYS,
        # `serve` runs the web front: each site on its own port
        DIGEST_WEB_PORT=str(free_port()),
    )
    for name in os.environ:
        if name.startswith("DIGEST_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("DIGEST_"):
            monkeypatch.setenv(name, value)
    monkeypatch.chdir(root)
    return Site(root, server, env)


@contextlib.contextmanager
def installed_site(
    root: Path, server: SMTPServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Site]:
    """``make_site``, and afterwards the root logger as it was before."""
    logger = logging.getLogger()
    level = logger.level
    try:
        yield make_site(root, server, monkeypatch)
    finally:
        # ``run`` in this process installs its log handler on the root logger: take it away.
        for handler in list(logger.handlers):
            if handler.get_name() == "digest":
                logger.removeHandler(handler)
        logger.setLevel(level)


def store_rows(data: Path, query: str) -> list[tuple[object, ...]]:
    """The rows of ``query`` over the SQLite store in the data folder ``data``."""
    engine = sa.create_engine(f"sqlite:///{data / 'digest.db'}")
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(query)).all()]
    finally:
        engine.dispose()
