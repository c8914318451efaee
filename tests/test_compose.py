"""deploy/compose.yaml and the image it builds: PostgreSQL, the tables made once, two senders
that plan and send, one web front and Mailpit, all digest containers on one database.

Docker is not needed: the compose file is read as compose reads it (YAML, merge keys
included), its commands go through the real command line, its settings through the real
settings, and its web front's health check asks a running ``digest web``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from digest.settings import load_settings
from digest.settings.model import OPTIONS
from digest.store.migrations import SCHEMA_VERSION
from tests.browser import free_port, live_server
from tests.conftest import POSTGRES_URL, Site, drop_database
from tests.test_deploy import (
    REPO,
    _compose,
    _digest_services,
    _docker_lines,
    _real_binary,
    upstream,
)

IMAGE_BUILD = {"context": "..", "dockerfile": "deploy/Dockerfile"}


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_the_dockerfile_copies_what_the_package_needs_and_installs_the_database_driver() -> None:
    lines = _docker_lines()
    project = _pyproject()
    # what pip builds from: the project, its readme and every package's folder
    copied: set[str] = set()
    for line in lines:
        if line.startswith("COPY "):
            *sources, _target = line.split()[1:]
            for source in sources:
                assert (REPO / source).exists(), source
                copied.add(source)
    setuptools = project["tool"]["setuptools"]
    folders = {
        setuptools["package-dir"].get(name, name.replace(".", "/")).split("/")[0]
        for name in setuptools["packages"]
    }
    assert {"pyproject.toml", project["project"]["readme"], *folders} <= copied
    # `pip install '.[extra]'`: extras that exist, one of them bringing the driver that
    # compose's database_url names (postgresql+psycopg)
    [run] = [line for line in lines if line.startswith("RUN pip install ")]
    [target] = re.findall(r"pip install (\S+)", run)
    extras = re.fullmatch(r"'?\.(?:\[([\w,]+)\])?'?", target)
    assert extras is not None, target
    wanted = set((extras.group(1) or "").split(",")) - {""}
    optional = project["project"]["optional-dependencies"]
    assert wanted <= set(optional)
    installed = [*project["project"]["dependencies"], *(r for e in wanted for r in optional[e])]
    driver = _database_url().split("://")[0].split("+")[1]
    assert any(re.match(rf"{driver}\b", requirement) for requirement in installed), installed
    # a user of its own, the one USER names, owning /data; the command pip installed
    [user] = re.findall(r"^USER (\S+)$", "\n".join(lines), re.M)
    assert re.search(rf"useradd .*\b{user}\b", run) and f"-o {user} -g {user}" in run
    [entrypoint] = [
        json.loads(line.split(None, 1)[1]) for line in lines if line.startswith("ENTRYPOINT")
    ]
    assert entrypoint[0] in project["project"]["scripts"]


def _database_url() -> str:
    [url] = {s["environment"]["DIGEST_DATABASE_URL"] for s in _digest_services().values()}
    return str(url)


def _by_command() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, service in _digest_services().items():
        found.setdefault(service["command"][0], []).append(name)
    return found


def test_compose_runs_two_senders_one_web_front_and_the_schema_first() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "schema", "web", "sender-1", "sender-2", "mailpit"}
    digest = _digest_services()
    assert all(service["build"] == IMAGE_BUILD for service in digest.values())
    assert (REPO / IMAGE_BUILD["dockerfile"]).is_file()
    assert _by_command() == {
        "worker": ["sender-1", "sender-2"],
        "web": ["web"],
        "status": ["schema"],
    }
    # both senders plan as well as send: no --no-plan, no other schedule in compose
    assert [digest[name]["command"] for name in ("sender-1", "sender-2")] == [["worker"]] * 2
    # the tables are made once before anyone else opens the database (two processes meeting
    # an empty one at once would both try)
    assert digest["schema"]["restart"] == "no"
    assert digest["schema"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("web", "sender-1", "sender-2"):
        assert digest[name]["restart"] == "unless-stopped"
        needs = digest[name]["depends_on"]
        assert needs["schema"] == {"condition": "service_completed_successfully"}, name


def test_compose_gives_every_digest_container_one_database_and_real_settings(
    tmp_path: Path,
) -> None:
    known = {f"DIGEST_{option.name.upper()}" for option in OPTIONS} | {"DIGEST_CONFIG"}
    image_env = dict(
        re.findall(r"\b(DIGEST_[A-Z_]+)=(\S+)", "\n".join(_docker_lines()))
    )  # the Dockerfile's ENV, which compose adds to
    shared: dict[str, set[str]] = {}
    for name, service in _digest_services().items():
        env = {key: str(value) for key, value in service["environment"].items()}
        assert set(env) <= known, (name, set(env) - known)
        for key, value in env.items():
            shared.setdefault(key, set()).add(value)
        # each container's settings as digest reads them: a bad value fails here
        settings = load_settings(
            environ={**image_env, **env, "DIGEST_DATA_DIR": str(tmp_path / name)}, cwd=tmp_path
        )
        assert settings.database_url == _database_url()
    # a setting given to several containers has one value (the database URL above all)
    assert {key: values for key, values in shared.items() if len(values) > 1} == {}
    url = sa.engine.make_url(_database_url())
    postgres = _compose()["services"]["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert url.drivername == "postgresql+psycopg" and url.host == "postgres"
    assert url.port in (None, 5432)
    env = postgres["environment"]
    assert (url.username, url.password, url.database) == (
        env["POSTGRES_USER"],
        env["POSTGRES_PASSWORD"],
        env["POSTGRES_DB"],
    )
    assert postgres["healthcheck"]["test"] == [
        "CMD",
        "pg_isready",
        "-U",
        env["POSTGRES_USER"],
        "-d",
        env["POSTGRES_DB"],
    ]


def test_compose_wires_the_mail_to_mailpit_and_the_links_to_the_web_front() -> None:
    services = _compose()["services"]
    mailpit = services["mailpit"]
    assert mailpit["image"] == "axllent/mailpit"
    assert "1025" in [str(port) for port in mailpit["expose"]]
    assert [p.rsplit(":", 2)[-2:] for p in mailpit["ports"]] == [["8025", "8025"]]
    digest = _digest_services()
    for name in ("web", "sender-1", "sender-2"):  # the web front mails the confirmations
        assert digest[name]["environment"]["DIGEST_MAIL_TRANSPORT"] == "smtp://mailpit:1025"
        assert "mailpit" in digest[name]["depends_on"], name
    # The links in the emails reach the web front where compose publishes it.
    web = digest["web"]
    env = web["environment"]
    [published] = web["ports"]
    *_, host_port, container_port = published.split(":")
    assert env["DIGEST_BASE_URL"] == f"http://localhost:{host_port}"
    assert container_port == env["DIGEST_WEB_PORT"] and env["DIGEST_WEB_HOST"] == "0.0.0.0"
    assert [name for name, s in services.items() if "ports" in s] == ["web", "mailpit"]


def _volumes(service: dict[str, Any]) -> dict[str, str]:
    """A service's named volumes and where each is mounted."""
    found = {}
    for entry in service.get("volumes", []):
        source, target = entry.split(":")[:2]
        found[source] = target
    return found


