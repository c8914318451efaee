"""One source over HTTP: a conditional GET (the ETag and Last-Modified of the last good
answer), gzip, retries with exponential back-off on 5xx, 429 and dropped connections, and a
size cap enforced while streaming, all under one ``Deadline`` for the whole fetch: when it
passes, every socket in use is shut down, so neither a server dripping a byte a second nor
ten that never answer can hold the run (and its lock) longer.
"""

from __future__ import annotations

import importlib.metadata
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from digest.ingest.spool import (
    CHUNK,
    EMPTY,
    ERROR,
    NOT_MODIFIED,
    TOO_LARGE,
    TRUNCATED,
    Fetched,
    Spool,
    extension,
)
from digest.logs import redact
from digest.retry import TryAgain
from digest.retry import backoff as retry_backoff

log = logging.getLogger("digest.fetch")
# httpx logs every request with its whole URL, query secrets included: only its warnings.
logging.getLogger("httpx").setLevel(logging.WARNING)

MAX_BACKOFF = 300.0
try:
    _VERSION = importlib.metadata.version("digest")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    _VERSION = "dev"
USER_AGENT = f"digest/{_VERSION} (self-hosted research paper digest)"


class Deadline:
    """A total time limit for a fetch: when it passes, every socket it watches (any
    source's, any thread's) is shut down, which ends whatever read is blocked on it (a
    stalled or dripping server)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.expired = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return max(0.0, self._at - time.monotonic())

    def passed(self) -> bool:
        return self.expired or self.remaining() <= 0

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shut(sock)

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpx's ``trace`` extension: each new connection's socket is watched."""
        if event.endswith(("connect_tcp.complete", "start_tls.complete")):
            stream = info.get("return_value")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if isinstance(sock, socket.socket):
                self.watch(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shut(sock)

    def cancel(self) -> None:
        self._timer.cancel()

    def error(self) -> str:
        return f"timed out after {self.seconds:g}s"


def _shut(sock: socket.socket) -> None:
    with suppress(OSError):  # already closed
        # The plain socket's shutdown, also for TLS: a blocked read then sees end of file.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def http_client(proxies: dict[str, str] | None) -> httpx.Client:
    """One client for a whole fetch, shared by its threads: no connection is kept for
    another request (each new socket is handed to the fetch's deadline), redirects
    followed, gzip decoded."""
    mounts: dict[str, httpx.BaseTransport | None] = {}
    if proxies is not None:
        # Given proxies replace the environment's; ``{}`` means none at all.
        mounts = {"http://": None, "https://": None}
        mounts.update(
            {f"{scheme}://": httpx.HTTPTransport(proxy=url) for scheme, url in proxies.items()}
        )
    return httpx.Client(
        headers={"User-Agent": USER_AGENT, "Accept": "*/*"},
        follow_redirects=True,
        limits=httpx.Limits(max_keepalive_connections=0),
        mounts=mounts,
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return redact(str(exc)) or type(exc).__name__


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:  # an HTTP date: fall back to our own back-off
        return None


def _attempt_http(
    url: str,
    state: dict[str, Any] | None,
    inbox: Path,
    *,
    deadline: Deadline,
    max_bytes: int,
    client: httpx.Client,
    known: Callable[[str], bool],
) -> Fetched:
    headers = {}
    if state and state.get("etag"):
        headers["If-None-Match"] = state["etag"]
    if state and state.get("last_modified"):
        headers["If-Modified-Since"] = state["last_modified"]
    try:
        with client.stream(
            "GET",
            url,
            headers=headers,
            timeout=max(0.001, deadline.remaining()),
            extensions={"trace": deadline.trace},
        ) as response:
            return _receive(
                url, response, inbox, deadline=deadline, max_bytes=max_bytes, known=known
            )
    except httpx.HTTPError as exc:
        if deadline.passed():
            raise TryAgain(deadline.error(), kind=ERROR) from None
        if isinstance(exc, httpx.ConnectError) and _bad_certificate(exc):
            return Fetched(ERROR, error=_describe(exc))  # will not fix itself in a second
        if isinstance(exc, httpx.UnsupportedProtocol):
            return Fetched(ERROR, error=_describe(exc))
        raise TryAgain(_describe(exc), kind=ERROR) from None
    except httpx.InvalidURL as exc:
        return Fetched(ERROR, error=_describe(exc))
    except OSError as exc:
        error = deadline.error() if deadline.passed() else _describe(exc)
        raise TryAgain(error, kind=ERROR) from None


def _bad_certificate(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _receive(
    url: str,
    response: httpx.Response,
    inbox: Path,
    *,
    deadline: Deadline,
    max_bytes: int,
    known: Callable[[str], bool],
) -> Fetched:
    """The answer to one attempt: its body spooled into the inbox, or why not."""
    code = response.status_code
    if code == 304:
        return Fetched(NOT_MODIFIED, http_status=304, etag=response.headers.get("ETag"))
    if code >= 400:
        message = f"HTTP {code} {response.reason_phrase}".strip()
        if code == 429 or code >= 500:
            retry_after = _retry_after(response.headers.get("Retry-After"))
            raise TryAgain(message, kind=ERROR, http_status=code, retry_after=retry_after)
        return Fetched(ERROR, error=message, http_status=code)
    validators = {
        "etag": response.headers.get("ETag"),
        "last_modified": response.headers.get("Last-Modified"),
    }
    try:
        expected: int | None = int(response.headers.get("Content-Length", ""))
    except ValueError:
        expected = None
    if expected is not None and expected > max_bytes:
        return Fetched(
            TOO_LARGE, error=f"announced {expected} bytes, the cap is {max_bytes}", http_status=code
        )
    spool = Spool(inbox)
    try:
        chunks = response.iter_bytes(CHUNK)  # decoded: the cap counts what lands on disk
        while True:
            try:
                chunk = next(chunks, b"")
            except httpx.HTTPError as exc:
                # the deadline shuts the socket: what came last may be a false end
                if deadline.passed():
                    error, kind = deadline.error(), ERROR
                elif isinstance(exc, httpx.RemoteProtocolError) and expected is not None:
                    error = f"body ended after {response.num_bytes_downloaded} of {expected} bytes"
                    kind = TRUNCATED
                else:
                    error, kind = _describe(exc), ERROR
                raise TryAgain(error, kind=kind, http_status=code, nbytes=spool.size) from None
            if deadline.passed():
                raise TryAgain(deadline.error(), kind=ERROR, http_status=code, nbytes=spool.size)
            if not chunk:
                break
            spool.write(chunk)
            if spool.size > max_bytes:
                return Fetched(
                    TOO_LARGE,
                    error=f"body passed the cap of {max_bytes} bytes",
                    nbytes=spool.size,
                    http_status=code,
                )
        if code == 204 or spool.looks_empty():
            return Fetched(
                EMPTY,
                nbytes=spool.size,
                error="the source answered with an empty listing",
                http_status=code,
                **validators,
            )
        host = urlsplit(url).hostname or "source"
        ext = extension(urlsplit(url).path, response.headers.get("Content-Type"))
        status, path = spool.commit(host, ext, known)
        return Fetched(status, path=path, nbytes=spool.size, http_status=code, **validators)
    finally:
        spool.discard()


def fetch_http(
    url: str,
    state: dict[str, Any] | None,
    inbox: Path,
    *,
    deadline: Deadline,
    max_bytes: int,
    retries: int,
    backoff: float,
    sleep: Callable[[float], None],
    client: httpx.Client,
    known: Callable[[str], bool],
) -> Fetched:
    schedule = retry_backoff(backoff, MAX_BACKOFF)
    attempt = 0
    while True:
        attempt += 1
        try:
            fetched = _attempt_http(
                url,
                state,
                inbox,
                deadline=deadline,
                max_bytes=max_bytes,
                client=client,
                known=known,
            )
            return replace(fetched, attempts=attempt)
        except TryAgain as failure:
            delay = schedule(attempt - 1)
            if failure.retry_after is not None:
                delay = min(MAX_BACKOFF, max(delay, failure.retry_after))
            if attempt > retries or delay >= deadline.remaining():
                # out of tries, or of time: a retry could not finish before the deadline
                return Fetched(
                    failure.kind,
                    error=failure.reason,
                    nbytes=failure.nbytes,
                    attempts=attempt,
                    http_status=failure.http_status,
                )
            log.info(
                "source failed, retrying",
                extra={"source": url, "error": failure.reason, "attempt": attempt, "delay": delay},
            )
            sleep(delay)
