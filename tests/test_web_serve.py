"""`digest serve` runs the web front beside the schedule; `digest web` runs it alone: real
processes on loopback ports, stopped with SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import time

import httpx
import pytest

from digest.web.security import CSRF_COOKIE
from tests.conftest import Site
from tests.smtp_server import free_port
from tests.test_service import wait_until
from tests.test_web_subscription import csrf_of


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM, and SIGKILL when it has not stopped 20 s later."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.mark.parametrize(("command", "workers"), [(["serve"], "1"), (["web"], "1"), (["web"], "2")])
def test_the_web_front_answers_and_stops_on_sigterm(
    site: Site, command: list[str], workers: str
) -> None:
    port = int(site.env["DIGEST_WEB_PORT"])
    # serve: a schedule far away, so only the web front and the start-up poll run
    site.env.update(DIGEST_SCHEDULE="0 0 1 1 *", DIGEST_WEB_WORKERS=workers)
    log_file = site.root / "web.log"
    with log_file.open("w") as log:
        process = site.spawn(*command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: _answers(port) or process.poll() is not None, "the web front")
            assert process.poll() is None, log_file.read_text()
            page = httpx.get(f"http://127.0.0.1:{port}/")
            assert "Subscribe" in page.text
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    logs = log_file.read_text()
    assert code == 0, logs
    assert "Traceback" not in logs
    assert not _answers(port)


def test_the_web_front_mails_a_confirmation_through_a_server_offering_pipelining(
    site: Site,
) -> None:
    # uvicorn runs the web front on uvloop where it is installed, and the confirmation goes
    # out from that loop: through PIPELINING (Postfix offers it) it was refused as a lost
    # connection, every time, until the take-over asked what the transport does instead of
    # its class (``deliver.pipelining``).
    site.server.handler.pipelining = True
    port = int(site.env["DIGEST_WEB_PORT"])
    log_file = site.root / "web.log"
    with log_file.open("w") as log:
        process = site.spawn("web", stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: _answers(port) or process.poll() is not None, "the web front")
            assert process.poll() is None, log_file.read_text()
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                form = client.get("/subscribe")
                # the cookie is a secure one (the site is https), sent here by hand over http
                cookie = form.cookies[CSRF_COOKIE]
                answer = client.post(
                    "/subscribe",
                    data={
                        "csrf": csrf_of(form.text),
                        "email": "new.reader@example.net",
                        "interests": "sparse attention",
                    },
                    headers={"Cookie": f"{CSRF_COOKIE}={cookie}"},
                )
            assert answer.status_code == 200, answer.text
        finally:
            _stop(process)
    sent = [message for rcpt, message in site.received() if rcpt == "new.reader@example.net"]
    assert len(sent) == 1, log_file.read_text()
    assert "/confirm/" in sent[0].get_body(preferencelist=("plain",)).get_content()
    assert site.server.handler.commands == ["MAIL", "RCPT", "DATA"]


@pytest.mark.parametrize("command", ["serve", "web"])
def test_a_port_in_use_is_one_clear_line(site: Site, command: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        site.env.update(DIGEST_WEB_PORT=str(port), DIGEST_SCHEDULE="0 0 1 1 *")
        result = site.process(command, timeout=30)
    assert result.code == 2, result.err
    last = result.err.strip().splitlines()[-1]
    assert last.startswith("digest: the web front cannot listen on 127.0.0.1:"), result.err
    assert "web_port" in last
    assert "Traceback" not in result.err


def _closed_after(sock: socket.socket, limit: float) -> float:
    """Seconds until the server closes ``sock`` (end of file); fails past ``limit``."""
    started = time.monotonic()
    sock.settimeout(limit)
    try:
        while sock.recv(4096):
            pass  # a 4xx page before closing would do too
    except TimeoutError:
        pytest.fail(f"the connection was still open after {limit}s")
    except ConnectionResetError:
        pass
    return time.monotonic() - started


@pytest.mark.parametrize(("command", "workers"), [("serve", "1"), ("web", "1"), ("web", "2")])
def test_a_client_slow_to_send_its_headers_is_cut_off(
    site: Site, command: str, workers: str
) -> None:
    port = int(site.env["DIGEST_WEB_PORT"])
    site.env.update(
        DIGEST_SCHEDULE="0 0 1 1 *", DIGEST_WEB_WORKERS=workers, DIGEST_WEB_HEADER_TIMEOUT="1"
    )
    process = site.spawn(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _answers(port) or process.poll() is not None, "the web front")
        with (
            socket.create_connection(("127.0.0.1", port)) as half,
            socket.create_connection(("127.0.0.1", port)) as silent,
            socket.create_connection(("127.0.0.1", port)) as kept,
        ):
            half.sendall(b"GET / HT")  # half a request line, then nothing
            kept.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert kept.recv(64).startswith(b"HTTP/1.1 200")
            assert _closed_after(half, 5) < 1.8
            assert _closed_after(silent, 5) < 1.8
            # a second request on a kept-alive connection has the same limit
            time.sleep(0.2)
            kept.sendall(b"GET / HTTP/1.1\r\nHo")
            assert _closed_after(kept, 5) < 1.8
        assert _answers(port)  # the server itself is fine
    finally:
        _stop(process)


def test_web_says_where_it_listens_and_takes_host_and_port(site: Site) -> None:
    port = free_port()  # not the site's web_port: the arguments win over the setting
    out_file, log_file = site.root / "web.out", site.root / "web.log"
    with out_file.open("w") as out, log_file.open("w") as log:
        process = site.spawn(
            "web", "--host", "127.0.0.1", "--port", str(port), stdout=out, stderr=log
        )
        try:
            wait_until(lambda: _answers(port) or process.poll() is not None, "the web front")
            assert process.poll() is None, log_file.read_text()
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert out_file.read_text().splitlines() == [f"listening on http://127.0.0.1:{port}"]
    logs = log_file.read_text()
    assert "color_message" not in logs and "\x1b" not in logs and "\\u001b" not in logs


@pytest.mark.parametrize(
    ("args", "named"), [(["--port", "70000"], "--port"), (["--host", "http://x"], "--host")]
)
def test_a_bad_host_or_port_argument_is_a_usage_error(
    site: Site, args: list[str], named: str
) -> None:
    result = site.cli("web", *args)
    assert result.code == 2
    assert named in result.err and "Traceback" not in result.err
