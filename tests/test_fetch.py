"""Fetching sources into the inbox, against a real HTTP server on loopback."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from digest.ingest.fetch import FetchResult, fetch_sources
from digest.store.engine import open_store
from digest.store.models import Dump, SourceState

NOW = datetime(2025, 3, 11, 7, 0, tzinfo=UTC)
PAPERS = json.dumps(
    [
        {"paper": {"id": "2503.01234", "title": "Tiny Diffusion", "summary": "We shrink it."}},
        {"paper": {"id": "2503.04321", "title": "Federated Cats", "summary": "Cats, federated."}},
    ]
).encode()


@dataclass
class Reply:
    """What the server answers for one request."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    length: int | None = None  # Content-Length to announce; default: the true length
    send_length: bool = True  # False: no Content-Length, the body ends when the server closes
    delay: float = 0.0
    drip: float = 0.0  # seconds between the bytes of the answer (status line and all)


@dataclass
class Route:
    replies: list[Reply]
    seen: list[dict[str, str]] = field(default_factory=list)

    def next(self) -> Reply:
        # The last reply repeats, so "500 then 200" keeps answering 200.
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


class Server:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = outer.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                route.seen.append(dict(self.headers.items()))
                reply = route.next()
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.drip:
                    head = (
                        f"HTTP/1.1 {reply.status} OK\r\nContent-Length: {len(reply.body)}\r\n\r\n"
                    )
                    with contextlib.suppress(OSError):  # the client hung up: it gave up
                        for byte in head.encode() + reply.body:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(reply.drip)
                    self.close_connection = True
                    return
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if reply.status != 304 and reply.send_length:
                    length = len(reply.body) if reply.length is None else reply.length
                    self.send_header("Content-Length", str(length))
                self.end_headers()
                # The client may have given up first (timeout, size cap).
                with contextlib.suppress(OSError):
                    self.wfile.write(reply.body)
                self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll interval keeps shutdown (and so each test) quick.
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def route(self, path: str, *replies: Reply) -> Route:
        self.routes[path] = Route(list(replies))
        return self.routes[path]


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return open_store(f"sqlite:///{tmp_path / 'digest.db'}")


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    return tmp_path / "inbox"


