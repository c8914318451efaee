"""The deploy/ files: systemd units that systemd accepts, commands that exist, a working nginx."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from digest.cli import build_parser
from digest.settings import OPTIONS

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNITS = ("digest.service", "digest.timer", "digest-serve.service")
INSTALLED_BINARY = "/opt/digest/venv/bin/digest"
# The command-line contract of the design notes.
SUBCOMMANDS = {
    "init",
    "ingest",
    "subscribe",
    "unsubscribe",
    "subscribers",
    "preview",
    "run",
    "serve",
    "status",
}


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
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / name) for name in UNITS)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    # Unknown keys and bad values are only warnings ("..., ignoring") with exit code 0.
    ours = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if str(tmp_path) in line or any(name in line for name in UNITS)
    ]
    assert result.returncode == 0 and ours == [], result.stdout + result.stderr


@pytest.mark.parametrize("name", ["digest.service", "digest-serve.service"])
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


def _commands() -> list[tuple[str, list[str]]]:
    """Every digest command line written in deploy/, as (file, argv after 'digest')."""
    found: list[tuple[str, list[str]]] = []
    for path in sorted(DEPLOY.iterdir()):
        text = path.read_text()
        for match in re.finditer(r"(?:/bin/digest|run --rm digest)\s+([^'\n;>&|]*)", text):
            found.append((path.name, match.group(1).split()))
    docker = (DEPLOY / "Dockerfile").read_text()
    [entrypoint] = re.findall(r"^ENTRYPOINT (\[.*\])$", docker, re.M)
    assert json.loads(entrypoint) == ["digest"]
    for cmd in re.findall(r"^CMD (\[.*\])$", docker, re.M):
        found.append(("Dockerfile CMD", json.loads(cmd)))
    [health] = re.findall(r"HEALTHCHECK .*\\\n\s*CMD (\[.*\])$", docker, re.M)
    program, *argv = json.loads(health)
    assert program == "digest"
    found.append(("Dockerfile HEALTHCHECK", argv))
    for cmd in re.findall(r"^\s+command: (\[.*\])$", (DEPLOY / "compose.yaml").read_text(), re.M):
        found.append(("compose.yaml", json.loads(cmd)))
    return found


def test_deploy_files_use_only_real_subcommands() -> None:
    commands = _commands()
    where = {name for name, _ in commands}
    assert {"digest.service", "digest-serve.service", "crontab.example"} <= where
    assert {"Dockerfile CMD", "Dockerfile HEALTHCHECK", "compose.yaml"} <= where
    parser = build_parser()
    for name, argv in commands:
        assert argv and argv[0] in SUBCOMMANDS, (name, argv)
        parser.parse_args(argv)  # the real command line takes it, flags and all


def test_docker_image_basics() -> None:
    docker = (DEPLOY / "Dockerfile").read_text()
    assert docker.startswith("#") and "FROM python:3.11-slim" in docker
    assert re.search(r"^USER digest$", docker, re.M)
    assert 'VOLUME ["/data"]' in docker and "DIGEST_DATA_DIR=/data" in docker
    compose = (DEPLOY / "compose.yaml").read_text()
    assert "image: axllent/mailpit" in compose
    assert "DIGEST_MAIL_TRANSPORT: smtp://mailpit:1025" in compose
    assert '"8025:8025"' in compose


def test_env_example_lists_every_setting_and_nothing_else() -> None:
    text = (DEPLOY / "digest.env.example").read_text()
    named = set(re.findall(r"^#?(DIGEST_[A-Z_]+)=", text, re.M))
    expected = {"DIGEST_" + option.name.upper() for option in OPTIONS} | {"DIGEST_CONFIG"}
    assert named == expected


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if binary is None:
        pytest.skip("nginx not installed (Debian/Ubuntu: apt-get install nginx-light)")
    port, feeds = _free_port(), tmp_path / "feeds"
    feeds.mkdir()
    site = (DEPLOY / "nginx-feeds.conf").read_text()
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};").replace("listen [::]:80;", "")
    site = site.replace("/var/lib/digest/feeds/", f"{feeds}/")
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"""
        pid {tmp_path}/nginx.pid;
        error_log {tmp_path}/error.log;
        events {{}}
        http {{
            access_log off;
            client_body_temp_path {tmp_path}/body;
            proxy_temp_path {tmp_path}/proxy;
            fastcgi_temp_path {tmp_path}/fastcgi;
            uwsgi_temp_path {tmp_path}/uwsgi;
            scgi_temp_path {tmp_path}/scgi;
            include {tmp_path}/site.conf;
        }}
        """
    )
    command = [binary, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")]
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
        yield port, feeds
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_nginx_serves_feeds_with_types_and_validators(nginx: tuple[int, Path]) -> None:
    port, feeds = nginx
    (feeds / "papers.atom").write_text("<feed/>")
    (feeds / "papers.rss").write_text("<rss/>")
    (feeds / "papers.xml").write_text("<rss/>")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    types = {}
    for name in ("papers.atom", "papers.rss", "papers.xml"):
        with opener.open(f"http://127.0.0.1:{port}/feeds/{name}", timeout=10) as response:
            assert response.headers["Cache-Control"] == "public, max-age=900"
            assert response.headers["ETag"] and response.headers["Last-Modified"]
            types[name] = response.headers["Content-Type"]
            etag = response.headers["ETag"]
    assert types == {
        "papers.atom": "application/atom+xml; charset=utf-8",
        "papers.rss": "application/rss+xml; charset=utf-8",
        "papers.xml": "application/xml; charset=utf-8",
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/feeds/papers.xml", headers={"If-None-Match": etag}
    )
    with pytest.raises(urllib.error.HTTPError) as answer:
        opener.open(request, timeout=10)
    assert answer.value.code == 304
