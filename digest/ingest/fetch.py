"""Fetching listing sources (URLs, ``file://`` URLs, local paths) into the inbox.

Each source is fetched over httpx with a conditional GET (the ETag and Last-Modified of
the last good answer), gzip, retries with exponential back-off on 5xx, 429 and dropped
connections, and a size cap enforced while streaming. The sources are fetched at
the same time, in a few threads, and ``timeout`` is one deadline for the whole
fetch, attempts and back-off included: when it passes, every socket in use is
shut down, so neither a server dripping a byte a second nor ten that never answer
can hold the run (and its lock) longer. A good body is
written to a dot-named temporary file in the inbox and renamed into place, so
ingest (which skips dotfiles) never reads half a file.

A 304, an empty listing and a truncated body are outcomes to report, not
successes: each is recorded in ``SourceState`` (``last_status``) and returned,
and ``last_new_at`` moves only when a new body was saved. That way ``status``
can tell "nothing new upstream" from "we got new papers".
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import importlib.metadata
import logging
import os
import re
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

import httpx
from sqlalchemy.engine import Engine

from digest.clock import as_utc
from digest.files import make_folder
from digest.logs import redact
from digest.retry import TryAgain
from digest.retry import backoff as retry_backoff
from digest.store import sources

log = logging.getLogger("digest.fetch")
# httpx logs every request with its whole URL, query secrets included: only its warnings.
logging.getLogger("httpx").setLevel(logging.WARNING)

OK = "ok"
NOT_MODIFIED = "not-modified"
EMPTY = "empty"
TRUNCATED = "truncated"
ERROR = "error"
TOO_LARGE = "too-large"
SKIPPED = "skipped"  # returned only: a skip changes nothing in SourceState

DEFAULT_MIN_INTERVAL = timedelta(minutes=5)
DEFAULT_BACKOFF = 2.0  # seconds before the first retry; doubled for each further one
MAX_BACKOFF = 300.0
PARALLEL = 8  # sources fetched at once: enough for a site's few, polite to a shared host
CHUNK = 64 * 1024
# Bodies up to this size are kept in memory to check for an empty listing; a real listing
# with papers in it is larger, and an empty feed or "[]" is far smaller.
EMPTY_PROBE = 64 * 1024
try:
    _VERSION = importlib.metadata.version("digest")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    _VERSION = "dev"
USER_AGENT = f"digest/{_VERSION} (self-hosted research paper digest)"

_EXT_BY_TYPE = {
    "application/json": "json",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/atom+xml": "xml",
    "application/rss+xml": "xml",
    "application/xml": "xml",
    "text/xml": "xml",
    "text/plain": "txt",
    "text/html": "html",
}
_KNOWN_EXT = {"json", "jsonl", "xml", "atom", "rss", "txt", "html", "md"}
_EMPTY_BODY = re.compile(rb"\s*(?:\[\s*\]|\{\s*\}|null)?\s*")
_XML_HEAD = re.compile(rb"\s*(?:\xef\xbb\xbf)?\s*<(?:\?xml|rss|feed|rdf:RDF)\b")
_XML_ITEM = re.compile(rb"<(?:[\w-]+:)?(?:item|entry)[\s>/]")


@dataclass(frozen=True)
class FetchResult:
    """The outcome for one source: ``status`` is one of the statuses above, ``skipped`` included."""

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


@dataclass(frozen=True)
class _Fetched:
    status: str
    path: Path | None = None
    nbytes: int = 0
    error: str | None = None
    attempts: int = 1
    http_status: int | None = None
    etag: str | None = None
    last_modified: str | None = None


class _Deadline:
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


def _client(proxies: dict[str, str] | None) -> httpx.Client:
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


def _looks_empty(head: bytes) -> bool:
    """An empty listing: nothing, blanks, ``[]``/``{}``/``null``, or a feed with no item."""
    if _EMPTY_BODY.fullmatch(head):
        return True
    # arXiv publishes a well-formed feed with no items on days without announcements.
    return bool(_XML_HEAD.match(head)) and not _XML_ITEM.search(head)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-.") or "source"


def _extension(path: str, content_type: str | None) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix in _KNOWN_EXT:
        return suffix
    if content_type:
        return _EXT_BY_TYPE.get(content_type.split(";")[0].strip().lower(), "txt")
    return "txt"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return redact(str(exc)) or type(exc).__name__


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:  # an HTTP date: fall back to our own back-off
        return None


class _Spool:
    """A dot-named temporary file in the inbox that becomes ``<name>-<sha256[:12]>.<ext>``."""

    def __init__(self, inbox: Path) -> None:
        make_folder(inbox)  # whatever the umask: nobody else may drop a listing in
        self.inbox = inbox
        fd, name = tempfile.mkstemp(dir=inbox, prefix=".fetch-", suffix=".part")
        self.path = Path(name)
        self.file: IO[bytes] = os.fdopen(fd, "wb")
        self.sha = hashlib.sha256()
        self.size = 0
        self.head = bytearray()
        self.renamed = False

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self.sha.update(chunk)
        self.size += len(chunk)
        if len(self.head) <= EMPTY_PROBE:
            self.head += chunk[: EMPTY_PROBE + 1 - len(self.head)]

    def looks_empty(self) -> bool:
        return self.size <= EMPTY_PROBE and _looks_empty(bytes(self.head))

    def commit(self, stem: str, ext: str, known: Callable[[str], bool]) -> tuple[str, Path | None]:
        """Rename into place, or ``not-modified`` when these bytes were fetched or ingested before.

        Servers without validators answer 200 with the same listing all day; that must not
        count as new.
        """
        self.file.flush()
        os.fsync(self.file.fileno())  # the rename must not publish a file whose data is not on disk
        self.file.close()
        sha = self.sha.hexdigest()
        final = self.inbox / f"{_slug(stem)}-{sha[:12]}.{ext}"
        if final.exists() or known(sha):
            self.discard()
            return NOT_MODIFIED, None
        os.replace(self.path, final)
        self.renamed = True
        return OK, final

    def discard(self) -> None:
        self.file.close()
        if not self.renamed:
            self.path.unlink(missing_ok=True)


def _attempt_http(
    url: str,
    state: dict[str, Any] | None,
    inbox: Path,
    *,
    deadline: _Deadline,
    max_bytes: int,
    client: httpx.Client,
    known: Callable[[str], bool],
) -> _Fetched:
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
            return _Fetched(ERROR, error=_describe(exc))  # will not fix itself in a second
        if isinstance(exc, httpx.UnsupportedProtocol):
            return _Fetched(ERROR, error=_describe(exc))
        raise TryAgain(_describe(exc), kind=ERROR) from None
    except httpx.InvalidURL as exc:
        return _Fetched(ERROR, error=_describe(exc))
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
    deadline: _Deadline,
    max_bytes: int,
    known: Callable[[str], bool],
) -> _Fetched:
    """The answer to one attempt: its body spooled into the inbox, or why not."""
    code = response.status_code
    if code == 304:
        return _Fetched(NOT_MODIFIED, http_status=304, etag=response.headers.get("ETag"))
    if code >= 400:
        message = f"HTTP {code} {response.reason_phrase}".strip()
        if code == 429 or code >= 500:
            retry_after = _retry_after(response.headers.get("Retry-After"))
            raise TryAgain(message, kind=ERROR, http_status=code, retry_after=retry_after)
        return _Fetched(ERROR, error=message, http_status=code)
    validators = {
        "etag": response.headers.get("ETag"),
        "last_modified": response.headers.get("Last-Modified"),
    }
    try:
        expected: int | None = int(response.headers.get("Content-Length", ""))
    except ValueError:
        expected = None
    if expected is not None and expected > max_bytes:
        return _Fetched(
            TOO_LARGE, error=f"announced {expected} bytes, the cap is {max_bytes}", http_status=code
        )
    spool = _Spool(inbox)
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
                return _Fetched(
                    TOO_LARGE,
                    error=f"body passed the cap of {max_bytes} bytes",
                    nbytes=spool.size,
                    http_status=code,
                )
        if code == 204 or spool.looks_empty():
            return _Fetched(
                EMPTY,
                nbytes=spool.size,
                error="the source answered with an empty listing",
                http_status=code,
                **validators,
            )
        host = urlsplit(url).hostname or "source"
        ext = _extension(urlsplit(url).path, response.headers.get("Content-Type"))
        status, path = spool.commit(host, ext, known)
        return _Fetched(status, path=path, nbytes=spool.size, http_status=code, **validators)
    finally:
        spool.discard()


def _fetch_http(
    url: str,
    state: dict[str, Any] | None,
    inbox: Path,
    *,
    deadline: _Deadline,
    max_bytes: int,
    retries: int,
    backoff: float,
    sleep: Callable[[float], None],
    client: httpx.Client,
    known: Callable[[str], bool],
) -> _Fetched:
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
                return _Fetched(
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
) -> _Fetched:
    try:
        info = path.stat()
    except OSError as exc:
        return _Fetched(ERROR, error=f"cannot read {path.name}: {exc.strerror or exc}")
    if not path.is_file():
        return _Fetched(ERROR, error=f"{path.name} is not a file")
    # Size and modification time stand in for an ETag: unchanged means nothing to copy.
    validator = f'"{info.st_size}-{info.st_mtime_ns}"'
    if state and state.get("etag") == validator:
        return _Fetched(NOT_MODIFIED, etag=validator)
    if info.st_size > max_bytes:
        return _Fetched(TOO_LARGE, error=f"{info.st_size} bytes, the cap is {max_bytes}")
    spool = _Spool(inbox)
    try:
        with path.open("rb") as source:
            while chunk := source.read(CHUNK):
                spool.write(chunk)
        if spool.looks_empty():
            return _Fetched(
                EMPTY, nbytes=spool.size, error="the file is an empty listing", etag=validator
            )
        ext = path.suffix.lower().lstrip(".")
        status, saved = spool.commit(path.stem, ext if ext in _KNOWN_EXT else "txt", known)
        return _Fetched(status, path=saved, nbytes=spool.size, etag=validator)
    except OSError as exc:
        return _Fetched(ERROR, error=f"cannot copy {path.name}: {exc.strerror or exc}")
    finally:
        spool.discard()


def _save_state(
    engine: Engine, url: str, old: dict[str, Any] | None, fetched: _Fetched, now: datetime
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
    deadline = _Deadline(timeout)
    try:
        with (
            _client(proxies) as client,
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
    deadline: _Deadline,
    max_bytes: int,
    retries: int,
    backoff: float,
    min_interval: timedelta,
    sleep: Callable[[float], None],
    client: httpx.Client,
    known: Callable[[str], bool],
) -> _Fetched | None:
    """One source (in a worker thread); None when it was fetched too recently to ask again."""
    try:
        local = _local_path(url)
    except ValueError as exc:
        return _Fetched(ERROR, error=str(exc))
    if local is not None:
        return _fetch_local(local, state, inbox, max_bytes, known)
    last = state.get("last_fetch_at") if state else None
    if last is not None and now - as_utc(last) < min_interval:
        # Polite: however often polls and runs come, a server hears from us at most once
        # per interval.
        log.debug("source fetched recently, skipped", extra={"source": url})
        return None
    if deadline.passed():  # waited for a free worker until the whole fetch's time was up
        return _Fetched(ERROR, error=deadline.error(), attempts=0)
    return _fetch_http(
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
    engine: Engine, url: str, state: dict[str, Any] | None, fetched: _Fetched | None, now: datetime
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
