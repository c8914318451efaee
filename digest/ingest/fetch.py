"""Fetching listing sources (URLs, ``file://`` URLs, local paths) into the inbox.

The sources are fetched at the same time, in a few threads, and ``timeout`` is one
deadline for the whole fetch, attempts and back-off included; a URL goes over HTTP
(``http_source``: conditional GET, gzip, retries, the size cap, the deadline), a local
file is copied, and either body lands in the inbox through ``spool``. A source polled
again within ``min_interval`` is skipped, and each outcome is recorded here.

A 304, an empty listing and a truncated body are outcomes to report, not
successes: each is recorded in ``SourceState`` (``last_status``) and returned,
and ``last_new_at`` moves only when a new body was saved. That way ``status``
can tell "nothing new upstream" from "we got new papers".
"""

from __future__ import annotations

import contextvars
import functools
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from sqlalchemy.engine import Engine

from digest.clock import as_utc
from digest.ingest.http_source import Deadline, fetch_http, http_client
from digest.ingest.spool import (
    CHUNK,
    EMPTY,
    ERROR,
    KNOWN_EXT,
    NOT_MODIFIED,
    OK,
    SKIPPED,
    TOO_LARGE,
    Fetched,
    Spool,
)
from digest.logs import redact
from digest.store import sources

log = logging.getLogger("digest.fetch")

DEFAULT_MIN_INTERVAL = timedelta(minutes=5)
DEFAULT_BACKOFF = 2.0  # seconds before the first retry; doubled for each further one
PARALLEL = 8  # sources fetched at once: enough for a site's few, polite to a shared host


@dataclass(frozen=True)
class FetchResult:
    """The outcome for one source: ``status`` is one of the statuses of ``spool``, ``skipped``
    included."""

    url: str
    status: str
    path: Path | None = None
    bytes: int = 0
    error: str | None = None
    attempts: int = 0
    http_status: int | None = None

    @property
    def new(self) -> bool:
        """Whether a new file was saved to the inbox."""
        return self.status == OK


def _local_path(source: str) -> Path | None:
    """The file a ``file://`` URL or a plain path names; None for network URLs."""
    parts = urlsplit(source)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme in {"http", "https"}:
        return None
    if parts.scheme and len(parts.scheme) > 1:
        raise ValueError(f"unsupported source scheme {parts.scheme}://")
    return Path(source).expanduser()


def _fetch_local(
    path: Path,
    state: dict[str, Any] | None,
    inbox: Path,
    max_bytes: int,
    known: Callable[[str], bool],
) -> Fetched:
    try:
        info = path.stat()
    except OSError as exc:
        return Fetched(ERROR, error=f"cannot read {path.name}: {exc.strerror or exc}")
    if not path.is_file():
        return Fetched(ERROR, error=f"{path.name} is not a file")
    # Size and modification time stand in for an ETag: unchanged means nothing to copy.
    validator = f'"{info.st_size}-{info.st_mtime_ns}"'
    if state and state.get("etag") == validator:
        return Fetched(NOT_MODIFIED, etag=validator)
    if info.st_size > max_bytes:
        return Fetched(TOO_LARGE, error=f"{info.st_size} bytes, the cap is {max_bytes}")
    spool = Spool(inbox)
    try:
        with path.open("rb") as source:
            while chunk := source.read(CHUNK):
                spool.write(chunk)
        if spool.looks_empty():
            return Fetched(
                EMPTY, nbytes=spool.size, error="the file is an empty listing", etag=validator
            )
        ext = path.suffix.lower().lstrip(".")
        status, saved = spool.commit(path.stem, ext if ext in KNOWN_EXT else "txt", known)
        return Fetched(status, path=saved, nbytes=spool.size, etag=validator)
    except OSError as exc:
        return Fetched(ERROR, error=f"cannot copy {path.name}: {exc.strerror or exc}")
    finally:
        spool.discard()


def _save_state(
    engine: Engine, url: str, old: dict[str, Any] | None, fetched: Fetched, now: datetime
) -> None:
    values: dict[str, Any] = {
        "last_fetch_at": now,
        "last_status": fetched.status,
        "last_error": fetched.error,
    }
    if fetched.status in {OK, EMPTY}:
        # A full answer: its validators (or their absence) now describe what we hold.
        values.update(etag=fetched.etag, last_modified=fetched.last_modified, bytes=fetched.nbytes)
    elif fetched.status == NOT_MODIFIED:
        # A 304 may refresh the validators; a same-bytes 200 carries the current ones.
        if fetched.etag:
            values["etag"] = fetched.etag
        if fetched.last_modified:
            values["last_modified"] = fetched.last_modified
    else:
        # Keep the validators of the last good answer: a partial body proves nothing.
        values["bytes"] = fetched.nbytes
    if fetched.status == OK:
        values["last_new_at"] = now
    sources.save_source_state(engine, url, values, known=old is not None)