def test_compose_shares_no_volume_between_digest_containers() -> None:
    compose = _compose()
    users: dict[str, list[str]] = {}
    for name, service in compose["services"].items():
        for volume in _volumes(service):
            users.setdefault(volume, []).append(name)
    assert {volume: names for volume, names in users.items() if len(names) > 1} == {}
    assert set(users) == set(compose["volumes"])
    digest = _digest_services()
    # a sender's /data holds the inbox it fetches into when it plans: kept over restarts
    for name in ("sender-1", "sender-2"):
        assert list(_volumes(digest[name]).values()) == ["/data"], name
    # the web front keeps nothing: the store and every feed are in the database
    assert _volumes(digest["web"]) == {} and _volumes(digest["schema"]) == {}
    assert _volumes(compose["services"]["postgres"]) == {
        "postgres-data": "/var/lib/postgresql/data"
    }


def _run_check(command: list[str], port: int) -> int:
    kind, program, *argv = command
    assert (kind, program) == ("CMD", "python")  # the image's; this test's stands in for it
    env = {**os.environ, "DIGEST_WEB_PORT": str(port), "NO_PROXY": "*", "no_proxy": "*"}
    done = subprocess.run([sys.executable, *argv], env=env, capture_output=True, timeout=30)
    return done.returncode


def test_compose_health_checks_ask_a_running_digest_web(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = _digest_services()
    # a worker and the one-off schema listen on no port: the image's check is off for them
    for name in ("sender-1", "sender-2", "schema"):
        assert digest[name]["healthcheck"] == {"disable": True}, name
    check = digest["web"]["healthcheck"]["test"]
    with live_server(site, monkeypatch) as app:
        assert _run_check(check, int(app.url.rsplit(":", 1)[1])) == 0
    with upstream() as stub:
        stub.status = 503  # the database away, or a stale run
        assert _run_check(check, stub.port) != 0
        assert [(method, path) for method, path, _, _ in stub.seen] == [("GET", "/healthz")]
    assert _run_check(check, free_port()) != 0


@pytest.mark.skipif(not POSTGRES_URL, reason="needs a PostgreSQL server")
def test_the_schema_service_makes_the_tables_of_an_empty_database(tmp_path: Path) -> None:
    name = f"digest_schema_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    url = sa.engine.make_url(POSTGRES_URL).set(database=name).render_as_string(False)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
        env.update(DIGEST_DATABASE_URL=url, DIGEST_DATA_DIR=str(tmp_path / "data"))
        command = _digest_services()["schema"]["command"]
        done = subprocess.run(
            [_real_binary(), *command], env=env, cwd=tmp_path, capture_output=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            version = conn.execute(sa.text("SELECT max(version) FROM schema_version")).scalar()
        engine.dispose()
        assert version == SCHEMA_VERSION
    finally:
        drop_database(admin, name)
        admin.dispose()