class Sleeps(list[float]):
    """A recording stand-in for time.sleep."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


Fetch = Callable[..., list[FetchResult]]


@pytest.fixture
def fetch(inbox: Path, engine: Engine) -> Fetch:
    def run(urls: list[str], **options: object) -> list[FetchResult]:
        settings: dict[str, object] = {
            "now": NOW,
            "timeout": 5.0,
            "max_bytes": 10_000,
            "sleep": Sleeps(),
            # No proxies: a proxy set in the environment must not swallow requests to loopback.
            "proxies": {},
        }
        settings.update(options)
        return fetch_sources(urls, inbox, engine, **settings)  # type: ignore[arg-type]

    return run


def state_of(engine: Engine, url: str) -> dict[str, object]:
    table = SourceState.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        row = conn.execute(sa.select(table).where(table.c.url == url)).one()
    return dict(row._mapping)


def visible(inbox: Path) -> list[str]:
    return sorted(p.name for p in inbox.iterdir() if not p.name.startswith("."))


def test_ok_saves_the_body_atomically_and_records_it(
    server: Server, fetch: Fetch, engine: Engine, inbox: Path
) -> None:
    server.route(
        "/api/daily_papers",
        Reply(body=PAPERS, headers={"Content-Type": "application/json", "ETag": '"v1"'}),
    )
    url = server.url("/api/daily_papers")
    [result] = fetch([url])
    assert result.status == "ok" and result.new
    assert result.path is not None and result.path.read_bytes() == PAPERS
    assert result.path.name.startswith("127.0.0.1-") and result.path.suffix == ".json"
    assert sorted(p.name for p in inbox.iterdir()) == [result.path.name]  # no temp file left
    state = state_of(engine, url)
    assert state["last_status"] == "ok"
    assert state["etag"] == '"v1"'
    assert state["bytes"] == len(PAPERS)
    assert state["last_new_at"] == NOW


def test_a_gzipped_answer_is_saved_decoded(server: Server, fetch: Fetch) -> None:
    packed = gzip.compress(PAPERS)
    route = server.route(
        "/packed", Reply(body=packed, headers={"Content-Encoding": "gzip", "ETag": '"z"'})
    )
    [result] = fetch([server.url("/packed")])
    assert "gzip" in route.seen[0]["Accept-Encoding"]
    assert result.status == "ok" and result.path is not None
    assert result.path.read_bytes() == PAPERS


def test_304_sends_validators_and_does_not_look_new(
    server: Server, fetch: Fetch, engine: Engine, inbox: Path
) -> None:
    headers = {"ETag": '"v1"', "Last-Modified": "Tue, 11 Mar 2025 06:00:00 GMT"}
    route = server.route("/feed", Reply(body=PAPERS, headers=headers), Reply(status=304))
    url = server.url("/feed")
    assert fetch([url])[0].status == "ok"
    later = NOW + timedelta(hours=1)
    [again] = fetch([url], now=later)
    assert again.status == "not-modified" and not again.new and again.path is None
    assert "If-None-Match" not in route.seen[0]
    assert route.seen[1]["If-None-Match"] == '"v1"'
    assert route.seen[1]["If-Modified-Since"] == headers["Last-Modified"]
    state = state_of(engine, url)
    assert state["last_status"] == "not-modified"
    assert state["last_new_at"] == NOW  # still the first fetch
    assert state["last_fetch_at"] == later
    assert len(visible(inbox)) == 1


def test_5xx_is_retried_with_growing_back_off(server: Server, fetch: Fetch) -> None:
    server.route("/flaky", Reply(status=500), Reply(status=503), Reply(body=PAPERS))
    sleeps = Sleeps()
    [result] = fetch([server.url("/flaky")], sleep=sleeps, backoff=1.5)
    assert result.status == "ok" and result.attempts == 3
    assert sleeps == [1.5, 3.0]


def test_5xx_that_persists_is_an_error_after_the_retries(
    server: Server, fetch: Fetch, engine: Engine
) -> None:
    route = server.route("/down", Reply(status=502))
    [result] = fetch([server.url("/down")], retries=2)
    assert result.status == "error" and result.attempts == 3 and len(route.seen) == 3
    assert result.error is not None and "502" in result.error
    assert state_of(engine, server.url("/down"))["last_new_at"] is None


def test_4xx_is_not_retried(server: Server, fetch: Fetch) -> None:
    [result] = fetch([server.url("/missing")])
    assert result.status == "error" and result.attempts == 1 and result.http_status == 404


def test_slow_answer_times_out(server: Server, fetch: Fetch, engine: Engine) -> None:
    server.route("/slow", Reply(body=PAPERS, delay=2.0))
    started = time.monotonic()
    [result] = fetch([server.url("/slow")], timeout=0.2, retries=1)
    assert time.monotonic() - started < 1.0
    # the timeout is the source's whole deadline: no time is left for a retry
    assert result.status == "error" and result.attempts == 1
    assert result.error == "timed out after 0.2s"
    assert state_of(engine, server.url("/slow"))["last_status"] == "error"


@pytest.mark.parametrize("body", [PAPERS, b"x" * 5])
def test_a_dripping_server_is_cut_off_at_the_deadline(
    server: Server, fetch: Fetch, engine: Engine, inbox: Path, body: bytes
) -> None:
    # A byte every 0.1 s: each read succeeds, so only a deadline for the whole source holds.
    # The short body drips its headers slower than the deadline allows too.
    server.route("/drip", Reply(body=body, drip=0.1))
    started = time.monotonic()
    [result] = fetch([server.url("/drip")], timeout=1.0, retries=3, sleep=time.sleep)
    took = time.monotonic() - started
    assert 1.0 <= took < 1.5, took
    assert result.status == "error" and result.error == "timed out after 1s"
    assert result.attempts == 1
    assert not inbox.exists() or list(inbox.iterdir()) == []  # no .part file left behind
    assert state_of(engine, server.url("/drip"))["last_status"] == "error"


def test_back_off_never_sleeps_past_the_deadline(server: Server, fetch: Fetch) -> None:
    server.route("/busy", Reply(status=503, headers={"Retry-After": "120"}))
    sleeps = Sleeps()
    [result] = fetch([server.url("/busy")], timeout=5.0, retries=3, sleep=sleeps)
    assert result.status == "error" and "503" in (result.error or "")
    assert sleeps == []  # two minutes' wait would pass the deadline: give up now


def test_truncated_body_is_not_saved(
    server: Server, fetch: Fetch, engine: Engine, inbox: Path
) -> None:
    server.route("/cut", Reply(body=PAPERS[:40], length=len(PAPERS)))
    [result] = fetch([server.url("/cut")], retries=1)
    assert result.status == "truncated" and result.attempts == 2
    assert result.error == f"body ended after 40 of {len(PAPERS)} bytes"
    assert not inbox.exists() or list(inbox.iterdir()) == []
    state = state_of(engine, server.url("/cut"))
    assert state["last_status"] == "truncated" and state["last_new_at"] is None


def test_too_large_body_is_refused(server: Server, fetch: Fetch, inbox: Path) -> None:
    server.route("/announced", Reply(body=b"x" * 5000))
    # Without a Content-Length the cap is enforced while streaming.
    server.route("/streamed", Reply(body=b"[" + b"1," * 100_000 + b"1]", send_length=False))
    results = fetch([server.url("/announced"), server.url("/streamed")], max_bytes=1000)
    assert [r.status for r in results] == ["too-large", "too-large"]
    assert [(r.error or "").split()[0] for r in results] == ["announced", "body"]
    assert not inbox.exists() or list(inbox.iterdir()) == []


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"  \n",
        b"[]",
        b" [ ]\n",
        b'<?xml version="1.0"?><rss><channel><title>cs</title></channel></rss>',
    ],
)
def test_empty_listing_is_reported_not_saved(
    server: Server, fetch: Fetch, engine: Engine, inbox: Path, body: bytes
) -> None:
    server.route("/empty", Reply(body=body, headers={"ETag": '"e"'}))
    [result] = fetch([server.url("/empty")])
    assert result.status == "empty" and result.path is None
    assert not inbox.exists() or visible(inbox) == []
    state = state_of(engine, server.url("/empty"))
    assert state["last_status"] == "empty" and state["last_new_at"] is None


def test_a_feed_with_items_is_not_empty(server: Server, fetch: Fetch) -> None:
    body = b'<?xml version="1.0"?><feed><entry><title>A</title></entry></feed>'
    server.route("/atom", Reply(body=body, headers={"Content-Type": "application/atom+xml"}))
    [result] = fetch([server.url("/atom")])
    assert result.status == "ok" and result.path is not None and result.path.suffix == ".xml"


def test_sources_are_not_refetched_within_the_interval(server: Server, fetch: Fetch) -> None:
    route = server.route("/feed", Reply(body=PAPERS))
    url = server.url("/feed")
    fetch([url])
    [soon] = fetch([url], now=NOW + timedelta(minutes=2), min_interval=timedelta(minutes=5))
    assert soon.status == "skipped" and len(route.seen) == 1
    [later] = fetch([url], now=NOW + timedelta(minutes=6), min_interval=timedelta(minutes=5))
    assert later.status == "not-modified" and len(route.seen) == 2  # same bytes, same file


def test_same_bytes_already_ingested_are_not_new(
    server: Server, fetch: Fetch, engine: Engine, inbox: Path, tmp_path: Path
) -> None:
    server.route("/no-validators", Reply(body=PAPERS))  # 200 with the same body every time
    url = server.url("/no-validators")
    [first] = fetch([url])
    assert first.path is not None
    # What ingest does: record the dump by its sha256 and move the file out of the way.
    with engine.begin() as conn:
        conn.execute(
            sa.insert(Dump.__table__),  # type: ignore[attr-defined]
            {"sha256": hashlib.sha256(PAPERS).hexdigest(), "name": "x", "ingested_at": NOW},
        )
    first.path.rename(tmp_path / "elsewhere.json")
    [again] = fetch([url], now=NOW + timedelta(hours=1))
    assert again.status == "not-modified" and again.path is None
    assert not any(inbox.iterdir())
    assert state_of(engine, url)["last_new_at"] == NOW


def test_one_failing_source_does_not_stop_the_others(server: Server, fetch: Fetch) -> None:
    server.route("/good", Reply(body=PAPERS))
    results = fetch(["gopher://old.example/x", server.url("/good")])
    assert [r.status for r in results] == ["error", "ok"]


def test_local_files_are_copied_when_changed(
    tmp_path: Path, fetch: Fetch, engine: Engine, inbox: Path
) -> None:
    source = tmp_path / "hf dump.txt"
    source.write_text("Paper one\nAn abstract that is long enough.\n")
    [first] = fetch([source.as_uri()])
    assert first.status == "ok" and first.path is not None
    assert first.path.read_text() == source.read_text()
    assert first.path.name.startswith("hf-dump-") and first.path.suffix == ".txt"
    [unchanged] = fetch([str(source)], now=NOW + timedelta(seconds=1))
    assert unchanged.status == "not-modified"  # its own source entry, but the content is there
    [again] = fetch([source.as_uri()], now=NOW + timedelta(seconds=2))
    assert again.status == "not-modified"
    source.write_text("Paper two\nAnother abstract.\n")
    [changed] = fetch([source.as_uri()], now=NOW + timedelta(seconds=3))
    assert changed.status == "ok" and len(visible(inbox)) == 2
    [missing] = fetch([(tmp_path / "gone.txt").as_uri()])
    assert missing.status == "error"


def test_secrets_in_errors_are_not_stored(server: Server, fetch: Fetch, engine: Engine) -> None:
    url = server.url("/nope?token=s3cret")
    server.route("/nope?token=s3cret", Reply(status=401, body=b""))
    [result] = fetch([url])
    assert result.status == "error"
    assert "s3cret" not in str(state_of(engine, url)["last_error"])


@contextlib.contextmanager
def hanging_servers(count: int) -> Iterator[list[str]]:
    """``count`` servers on loopback that accept a connection, read the request and never
    answer: each source that names one hangs until the fetch gives up on it."""
    listeners = []
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept(listener: socket.socket) -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)  # kept open, never answered

    for _ in range(count):
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)
        threading.Thread(target=accept, args=(listener,), daemon=True).start()
    try:
        yield [f"http://127.0.0.1:{sock.getsockname()[1]}/papers.json" for sock in listeners]
    finally:
        stop.set()
        for sock in [*listeners, *accepted]:
            sock.close()


def test_hanging_sources_cost_one_timeout_not_one_each(
    server: Server, fetch: Fetch, engine: Engine
) -> None:
    server.route("/papers.json", Reply(body=PAPERS))
    with hanging_servers(4) as hanging:
        started = time.monotonic()
        results = fetch([*hanging, server.url("/papers.json")], timeout=1.0, sleep=time.sleep)
        took = time.monotonic() - started
    assert 1.0 <= took < 1.8, took  # one after another, four hanging sources took 4 s
    assert [r.status for r in results] == ["error"] * 4 + ["ok"]  # in the order listed
    assert {r.error for r in results[:4]} == {"timed out after 1s"}
    assert state_of(engine, hanging[0])["last_status"] == "error"


def test_sources_that_wait_for_a_worker_share_the_deadline(fetch: Fetch) -> None:
    with hanging_servers(3) as hanging:
        started = time.monotonic()
        results = fetch(hanging, timeout=0.5, parallel=2, sleep=time.sleep)
        took = time.monotonic() - started
    assert took < 1.0, took  # the third never started: its time was up when a worker came free
    assert [(r.status, r.error) for r in results] == [("error", "timed out after 0.5s")] * 3
    assert results[2].attempts == 0