def fetch_sources(
    urls: Iterable[str],
    inbox: Path,
    engine: Engine,
    *,
    now: datetime,
    timeout: float,
    max_bytes: int,
    retries: int = 3,
    backoff: float = DEFAULT_BACKOFF,
    min_interval: timedelta = DEFAULT_MIN_INTERVAL,
    sleep: Callable[[float], None] = time.sleep,
    proxies: dict[str, str] | None = None,
    parallel: int = PARALLEL,
) -> list[FetchResult]:
    """Fetch each source into ``inbox``, record each outcome in ``SourceState``, return them.

    The sources are fetched at the same time (``parallel`` at most) under one deadline:
    ``timeout`` seconds from the start for the whole fetch, so however many sources hang
    the fetch takes about ``timeout``, not that times their number. ``proxies`` maps a
    scheme to its proxy URL (None: the environment's proxies; ``{}``: none).
    """
    wanted = list(dict.fromkeys(urls))  # a source listed twice is fetched once
    stamp = as_utc(now)
    states = sources.source_states(engine, wanted)

    def known(sha: str) -> bool:
        return sources.dump_known(engine, sha) is not None

    results: list[FetchResult] = []
    deadline = Deadline(timeout)
    try:
        with (
            http_client(proxies) as client,
            ThreadPoolExecutor(max(1, min(parallel, len(wanted))), "fetch") as pool,
        ):
            fetch_one = functools.partial(
                _fetch_one,
                inbox=inbox,
                now=stamp,
                deadline=deadline,
                max_bytes=max_bytes,
                retries=retries,
                backoff=backoff,
                min_interval=min_interval,
                sleep=sleep,
                client=client,
                known=known,
            )
            # each in a copy of this context: the run id stays on the workers' log lines
            futures = [
                pool.submit(contextvars.copy_context().run, fetch_one, url, states.get(url))
                for url in wanted
            ]
            for url, future in zip(wanted, futures, strict=True):
                # the store's writes stay in this thread, in the order the sources are listed
                results.append(_record(engine, url, states.get(url), future.result(), stamp))
    finally:
        deadline.cancel()
    return results


def _fetch_one(
    url: str,
    state: dict[str, Any] | None,
    *,
    inbox: Path,
    now: datetime,
    deadline: Deadline,
    max_bytes: int,
    retries: int,
    backoff: float,
    min_interval: timedelta,
    sleep: Callable[[float], None],
    client: httpx.Client,
    known: Callable[[str], bool],
) -> Fetched | None:
    """One source (in a worker thread); None when it was fetched too recently to ask again."""
    try:
        local = _local_path(url)
    except ValueError as exc:
        return Fetched(ERROR, error=str(exc))
    if local is not None:
        return _fetch_local(local, state, inbox, max_bytes, known)
    last = state.get("last_fetch_at") if state else None
    if last is not None and now - as_utc(last) < min_interval:
        # Polite: however often polls and runs come, a server hears from us at most once
        # per interval.
        log.debug("source fetched recently, skipped", extra={"source": url})
        return None
    if deadline.passed():  # waited for a free worker until the whole fetch's time was up
        return Fetched(ERROR, error=deadline.error(), attempts=0)
    return fetch_http(
        url,
        state,
        inbox,
        deadline=deadline,
        max_bytes=max_bytes,
        retries=retries,
        backoff=backoff,
        sleep=sleep,
        client=client,
        known=known,
    )


def _record(
    engine: Engine, url: str, state: dict[str, Any] | None, fetched: Fetched | None, now: datetime
) -> FetchResult:
    """Save one source's outcome in ``SourceState`` and log it; a skip changes nothing."""
    if fetched is None:
        return FetchResult(url, SKIPPED, attempts=0)
    if fetched.error:
        fetched = replace(fetched, error=redact(fetched.error))
    _save_state(engine, url, state, fetched, now)
    result = FetchResult(
        url=url,
        status=fetched.status,
        path=fetched.path if fetched.status == OK else None,
        bytes=fetched.nbytes,
        error=fetched.error,
        attempts=fetched.attempts,
        http_status=fetched.http_status,
    )
    level = logging.INFO if result.status in {OK, NOT_MODIFIED} else logging.WARNING
    log.log(
        level,
        "source %s",
        result.status,
        extra={
            "source": url,
            "status": result.status,
            "bytes": result.bytes,
            "file": result.path.name if result.path else None,
            "error": result.error,
        },
    )
    return result
