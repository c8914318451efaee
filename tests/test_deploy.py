"""The deploy/ files: systemd units that systemd accepts, commands that exist, an nginx that
proxies the web front and serves the public feeds, a Docker health check that works, and a
compose file of more than one digest container on one PostgreSQL, with Mailpit for the mail."""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml

from digest.cli import build_parser
from digest.service.scheduler import HOURS_MINUTES
from digest.settings import OPTIONS, load_settings
from digest.store.migrations import SCHEMA_VERSION
from tests.browser import free_port, live_server
from tests.conftest import POSTGRES_URL, Site

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
UNITS = (
    "digest.service",
    "digest.timer",
    "digest-serve.service",
    # more than one host
    "digest-web.service",
    "digest-worker@.service",
    "digest-hours.service",
    "digest-hours.timer",
)
SERVICES = tuple(name for name in UNITS if name.endswith(".service"))
INSTALLED_BINARY = "/opt/digest/venv/bin/digest"


def _real_subcommands() -> set[str]:
    parser = build_parser()
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(action.choices)


def _real_binary() -> str:
    found = Path(sys.executable).parent / "digest"
    return str(found) if found.exists() else shutil.which("digest") or sys.executable


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not installed (Debian/Ubuntu: apt-get install systemd)",
)
def test_systemd_units_verify(tmp_path: Path) -> None:
    # verify refuses an ExecStart binary that does not exist, so point the copies at this one.
    for name in UNITS:
        text = (DEPLOY / name).read_text()
        (tmp_path / name).write_text(text.replace(INSTALLED_BINARY, _real_binary()))
    # a template is verified as an instance of it, as systemctl would start it
    names = [name.replace("@.", "@1.") for name in UNITS]
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / name) for name in names)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    # Unknown keys and bad values are only warnings ("..., ignoring") with exit code 0.
    ours = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if str(tmp_path) in line or "digest" in line
    ]
    assert result.returncode == 0 and ours == [], result.stdout + result.stderr


def test_every_unit_in_deploy_is_verified() -> None:
    found = {p.name for p in DEPLOY.iterdir() if p.suffix in {".service", ".timer"}}
    assert found == set(UNITS)


@pytest.mark.parametrize("name", SERVICES)
def test_units_are_hardened_and_configured_from_the_env_file(name: str) -> None:
    text = (DEPLOY / name).read_text()
    for line in (
        f"ExecStart={INSTALLED_BINARY} ",
        "EnvironmentFile=/etc/digest/digest.env",
        "StateDirectory=digest",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/digest",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "ProtectKernelTunables=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "CapabilityBoundingSet=\n",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "WorkingDirectory=/var/lib/digest",
    ):
        assert line in text, line


def test_timer_is_daily_and_persistent() -> None:
    text = (DEPLOY / "digest.timer").read_text()
    assert "OnCalendar=*-*-* 07:00:00 UTC" in text
    assert "Persistent=true" in text
    assert "SuccessExitStatus=75" in (DEPLOY / "digest.service").read_text()


def _hardening(name: str) -> list[str]:
    """A unit's lines from NoNewPrivileges= to DevicePolicy=, comments left out."""
    lines = [line for line in (DEPLOY / name).read_text().splitlines() if line[:1] not in "#"]
    start = lines.index("NoNewPrivileges=yes")
    end = next(i for i, line in enumerate(lines) if line.startswith("DevicePolicy="))
    return lines[start : end + 1]


@pytest.mark.parametrize("name", [name for name in SERVICES if name != "digest-serve.service"])
def test_every_unit_is_hardened_as_the_long_running_service(name: str) -> None:
    reference = _hardening("digest-serve.service")
    assert len(reference) > 20
    assert _hardening(name) == reference


def _unit_lines(name: str) -> list[str]:
    return [line for line in (DEPLOY / name).read_text().splitlines() if "=" in line]


def _exec_start(name: str) -> list[str]:
    [line] = [line for line in _unit_lines(name) if line.startswith("ExecStart=")]
    binary, *argv = line.removeprefix("ExecStart=").split()
    assert binary == INSTALLED_BINARY
    return argv


