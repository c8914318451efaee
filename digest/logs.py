"""Structured logs: one line per event, tagged with the run it belongs to, secrets removed.

``setup_logging`` is called once by the command line. Lines are JSON when the
output is not a terminal (journald, Docker and log shippers parse them) and
readable text on a terminal. Every record carries the current run id, set with
``run_context`` around a run, so one run's lines can be picked out of a day's
log. A filter scrubs anything that looks like a password in a URL or a token in
a query string, because source URLs and transport URLs often embed them.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, Any

_run_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("digest_run_id", default=None)

MASK = "***"

# "scheme://user:password@host": the password may itself hold "@" or ":", so match
# greedily up to the last "@" before the path starts.
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/:@]*:)[^\s/]*(?=@)")
# "?token=...", "&api_key=...", "access_token=...", "password=..." in queries and forms.
_QUERY_SECRET = re.compile(
    r"(?P<head>(?:^|[?&;\s\"'])(?:[\w.-]*token|api[_-]?key|apikey|secret|password|passwd|pwd"
    r"|sig|signature|auth)=)[^&;\s#\"']+",
    re.IGNORECASE,
)
# "Authorization: Bearer abc" or "Basic abc" pasted into an error message.
_AUTH_HEADER = re.compile(r"(?P<head>\b(?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]{6,}")

# Terminal colour and cursor codes (CSI sequences): a library's message meant for a
# terminal must not put escape bytes into a JSON log line.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
# uvicorn adds ``color_message``, its message again with colour codes for its own formatter.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "", None, None)).keys()
    | {"message", "asctime", "run_id", "taskName", "color_message"}
)


def redact(text: str) -> str:
    """``text`` with URL passwords, token-like query values and auth headers masked."""
    if not text:
        return text
    text = _USERINFO.sub(lambda m: m.group("head") + MASK, text)
    text = _QUERY_SECRET.sub(lambda m: m.group("head") + MASK, text)
    return _AUTH_HEADER.sub(lambda m: m.group("head") + MASK, text)


def current_run_id() -> str | None:
    """The run id of the code running now, or None outside a run."""
    return _run_id.get()


@contextmanager
def run_context(run_id: str | int) -> Iterator[str]:
    """Tag every log record made inside the block (this thread or task) with ``run_id``."""
    token = _run_id.set(str(run_id))
    try:
        yield str(run_id)
    finally:
        _run_id.reset(token)


class RunIdFilter(logging.Filter):
    """Stamp the current run id on each record, so formatters need not know about contexts."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.run_id = _run_id.get()
        return True


class RedactFilter(logging.Filter):
    """Mask secrets (and drop colour codes) in the message and in ``extra=`` string values
    before any handler sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a broken format string: keep the raw parts visible
            message = f"{record.msg} {record.args}"
        record.msg = redact(_ANSI.sub("", message))
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, redact(_ANSI.sub("", value)))
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD_ATTRS and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, run_id, msg, the extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "run_id": getattr(record, "run_id", None),
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            data.setdefault(key, value)
        if record.exc_info:
            # Tracebacks are formatted here, after the filters ran, so redact them here too.
            data["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(data, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``2025-03-11 07:00:00 INFO  digest.ingest.fetch [run 12] message key=value`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%Y-%m-%d %H:%M:%S")
        run_id = getattr(record, "run_id", None)
        parts = [stamp, f"{record.levelname:<5}", record.name]
        if run_id:
            parts.append(f"[run {run_id}]")
        parts.append(record.getMessage())
        parts.extend(f"{key}={value}" for key, value in _extras(record).items())
        line = " ".join(parts)
        if record.exc_info:
            # Keep the traceback but on the same logical event: indented continuation lines.
            trace = redact(self.formatException(record.exc_info))
            line += "\n    " + trace.replace("\n", "\n    ")
        return line


def _is_tty(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except ValueError:  # closed stream
        return False


def setup_logging(
    fmt: str, level: int = logging.INFO, stream: IO[str] | None = None
) -> logging.Handler:
    """Send the root logger's records to ``stream`` (stderr) as JSON or text; return the handler.

    Calling it again replaces the handler it installed before, so it is safe in tests.
    """
    stream = sys.stderr if stream is None else stream
    as_json = fmt == "json" or (fmt == "auto" and not _is_tty(stream))
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter())
    # Filters on the handler (not the logger) also catch records from library loggers.
    handler.addFilter(RunIdFilter())
    handler.addFilter(RedactFilter())
    handler.set_name("digest")
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "digest":
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(level)
    # APScheduler says "Running job ..." at INFO for every poll; our jobs log their own outcome.
    logging.getLogger("apscheduler").setLevel(max(level, logging.WARNING))
    return handler
