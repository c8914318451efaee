"""The deploy/ files: systemd units that systemd accepts, commands that exist, an nginx that
proxies the web front and serves the public feeds, and a Docker health check that works
(the compose file and what its image installs: tests/test_compose.py)."""

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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from digest.cli.parser import build_parser
from digest.service.scheduler import HOURS_MINUTES
from digest.settings.model import OPTIONS
from tests.browser import free_port, live_server
from tests.conftest import Site

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


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def _digest_services() -> dict[str, dict[str, Any]]:
    """The compose services that run the digest image."""
    return {
        name: service
        for name, service in _compose()["services"].items()
        if "build" in service or str(service.get("image", "")).startswith("digest")
    }


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
