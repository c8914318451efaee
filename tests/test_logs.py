"""Structured logs: JSON shape, the run id on every line, secrets never written."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from digest.logs import current_run_id, redact, run_context, setup_logging


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_json_lines_carry_level_logger_message_extras_and_run_id() -> None:
    out = io.StringIO()
    setup_logging("json", stream=out)
    log = logging.getLogger("digest.test")
    log.info("outside")
    with run_context(42):
        log.warning("fetched %d papers", 3, extra={"source": "hf", "bytes": 120})
    first, second = (json.loads(line) for line in lines(out))
    assert first["run_id"] is None and first["msg"] == "outside"
    assert second["level"] == "warning"
    assert second["logger"] == "digest.test"
    assert second["msg"] == "fetched 3 papers"
    assert second["run_id"] == "42"
    assert second["source"] == "hf" and second["bytes"] == 120
    assert second["ts"].endswith("+00:00")


def test_auto_is_json_off_a_terminal_and_text_on_one() -> None:
    piped, tty = io.StringIO(), Tty()
    setup_logging("auto", stream=piped)
    logging.getLogger("digest").info("hello")
    assert json.loads(piped.getvalue())["msg"] == "hello"
    setup_logging("auto", stream=tty)
    with run_context("r1"):
        logging.getLogger("digest").info("hello", extra={"n": 2})
    [line] = lines(tty)
    assert line.endswith("INFO  digest [run r1] hello n=2")
    assert piped.getvalue().count("\n") == 1  # the first handler was replaced, not kept


def test_exception_stays_on_one_json_line() -> None:
    out = io.StringIO()
    setup_logging("json", stream=out)
    try:
        raise RuntimeError("cannot reach smtp://bob:hunter2@mail.example:587")
    except RuntimeError:
        logging.getLogger("digest").exception("send failed")
    [line] = lines(out)
    record = json.loads(line)
    assert "RuntimeError" in record["exc"]
    assert "hunter2" not in line


def test_run_id_is_per_thread_of_work() -> None:
    seen: list[str | None] = []
    with run_context("outer"):
        worker = threading.Thread(target=lambda: seen.append(current_run_id()))
        worker.start()
        worker.join()
        assert current_run_id() == "outer"
    assert current_run_id() is None
    assert seen == [None]  # a new thread does not inherit another run's id


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("smtp://alice:p%40ss@mail.example:587", "p%40ss"),
        ("smtps://alice:p@ss:w0rd@mail.example:465/", "ss:w0rd"),
        ("https://hf.co/api/daily?token=abc123&date=2025-03-11", "abc123"),
        ("https://x.example/feed?access_token=zz-top_9", "zz-top_9"),
        ("GET /feed?api_key=K3Y HTTP/1.1", "K3Y"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.x.y", "eyJhbGciOiJIUzI1NiJ9"),
    ],
)
def test_redact_removes_secrets(text: str, secret: str) -> None:
    cleaned = redact(text)
    assert secret not in cleaned
    assert "***" in cleaned


def test_redact_keeps_ordinary_urls() -> None:
    text = "fetched https://huggingface.co/api/daily_papers?date=2025-03-11 and file:///data/x.json"
    assert redact(text) == text
    assert redact("smtp://mail.example:25") == "smtp://mail.example:25"
    assert redact("smtp://alice:secret@mail.example:25") == "smtp://alice:***@mail.example:25"


def test_secrets_never_reach_the_log() -> None:
    out = io.StringIO()
    setup_logging("json", stream=out)
    log = logging.getLogger("apscheduler.anything")  # library loggers are filtered too
    log.warning("connect %s", "smtp://u:topsecret@h:587", extra={"url": "https://a/?token=t0k"})
    line = out.getvalue()
    assert "topsecret" not in line and "t0k" not in line
    assert json.loads(line)["url"] == "https://a/?token=***"


def test_uvicorns_colour_copy_and_escape_codes_stay_out_of_json_lines() -> None:
    out = io.StringIO()
    setup_logging("json", stream=out)
    # what uvicorn logs at start: its message, and again with colours for its own formatter
    logging.getLogger("uvicorn.error").warning(
        "Started server process [%d] \x1b[1mnow\x1b[0m",
        7,
        extra={"color_message": "Started server process [\x1b[36m%d\x1b[0m]", "where": "\x1b[1mx"},
    )
    (line,) = lines(out)
    data = json.loads(line)
    assert "color_message" not in data
    assert "\x1b" not in line and "\\u001b" not in line
    assert data["msg"] == "Started server process [7] now"
    assert data["where"] == "x"