def test_the_layout_of_more_than_one_host_runs_senders_that_plan_and_web_fronts() -> None:
    # the senders: a template, so a host runs as many as it likes; each also plans (no
    # --no-plan), so no timer or cron line runs the site's daily digest
    assert _exec_start("digest-worker@.service") == ["worker"]
    assert "Description=digest: sender %i " in (DEPLOY / "digest-worker@.service").read_text()
    assert _exec_start("digest-web.service") == ["web"]
    for name in ("digest-worker@.service", "digest-web.service"):
        lines = _unit_lines(name)
        assert "Type=exec" in lines and "Restart=on-failure" in lines
        assert "WantedBy=multi-user.target" in lines
        assert "After=network-online.target postgresql.service" in lines
    # SIGTERM lets a sender finish the message in flight: as long as digest serve gets
    assert "TimeoutStopSec=5min" in _unit_lines("digest-worker@.service")


def test_the_readers_own_hours_run_every_quarter_hour_as_serve_looks_at_them() -> None:
    assert _exec_start("digest-hours.service") == ["run", "--hours"]
    service = _unit_lines("digest-hours.service")
    assert "Type=oneshot" in service and "SuccessExitStatus=75" in service
    timer = _unit_lines("digest-hours.timer")
    assert "Unit=digest-hours.service" in timer
    [calendar] = [line.removeprefix("OnCalendar=") for line in timer if "OnCalendar=" in line]
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    shown = subprocess.run(
        ["systemd-analyze", "calendar", "--iterations=9", calendar],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    times = re.findall(r"(\d\d):(\d\d):00 UTC", shown)
    assert len(times) == 9
    assert {int(minute) for _, minute in times} == {int(m) for m in HOURS_MINUTES.split(",")}
    assert len({hour for hour, _ in times}) >= 2  # every hour, not one hour's quarters


def _healthcheck() -> list[str]:
    docker = (DEPLOY / "Dockerfile").read_text()
    [health] = re.findall(r"HEALTHCHECK .*\\\n\s*CMD (\[.*\])$", docker, re.M)
    command: list[str] = json.loads(health)
    return command


def _commands() -> list[tuple[str, list[str]]]:
    """Every digest command line written in deploy/, as (file, argv after 'digest')."""
    found: list[tuple[str, list[str]]] = []
    # ExecStart= and cron lines, and the compose file's own examples in its comments
    pattern = r"(?:/bin/digest|compose -f \S+ run --rm [\w-]+|compose -f \S+ exec (?:-T )?[\w-]+ digest)\s+([^'\n;>&|]*)"
    for path in sorted(DEPLOY.iterdir()):
        for match in re.finditer(pattern, path.read_text()):
            found.append((path.name, match.group(1).split()))
    docker = (DEPLOY / "Dockerfile").read_text()
    [entrypoint] = re.findall(r"^ENTRYPOINT (\[.*\])$", docker, re.M)
    assert json.loads(entrypoint) == ["digest"]
    for cmd in re.findall(r"^CMD (\[.*\])$", docker, re.M):
        found.append(("Dockerfile CMD", json.loads(cmd)))
    for name, service in _digest_services().items():
        found.append((f"compose.yaml {name}", service["command"]))
    return found


def test_deploy_files_use_only_real_subcommands() -> None:
    commands = _commands()
    where = {name for name, _ in commands}
    assert {
        "digest.service",
        "digest-serve.service",
        "digest-web.service",
        "digest-worker@.service",
        "digest-hours.service",
        "crontab.example",
        "compose.yaml",  # the examples in its comments
    } <= where
    assert {"Dockerfile CMD", "compose.yaml sender-1", "compose.yaml web"} <= where
    parser = build_parser()
    real = _real_subcommands()
    for name, argv in commands:
        assert argv and argv[0] in real, (name, argv)
        parser.parse_args(argv)  # the real command line takes it, flags and all


def test_the_service_and_the_image_run_the_web_front_with_the_schedule() -> None:
    unit = (DEPLOY / "digest-serve.service").read_text()
    assert f"ExecStart={INSTALLED_BINARY} serve\n" in unit  # not --no-web
    docker = (DEPLOY / "Dockerfile").read_text()
    assert re.findall(r"^CMD (\[.*\])$", docker, re.M) == ['["serve"]']
    assert re.search(r"^EXPOSE 8000$", docker, re.M)
    assert "DIGEST_WEB_HOST=0.0.0.0" in docker and "DIGEST_WEB_PORT=8000" in docker


def test_docker_image_basics() -> None:
    docker = (DEPLOY / "Dockerfile").read_text()
    assert docker.startswith("#") and "FROM python:3.11-slim" in docker
    assert re.search(r"^USER digest$", docker, re.M)
    assert 'VOLUME ["/data"]' in docker and "DIGEST_DATA_DIR=/data" in docker


def _docker_lines() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments left out."""
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return [line for line in "\n".join(lines).replace("\\\n", " ").splitlines() if line.strip()]


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


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


IMAGE_BUILD = {"context": "..", "dockerfile": "deploy/Dockerfile"}


def _digest_services() -> dict[str, dict[str, Any]]:
    """The compose services that run the digest image."""
    return {
        name: service
        for name, service in _compose()["services"].items()
        if "build" in service or str(service.get("image", "")).startswith("digest")
    }


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
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


def test_the_readme_names_every_deploy_file_and_no_other() -> None:
    readme = (REPO / "README.md").read_text()
    named = set(re.findall(r"deploy/([\w@.-]+\w)", readme))
    assert named == {p.name for p in DEPLOY.iterdir()}


def test_env_example_lists_every_setting_and_nothing_else() -> None:
    text = (DEPLOY / "digest.env.example").read_text()
    named = set(re.findall(r"^#?(DIGEST_[A-Z_]+)=", text, re.M))
    expected = {"DIGEST_" + option.name.upper() for option in OPTIONS} | {"DIGEST_CONFIG"}
    assert named == expected


@dataclass
class Upstream:
    """A plain HTTP server on loopback that answers ``status`` and notes every request."""

    port: int
    status: int = 200
    seen: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)


@contextlib.contextmanager
def upstream() -> Iterator[Upstream]:
    made = Upstream(0)

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            made.seen.append((self.command, self.path, dict(self.headers.items()), body))
            self.send_response(made.status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "8")
            self.end_headers()
            self.wfile.write(b"upstream")

        do_GET = do_POST = do_HEAD = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    made.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield made
    finally:
        server.shutdown()
        server.server_close()


def _run_healthcheck(port: int) -> int:
    program, *argv = _healthcheck()
    assert program == "python"  # the image's interpreter; this test's stands in for it
    env = {**os.environ, "DIGEST_WEB_PORT": str(port), "NO_PROXY": "*", "no_proxy": "*"}
    done = subprocess.run([sys.executable, *argv], env=env, capture_output=True, timeout=30)
    return done.returncode


def test_the_docker_healthcheck_asks_healthz() -> None:
    with upstream() as app:
        assert _run_healthcheck(app.port) == 0
        app.status = 503  # a stale run, or no database
        assert _run_healthcheck(app.port) != 0
        assert [(method, path) for method, path, _, _ in app.seen] == [
            ("GET", "/healthz"),
            ("GET", "/healthz"),
        ]
    assert _run_healthcheck(free_port()) != 0  # nothing listening


def _nginx_binary() -> str:
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if binary is None:
        pytest.skip("nginx not installed (Debian/Ubuntu: apt-get install nginx-light)")
    return binary


@contextlib.contextmanager
def nginx(folder: Path, app_port: int) -> Iterator[int]:
    """deploy/nginx-digest.conf, checked with ``nginx -t`` and running on a free port, with
    the app on ``app_port`` and the data folder ``folder``."""
    binary = _nginx_binary()
    port = free_port()
    site = (DEPLOY / "nginx-digest.conf").read_text()
    for old, new in (
        ("listen 80;", f"listen 127.0.0.1:{port};"),
        ("listen [::]:80;", ""),
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{app_port};"),
        ("root /var/lib/digest;", f"root {folder};"),
    ):
        assert old in site, old
        site = site.replace(old, new)
    (folder / "site.conf").write_text(site)
    (folder / "nginx.conf").write_text(
        f"""
        pid {folder}/nginx.pid;
        error_log {folder}/error.log;
        events {{}}
        http {{
            access_log off;
            client_body_temp_path {folder}/body;
            proxy_temp_path {folder}/proxy;
            fastcgi_temp_path {folder}/fastcgi;
            uwsgi_temp_path {folder}/uwsgi;
            scgi_temp_path {folder}/scgi;
            include {folder}/site.conf;
        }}
        """
    )
    command = [binary, "-p", str(folder), "-c", str(folder / "nginx.conf")]
    check = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    # One process, no user switch: it must read the test's private folder.
    proc = subprocess.Popen([*command, "-g", "daemon off; master_process off;"])
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.02)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _client(port: int) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=10)


def test_nginx_serves_the_public_feed_files_with_types_and_validators(tmp_path: Path) -> None:
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    (feeds / "papers.atom").write_text("<feed/>")
    (feeds / "papers.rss").write_text("<rss/>")
    with upstream() as app, nginx(tmp_path, app.port) as port, _client(port) as client:
        types = {}
        for name in ("papers.atom", "papers.rss"):
            response = client.get(f"/feeds/{name}")
            assert response.status_code == 200 and response.text != "upstream"
            assert response.headers["Cache-Control"] == "public, max-age=900"
            assert response.headers["ETag"] and response.headers["Last-Modified"]
            types[name] = response.headers["Content-Type"]
            etag = response.headers["ETag"]
        again = client.get("/feeds/papers.rss", headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert app.seen == []  # all from disk
    assert types == {
        "papers.atom": "application/atom+xml; charset=utf-8",
        "papers.rss": "application/rss+xml; charset=utf-8",
    }


def test_nginx_proxies_everything_else_with_the_forwarded_headers(tmp_path: Path) -> None:
    with upstream() as app, nginx(tmp_path, app.port) as port, _client(port) as client:
        asked = client.get("/", headers={"X-Forwarded-For": "203.0.113.9", "Host": "digest.test"})
        assert asked.text == "upstream"
        # No feed file yet: the app builds it. Private and search feeds are always the app's.
        for path in ("/feeds/papers.atom", "/feeds/private/abc.atom", "/feeds/search.atom?q=x"):
            assert client.get(path).text == "upstream"
        form = client.post("/subscribe", content=b"e" * 60_000)
        assert form.text == "upstream"
        too_big = client.post("/subscribe", content=b"e" * 70_000)
        assert too_big.status_code == 413
        [first, *feeds, posted] = app.seen
    method, path, headers, _ = first
    assert (method, path) == ("GET", "/")
    # The address nginx saw replaces the one the client claimed.
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert headers["X-Forwarded-Proto"] == "http"
    assert headers["Host"] == "digest.test"
    assert [p for _, p, _, _ in feeds] == [
        "/feeds/papers.atom",
        "/feeds/private/abc.atom",
        "/feeds/search.atom?q=x",
    ]
    assert posted[0] == "POST" and len(posted[3]) == 60_000  # the 70,000 never arrived


def test_nginx_in_front_of_digest_web(
    site: Site, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _nginx_binary()
    folder = tmp_path / "nginx"
    folder.mkdir()
    with live_server(site, monkeypatch) as app:
        app_port = int(app.url.rsplit(":", 1)[1])
        with nginx(folder, app_port) as port, _client(port) as client:
            front = client.get("/")
            assert front.status_code == 200
            assert 'action="/subscribe"' in front.text
            assert "frame-ancestors 'none'" in front.headers["Content-Security-Policy"]
            missing = client.get("/no/such/page")
            assert missing.status_code == 404
            assert "There is no page at this address." in missing.text
