"""Several hosts, one database: each digest planned once and sent exactly once.

Against the real command line in separate processes, a real SMTP server on loopback
(which counts what it takes), and a real PostgreSQL (skipped without one, see
``DIGEST_TEST_POSTGRES_URL``), or SQLite where the test says so. Two data folders
sharing one database stand for two hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from digest.deliver.message import MessageBuilder, Sender
from digest.deliver.send import MARK_GROUP, MARKS_UNWRITTEN, Claim, Marks, deliver, outgoing_of
from digest.deliver.transports import RecordingTransport
from digest.errors import DeliveryError, StoreError
from digest.present.views import Links
from digest.service.cycle import free_dead_senders
from digest.service.runlock import hold_run_lock
from digest.service.subscriptions import operator_patch, upsert_subscriber
from digest.store import claims, outbox, unsent
from digest.store.outbox import Planned, record
from digest.store.subscribers import list_subscribers
from tests.conftest import EXAMPLE_B as DUMP_B
from tests.conftest import POSTGRES_URL, Site, drop_database, make_site, open_store
from tests.smtp_server import SMTPServer, start_server
from tests.test_service import PEOPLE, wait_until

READERS = {f"reader{n:02d}@example.org": ["diffus*"] for n in range(24)}
EVERYONE = {**PEOPLE, **READERS}
SENT = sorted(a for a in EVERYONE if a != "nobody@example.org")


@pytest.fixture
def shared_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for the hosts of one test."""
    if not POSTGRES_URL:
        pytest.skip("needs a PostgreSQL server: set DIGEST_TEST_POSTGRES_URL")
    name = f"digest_hosts_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield sa.engine.make_url(POSTGRES_URL).set(database=name).render_as_string(False)
    finally:
        drop_database(admin, name)
        admin.dispose()


@pytest.fixture
def server() -> Iterator[SMTPServer]:
    running = start_server()
    yield running
    running.controller.stop()


def two_hosts(
    tmp_path: Path, server: SMTPServer, monkeypatch: pytest.MonkeyPatch, url: str
) -> tuple[Site, Site]:
    """Two data folders on one database and one mail server, the readers subscribed."""
    hosts = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        site = make_site(tmp_path / name, server, monkeypatch)
        site.env["DIGEST_DATABASE_URL"] = url
        site.env["DIGEST_SCHEDULE"] = "0 0 * * *"  # today's slot has passed: a worker plans
        hosts.append(site)
    monkeypatch.setenv("DIGEST_DATABASE_URL", url)
    hosts[1].subscribe(EVERYONE)
    hosts[0].drop_in_inbox(DUMP_B, "daily.txt")
    return hosts[0], hosts[1]


def received_counts(site: Site) -> Counter[str]:
    received = site.received()
    ids: dict[str, set[str]] = {}
    for rcpt, message in received:
        ids.setdefault(rcpt, set()).add(str(message["Message-ID"]))
    # a repeat, where there is one, is the same message again
    assert all(len(found) == 1 for found in ids.values()), ids
    return Counter(rcpt for rcpt, _ in received)


def exactly_once(site: Site) -> None:
    counts = received_counts(site)
    assert sorted(counts) == SENT
    assert {a: n for a, n in counts.items() if n != 1} == {}


def no_traceback(*outputs: str) -> None:
    for text in outputs:
        assert "Traceback" not in text, text


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("digest:")]
    assert len(lines) == 1, err
    return lines[0]


def terminate(url: str, pattern: str) -> int:
    """End the sessions on ``url``'s database whose application_name matches ``pattern`` (SQL
    LIKE): not those of other tests' databases on the same server."""
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as conn:
            return len(
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE application_name LIKE :p AND pid <> pg_backend_pid()"
                        " AND datname = current_database()"
                    ),
                    {"p": pattern},
                ).all()
            )
    finally:
        admin.dispose()


def sent_by(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT DISTINCT claimed_by FROM digest WHERE status = 'sent'")
            ).all()
    finally:
        engine.dispose()
    return {str(row[0]) for row in rows}


def finish(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


# --- two hosts at once ---------------------------------------------------------------------


def test_hosts_first_opening_an_empty_database_at_once_make_the_schema_once(
    shared_database: str,
) -> None:
    """Every host started at once on a new database: one makes the tables, the others wait
    for it and find them made (before, all but one failed creating the same types)."""
    from digest.store.engine import open_store
    from digest.store.migrations import SCHEMA_VERSION, current_version

    start = threading.Barrier(6)
    faults: list[BaseException] = []
    engines: list[Engine] = []

    def host() -> None:
        start.wait()
        try:
            engines.append(open_store(shared_database))
        except BaseException as exc:  # every fault is the finding
            faults.append(exc)

    threads = [threading.Thread(target=host) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert faults == []
    with engines[0].connect() as conn:
        assert current_version(conn) == SCHEMA_VERSION
        versions = conn.execute(sa.text("SELECT count(*) FROM schema_version")).scalar()
    assert versions == SCHEMA_VERSION  # each migration recorded once
    for engine in engines:
        engine.dispose()


def test_two_hosts_running_the_same_period_at_once_send_each_digest_once(
    tmp_path: Path, server: SMTPServer, monkeypatch: pytest.MonkeyPatch, shared_database: str
) -> None:
    a, b = two_hosts(tmp_path, server, monkeypatch, shared_database)
    b.drop_in_inbox(DUMP_B, "daily.txt")  # both hosts fetched the same listing
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    first, second = a.spawn("run", **pipes), b.spawn("run", **pipes)
    results = [finish(first), finish(second)]
    for code, out, err in results:
        no_traceback(out, err)
        assert code in (0, 75), err  # 75: the other host was running it
    exactly_once(a)
    again = [finish(a.spawn("run", **pipes)), finish(b.spawn("run", **pipes))]
    assert [code for code, _, _ in again] == [0, 0]
    exactly_once(a)


def test_workers_on_two_hosts_share_the_outbox_and_send_each_digest_once(
    tmp_path: Path, server: SMTPServer, monkeypatch: pytest.MonkeyPatch, shared_database: str
) -> None:
    a, b = two_hosts(tmp_path, server, monkeypatch, shared_database)
    server.handler.data_delay = 0.05
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    workers = [
        b.spawn("worker", "--no-plan", "--batch", "3", "--every", "0.2", **pipes),
        a.spawn("worker", "--batch", "3", "--every", "0.2", **pipes),  # a plans, then sends
    ]
    try:
        wait_until(lambda: len(server.handler.received) >= len(SENT), "every digest sent", 60)
        time.sleep(0.5)  # anything sent twice would arrive by now
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        code, out, err = finish(worker)
        no_traceback(out, err)
        assert code == 0, err
    exactly_once(a)
    assert len(sent_by(shared_database)) == 2  # the outbox was shared out, not sent by one


# --- fetching: the planner's job alone -----------------------------------------------------


@contextlib.contextmanager
def listing_source(body: bytes) -> Iterator[tuple[str, list[str]]]:
    """A listing on loopback: its URL, and the paths asked of it, in order."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/daily.txt", asked
    finally:
        server.shutdown()
        server.server_close()


def inbox_files(site: Site) -> list[str]:
    """The files in a host's inbox and its subfolders (processed/, failed/)."""
    inbox = site.data / "inbox"
    found = inbox.rglob("*") if inbox.exists() else []
    return sorted(str(p.relative_to(inbox)) for p in found if p.is_file())


def test_only_the_worker_that_plans_fetches_and_the_other_host_sends_from_its_listing(
    tmp_path: Path, server: SMTPServer, monkeypatch: pytest.MonkeyPatch, shared_database: str
) -> None:
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with listing_source(DUMP_B.read_bytes()) as (url, asked):
        hosts = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            site = make_site(tmp_path / name, server, monkeypatch)
            site.env.update(
                DIGEST_DATABASE_URL=shared_database,
                DIGEST_SCHEDULE="0 0 * * *",  # today's slot has passed: a worker plans
                DIGEST_SOURCES=url,
                NO_PROXY="127.0.0.1",
                no_proxy="127.0.0.1",
            )
            hosts.append(site)
        a, b = hosts
        monkeypatch.setenv("DIGEST_DATABASE_URL", shared_database)
        b.subscribe(EVERYONE)
        engine = sa.create_engine(shared_database, poolclass=sa.pool.NullPool)
        server.handler.data_delay = 0.05
        # Another host's run holds the run lock: neither worker may fetch in the meantime.
        with hold_run_lock(tmp_path, shared_database):
            workers = {
                site.root.name: site.spawn("worker", "--batch", "3", "--every", "0.2", **pipes)
                for site in (a, b)
            }

            def passes_made() -> bool:
                # each has looked at the schedule (and found the lock taken) a few times
                found = claims.senders(engine)
                return len(found) == 2 and all(
                    s.seen_at is not None
                    and s.started_at is not None
                    and s.seen_at - s.started_at >= timedelta(seconds=1)
                    for s in found
                )

            wait_until(passes_made, "both workers to make a few passes", 30)
            assert asked == []
            assert inbox_files(a) == inbox_files(b) == []
        try:
            wait_until(lambda: len(server.handler.received) >= len(SENT), "every digest sent", 60)
            time.sleep(0.5)  # anything sent twice would arrive by now
        finally:
            for worker in workers.values():
                worker.send_signal(signal.SIGTERM)
        for worker in workers.values():
            code, out, err = finish(worker)
            no_traceback(out, err)
            assert code == 0, err
        engine.dispose()
    exactly_once(a)
    assert asked == ["/daily.txt"]  # one planner, one fetch
    fetched = {site.root.name: inbox_files(site) for site in (a, b)}
    planner = "a" if fetched["a"] else "b"
    other = "b" if planner == "a" else "a"
    assert fetched[other] == []
    [listing] = fetched[planner]
    assert listing.startswith("processed/")  # ingested before the lock was let go
    # the host that fetched nothing sent digests planned from that listing
    pids = {name.split(":")[1] for name in sent_by(shared_database)}
    assert str(workers[other].pid) in pids


# --- the run lock's connection ended ----------------------------------------------------


def test_a_run_whose_lock_connection_is_ended_stops_and_the_next_run_finishes(
    tmp_path: Path, server: SMTPServer, monkeypatch: pytest.MonkeyPatch, shared_database: str
) -> None:
    a, b = two_hosts(tmp_path, server, monkeypatch, shared_database)
    server.handler.data_delay = 0.2
    run = a.spawn("run", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until(lambda: server.handler.data_commands >= 2, "the run to start sending")
    assert terminate(shared_database, "digest run pid=%") == 1
    code, out, err = finish(run)
    no_traceback(out, err)
    assert code == 75, err
    assert "run lock was lost" in one_line(err)
    assert len(server.handler.received) < len(SENT)  # it stopped, not went on unguarded
    later = b.process("run")
    assert later.code == 0, later.err
    exactly_once(a)


def test_a_senders_connection_ended_mid_send_sends_nothing_twice(
    tmp_path: Path, server: SMTPServer, monkeypatch: pytest.MonkeyPatch, shared_database: str
) -> None:
    a, b = two_hosts(tmp_path, server, monkeypatch, shared_database)
    server.handler.data_delay = 0.1
    run = a.spawn("run", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until(lambda: server.handler.data_commands >= 3, "the run to start sending")
    assert terminate(shared_database, f"digest pid={run.pid}") >= 1
    code, out, err = finish(run)
    no_traceback(out, err)
    if code != 0:  # the connection was ended inside a statement: told in one line
        assert code == 1 and "database" in one_line(err), err
    later = b.process("run")
    assert later.code == 0, later.err
    exactly_once(a)


def test_idle_session_timeout_ends_no_run_and_sends_nothing_twice(
    tmp_path: Path, server: SMTPServer, monkeypatch: pytest.MonkeyPatch, shared_database: str
) -> None:
    a, b = two_hosts(tmp_path, server, monkeypatch, shared_database)
    # every session of the run is ended after 1.5 s idle: its pooled connections between
    # messages (2 s each), and the run lock's own if it were ever left idle
    a.env["PGOPTIONS"] = "-c idle_session_timeout=1500"
    server.handler.data_delay = 2.0
    a.env["DIGEST_SMTP_CONNECTIONS"] = "8"
    code, out, err = finish(a.spawn("run", stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    no_traceback(out, err)
    assert code in (0, 75), err
    if code == 75:
        assert "run lock was lost" in one_line(err)
        assert b.process("run").code == 0
    exactly_once(a)


# --- a sender killed ------------------------------------------------------------------------


def test_a_worker_killed_mid_batch_leaves_the_rest_to_another_with_one_repeat_at_most(
    tmp_path: Path, server: SMTPServer, monkeypatch: pytest.MonkeyPatch, shared_database: str
) -> None:
    a, b = two_hosts(tmp_path, server, monkeypatch, shared_database)
    handler = server.handler
    handler.data_gate = threading.Event()
    killed = a.spawn(
        "worker",
        "--lease",
        "2",
        "--every",
        "0.2",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: handler.data_commands >= 1, "the worker to plan and start sending")
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=10)
    finally:
        handler.data_gate.set()
        if killed.poll() is None:
            killed.kill()
    time.sleep(0.5)  # the server finishes (or drops) what was in flight when it died
    in_flight = {rcpt for rcpt, _ in server.handler.received}
    assert len(in_flight) <= 2  # one message per connection
    other = b.spawn(
        "worker", "--no-plan", "--every", "0.2", stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_until(lambda: len(received_counts(a)) >= len(SENT), "the other worker to send")
        time.sleep(0.5)
    finally:
        other.send_signal(signal.SIGTERM)
    code, out, err = finish(other)
    no_traceback(out, err)
    assert code == 0, err
    counts = received_counts(a)  # a repeat carries the same Message-ID
    assert sorted(counts) == SENT
    assert {r for r, n in counts.items() if n > 1} <= in_flight


# --- a slow mail server: leases renewed while sending -----------------------------------

SLOW_READERS = {f"slow{n}@example.org": ["diffus*"] for n in range(8)}


def test_senders_keep_their_claims_through_a_batch_longer_than_their_lease(
    tmp_path: Path, server: SMTPServer, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    site = make_site(tmp_path, server, monkeypatch)
    site.env["DIGEST_DATABASE_URL"] = database_url
    site.env["DIGEST_SCHEDULE"] = "0 0 * * *"  # today's slot has passed: the first worker plans
    monkeypatch.setenv("DIGEST_DATABASE_URL", database_url)
    site.subscribe(SLOW_READERS)
    site.drop_in_inbox(DUMP_B, "daily.txt")
    # each message takes longer than a whole lease: only renewals between marks keep a claim
    server.handler.data_delay = 1.5
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    lease = ("--lease", "1", "--every", "0.2", "--batch", "4")
    workers = [
        site.spawn("worker", *lease, **pipes),
        site.spawn("worker", "--no-plan", *lease, **pipes),
    ]
    try:
        wait_until(
            lambda: len(server.handler.received) >= len(SLOW_READERS), "every digest sent", 60
        )
        time.sleep(2)  # a digest taken from a sender mid-send would go out again by now
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
    errors = []
    for worker in workers:
        code, out, err = finish(worker)
        no_traceback(out, err)
        assert code == 0, err
        errors.append(err)
    assert not [line for err in errors for line in err.splitlines() if "claim lost" in line]
    counts = received_counts(site)
    assert sorted(counts) == sorted(SLOW_READERS)
    assert {a: n for a, n in counts.items() if n != 1} == {}


# --- one sending pace for every sender ---------------------------------------------------

RATE = 8  # messages a second, for all the senders together


def test_three_senders_together_send_no_faster_than_the_sites_rate(
    tmp_path: Path, server: SMTPServer, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    site = make_site(tmp_path, server, monkeypatch)
    site.env.update(
        DIGEST_DATABASE_URL=database_url,
        DIGEST_SCHEDULE="0 0 * * *",  # today's slot has passed: the first worker plans
        DIGEST_SMTP_RATE=str(RATE),
    )
    monkeypatch.setenv("DIGEST_DATABASE_URL", database_url)
    site.subscribe(EVERYONE)
    site.drop_in_inbox(DUMP_B, "daily.txt")
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    often = ("--every", "0.1", "--batch", "2")
    workers = [site.spawn("worker", *often, **pipes)]
    workers += [site.spawn("worker", "--no-plan", *often, **pipes) for _ in range(2)]
    try:
        wait_until(lambda: len(server.handler.received) >= len(SENT), "every digest sent", 60)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        code, out, err = finish(worker)
        no_traceback(out, err)
        assert code == 0, err
    exactly_once(site)
    assert len(sent_by(database_url)) == 3  # each of the three sent some
    times = sorted(item.at for item in server.handler.received)
    # the rate is the site's, not each process's: N messages take (N - 1) / RATE seconds at
    # least, less how late the first arrived after its turn (it waited for a connection: a
    # name lookup, EHLO), allowed half a second; at RATE each, three would take a third
    late = RATE * 0.5
    assert len(times) <= RATE * (times[-1] - times[0]) + 1 + late, (len(times), times)


# --- SQLite: one file, two processes -----------------------------------------------------


def test_on_sqlite_a_run_and_a_worker_send_each_digest_once(
    tmp_path: Path, server: SMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(tmp_path, server, monkeypatch)
    site.subscribe(EVERYONE)
    site.drop_in_inbox(DUMP_B, "daily.txt")
    server.handler.data_delay = 0.05
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    worker = site.spawn("worker", "--no-plan", "--batch", "3", "--every", "0.2", **pipes)
    try:
        code, out, err = finish(site.spawn("run", **pipes))
        no_traceback(out, err)
        assert code == 0, err
        wait_until(lambda: len(server.handler.received) >= len(SENT), "every digest sent")
        time.sleep(0.5)
    finally:
        worker.send_signal(signal.SIGTERM)
    code, out, err = finish(worker)
    no_traceback(out, err)
    assert code == 0, err
    exactly_once(site)


# --- the claims themselves ------------------------------------------------------------------

T0 = datetime(2025, 3, 12, 7, 0, tzinfo=UTC)


def _outbox_of(engine: Engine, n: int) -> list[int]:
    for i in range(n):
        upsert_subscriber(engine, operator_patch(f"r{i}@example.org", ["speech"]), now=T0)
    subscribers = list_subscribers(engine)
    with engine.begin() as conn:
        record(
            conn,
            [Planned(s.id or 0, "pending", f"<{s.id}@x>", 0, []) for s in subscribers],
            period=date(2025, 3, 12),
            now=T0,
            run_id=None,
        )
    return [s.id or 0 for s in subscribers]


def test_a_claim_is_the_senders_alone_until_its_lease_runs_out(engine: Engine) -> None:
    _outbox_of(engine, 4)
    lease = timedelta(seconds=60)
    mine = claims.claim(engine, "host-a:1:aa", now=T0, lease=lease, limit=3)
    theirs = claims.claim(engine, "host-b:2:bb", now=T0, lease=lease, limit=10)
    assert len(mine) == 3 and len(theirs) == 1
    assert not {r.digest_id for r in mine} & {r.digest_id for r in theirs}
    # host-a dies: nothing of its is free before the lease runs out, all of it after
    assert claims.claim(engine, "host-c:3:cc", now=T0 + lease / 2, lease=lease, limit=10) == []
    claims.heartbeat(engine, "host-b:2:bb", at=T0 + lease * 0.9, lease=lease)  # b lives on
    taken = claims.claim(engine, "host-c:3:cc", now=T0 + lease * 1.5, lease=lease, limit=10)
    assert sorted(r.digest_id for r in taken) == sorted(r.digest_id for r in mine)
    # host-a comes back and marks what it sent: its claim is lost, nothing is marked twice
    ids = [r.digest_id for r in mine]
    assert claims.mark_sent(engine, "host-a:1:aa", ids, at=T0 + lease * 2, lease=lease) == set()
    assert claims.mark_sent(engine, "host-c:3:cc", ids, at=T0 + lease * 2, lease=lease) == set(ids)
    # a mark written again (its commit's answer lost) still finds the rows its own
    assert claims.mark_sent(engine, "host-c:3:cc", ids, at=T0 + lease * 2, lease=lease) == set(ids)
    with engine.connect() as conn:
        attempts = conn.execute(
            sa.text("SELECT attempts FROM digest WHERE status = 'sent'")
        ).scalars()
        assert sorted(attempts) == [1, 1, 1]


def _leases(engine: Engine) -> dict[int, datetime]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT id, claimed_until FROM digest WHERE status = 'sending'")
        )
        return {int(ident): until for ident, until in rows}


def test_a_mark_renews_the_other_claims_only_when_asked(engine: Engine) -> None:
    _outbox_of(engine, 4)
    lease = timedelta(seconds=60)
    held = claims.claim(engine, "host-a:1:aa", now=T0, lease=lease, limit=4)
    first, *rest = [r.digest_id for r in held]
    before = _leases(engine)
    later = T0 + lease / 2
    assert claims.mark_sent(engine, "host-a:1:aa", [first], at=later, lease=lease, renew=False)
    assert _leases(engine) == {i: before[i] for i in rest}
    assert claims.mark_sent(engine, "host-a:1:aa", [rest[0]], at=later, lease=lease)
    assert set(_leases(engine).values()) != {before[rest[1]]}  # renewed, as a heartbeat does


def test_a_passs_marks_leave_the_leases_to_the_heartbeat(engine: Engine) -> None:
    """A group of marks used to rewrite every digest the sender held (a batch) for every
    few sent; the heartbeat renews them."""
    _outbox_of(engine, 5)
    lease = timedelta(seconds=60)
    held = [r.digest_id for r in claims.claim(engine, "host-a:1:aa", now=T0, lease=lease, limit=5)]
    before = _leases(engine)
    marks = Marks(engine, Claim("host-a:1:aa", lease), lambda: T0 + lease / 2)

    async def mark_two() -> list[bool]:
        handed = []
        for digest_id in held[:2]:
            await marks.room()
            handed.append(marks.hand(digest_id))
        await marks.flush()
        return [done.result() for done in handed]

    assert asyncio.run(mark_two()) == [True, True]
    assert _leases(engine) == {i: before[i] for i in held[2:]}


def _sending(engine: Engine, n: int, sender: str = "host-a:1:aa") -> tuple[list[Any], Links]:
    """``n`` digests claimed by ``sender``, made ready to send."""
    _outbox_of(engine, n)
    claims.register(engine, sender, host="host-a", pid=1, now=T0)
    held = claims.claim(engine, sender, now=T0, lease=timedelta(seconds=60), limit=n)
    links = Links("https://papers.example.org", b"k" * 32, "digest@papers.example.org")
    return outgoing_of(engine, links, held), links


def _builder(links: Links) -> MessageBuilder:
    return MessageBuilder(
        Sender("digest@papers.example.org", "digest", "digest.papers", links.base_url)
    )


def test_a_batchs_marks_are_written_in_groups_not_one_by_one(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    items, links = _sending(engine, 40)
    written: list[list[int]] = []
    real = claims.mark_sent

    def recording(engine: Engine, sender: str, ids: Any, **kw: Any) -> set[int]:
        written.append(sorted(ids))
        return real(engine, sender, ids, **kw)

    monkeypatch.setattr(claims, "mark_sent", recording)
    lease = timedelta(seconds=60)
    result = asyncio.run(
        deliver(
            engine,
            items,
            _builder(links),
            RecordingTransport(),
            sender_addr="digest@papers.example.org",
            clock=lambda: T0,
            marks=Marks(engine, Claim("host-a:1:aa", lease), lambda: T0, wait=5.0),
        )
    )
    assert result.sent == 40
    # 40 marks in groups of at most MARK_GROUP (16): three transactions, not forty
    assert sorted(i for group in written for i in group) == sorted(i.digest_id for i in items)
    assert max(map(len, written)) <= MARK_GROUP
    assert len(written) == -(-40 // MARK_GROUP)
    assert {_row(engine, i.digest_id)[0] for i in items} == {"sent"}


def test_no_more_than_the_bound_are_sent_and_not_marked(engine: Engine) -> None:
    """What a sender killed at the worst moment leaves to go out again: the connections
    wait for room while ``MARKS_UNWRITTEN`` messages are sent and not marked."""
    items, links = _sending(engine, 3 * MARKS_UNWRITTEN)
    lease = timedelta(seconds=60)
    marks = Marks(engine, Claim("host-a:1:aa", lease), lambda: T0, wait=60.0)
    most = [0]

    class Counting(RecordingTransport):
        async def send(self, *args: Any, **kwargs: Any) -> None:
            await super().send(*args, **kwargs)
            with engine.connect() as conn:  # what a sender killed now leaves
                marked = conn.execute(
                    sa.text("SELECT count(*) FROM digest WHERE status = 'sent'")
                ).scalar_one()
            most[0] = max(most[0], len(self.sent) - marked)

    result = asyncio.run(
        deliver(
            engine,
            items,
            _builder(links),
            Counting(),
            sender_addr="digest@papers.example.org",
            clock=lambda: T0,
            concurrency=8,
            marks=marks,
        )
    )
    assert result.sent == len(items)
    assert 0 < most[0] <= MARKS_UNWRITTEN
    assert marks.unwritten == 0 and marks.writer is None


def test_marks_that_cannot_be_written_stop_the_batch_with_no_more_sent(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    items, links = _sending(engine, 3 * MARKS_UNWRITTEN)

    def unwritable(*args: Any, **kwargs: Any) -> set[int]:
        raise StoreError("database error: disk I/O error")

    monkeypatch.setattr(claims, "mark_sent", unwritable)
    transport = RecordingTransport()
    lease = timedelta(seconds=60)
    with pytest.raises(StoreError):
        asyncio.run(
            deliver(
                engine,
                items,
                _builder(links),
                transport,
                sender_addr="digest@papers.example.org",
                clock=lambda: T0,
                concurrency=8,
                marks=Marks(engine, Claim("host-a:1:aa", lease), lambda: T0),
            )
        )
    # what was sent before the first group failed, and nothing after it
    assert 0 < len(transport.sent) <= MARKS_UNWRITTEN
    assert {_row(engine, i.digest_id)[0] for i in items} == {"sending"}


def test_marks_through_sqlites_driver_write_what_sqlalchemys_statements_write(
    tmp_path: Path,
) -> None:
    stores = [open_store(f"sqlite:///{tmp_path / name}.db") for name in ("core", "driver")]
    lease = timedelta(seconds=60)
    tables = []
    for store, mark in zip(stores, (claims._mark, claims._mark_sqlite), strict=True):
        _outbox_of(store, 6)
        claims.register(store, "host-a:1:aa", host="host-a", pid=1, now=T0)
        held = [
            r.digest_id for r in claims.claim(store, "host-a:1:aa", now=T0, lease=lease, limit=5)
        ]
        at = T0 + lease / 3
        assert mark(store, "host-a:1:aa", held[:2], at=at, until=None) == set(held[:2])
        assert mark(store, "host-a:1:aa", held[1:3], at=at, until=at + lease) == set(held[1:3])
        assert mark(store, "host-b:2:bb", held[3:], at=at, until=None) == set()  # not its own
        with store.connect() as conn:
            tables.append(
                [
                    conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY 1")).all()
                    for table in ("digest", "sender")
                ]
            )
        store.dispose()
    assert tables[0] == tables[1]
    assert [row.status for row in tables[0][0]].count("sent") == 3


def test_status_shows_the_senders_their_claims_and_lease_ages(engine: Engine) -> None:
    _outbox_of(engine, 3)
    claims.register(engine, "host-a:1:aa", host="host-a", pid=1, now=T0)
    claims.claim(engine, "host-a:1:aa", now=T0, lease=timedelta(seconds=60), limit=2)
    found = {s.name: s.to_json(T0 + timedelta(seconds=10)) for s in claims.senders(engine)}
    assert found["host-a:1:aa"]["claims"] == 2
    assert found["host-a:1:aa"]["heartbeat_age_s"] == 10.0
    assert found["host-a:1:aa"]["lease_left_s"] == 50.0


def test_dead_senders_of_this_host_are_found_by_their_row_not_by_their_name(
    engine: Engine,
) -> None:
    _outbox_of(engine, 4)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead, here, now = int(gone.stdout), socket.gethostname(), datetime.now(UTC)
    senders = [
        ("worker-gone", here, dead),  # a name that says nothing of where it runs: freed
        ("worker-alive", here, os.getppid()),
        ("worker-elsewhere", "another-host", dead),  # another host's process: not ours to judge
        (f"{here}:{dead}:aa", "another-host", dead),  # a name that only looks like this host's
    ]
    for name, host, pid in senders:
        claims.register(engine, name, host=host, pid=pid, now=now)
        assert len(claims.claim(engine, name, now=now, lease=timedelta(minutes=5), limit=1)) == 1
    assert free_dead_senders(engine) == 1
    assert sorted(h.name for h in claims.holders(engine)) == sorted(n for n, _, _ in senders[1:])
    held = {h.name: (h.host, h.pid) for h in claims.holders(engine)}
    assert held["worker-alive"] == (here, os.getppid())


def _row(engine: Engine, digest_id: int) -> tuple[object, ...]:
    with engine.connect() as conn:
        found = conn.execute(
            sa.text(
                "SELECT d.status, d.claimed_by, d.attempts, d.last_error, s.status"
                " FROM digest d JOIN subscriber s ON s.id = d.subscriber_id WHERE d.id = :id"
            ),
            {"id": digest_id},
        ).one()
    return tuple(found)


def test_a_sender_whose_claim_was_taken_writes_no_failure_over_the_others_outcome(
    engine: Engine,
) -> None:
    _outbox_of(engine, 1)
    lease = timedelta(seconds=60)
    (mine,) = claims.claim(engine, "host-a:1:aa", now=T0, lease=lease, limit=1)
    # a's lease runs out; b takes the digest and sends it
    (theirs,) = claims.claim(engine, "host-b:2:bb", now=T0 + lease * 2, lease=lease, limit=1)
    assert theirs.digest_id == mine.digest_id
    ident = mine.digest_id
    assert claims.mark_sent(engine, "host-b:2:bb", [ident], at=T0 + lease * 2, lease=lease)
    sent = _row(engine, ident)
    assert sent == ("sent", "host-b:2:bb", 1, None, "active")
    # a comes back with a failure of its own: none of it is written
    assert not outbox.mark_unsent(engine, ident, "421 try later", sender="host-a:1:aa")
    assert not outbox.mark_failed(engine, ident, "no IDNA form", sender="host-a:1:aa")
    for permanent in (True, False):
        outcome = unsent.record_failure(
            engine,
            ident,
            mine.subscriber_id,
            sender="host-a:1:aa",
            error="550 no such user" if permanent else "452 mailbox full",
            counts=True,
            permanent=permanent,
            max_attempts=1,
            fail_after=timedelta(0),
            now=T0 + lease * 3,
        )
        assert outcome is None
    assert _row(engine, ident) == sent  # the subscriber was not bounced either


def test_a_failure_written_while_another_sender_takes_the_digest_writes_nothing(
    engine: Engine,
) -> None:
    _outbox_of(engine, 1)
    lease = timedelta(seconds=60)
    (mine,) = claims.claim(engine, "host-a:1:aa", now=T0, lease=lease, limit=1)
    outcome: list[str | None] = []

    def bounce() -> None:  # a's 550 comes in while b is taking the digest
        outcome.append(
            unsent.record_failure(
                engine,
                mine.digest_id,
                mine.subscriber_id,
                sender="host-a:1:aa",
                error="550 no such user",
                counts=True,
                permanent=True,
                max_attempts=5,
                fail_after=timedelta(days=3),
                now=T0 + lease * 2,
            )
        )

    a = threading.Thread(target=bounce)
    with engine.begin() as conn:  # b's claim, its lease having run out, not yet committed
        conn.execute(
            sa.text(
                "UPDATE digest SET claimed_by = 'host-b:2:bb', status = 'sending' WHERE id = :id"
            ),
            {"id": mine.digest_id},
        )
        a.start()
        time.sleep(0.5)
        assert a.is_alive()  # a waits for b's transaction: it read nothing of the row yet
    a.join(timeout=30)
    assert outcome == [None]
    assert _row(engine, mine.digest_id) == ("sending", "host-b:2:bb", 0, None, "active")


def test_a_senders_failures_are_written_while_its_claim_holds(engine: Engine) -> None:
    _outbox_of(engine, 2)
    lease = timedelta(seconds=60)
    first, second = claims.claim(engine, "host-a:1:aa", now=T0, lease=lease, limit=2)
    assert outbox.mark_unsent(engine, first.digest_id, "421 try later", sender="host-a:1:aa")
    assert _row(engine, first.digest_id)[:4] == ("pending", "host-a:1:aa", 0, "421 try later")
    outcome = unsent.record_failure(
        engine,
        second.digest_id,
        second.subscriber_id,
        sender="host-a:1:aa",
        error="550 no such user",
        counts=True,
        permanent=True,
        max_attempts=5,
        fail_after=timedelta(days=3),
        now=T0,
    )
    assert outcome == "bounced"
    assert _row(engine, second.digest_id) == (
        "failed",
        "host-a:1:aa",
        1,
        "550 no such user",
        "bounced",
    )


def test_a_pass_counts_and_logs_a_failure_it_may_no_longer_write(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    _outbox_of(engine, 2)
    lease = timedelta(seconds=60)
    mine = claims.claim(engine, "host-a:1:aa", now=T0, lease=lease, limit=2)
    taken = claims.claim(engine, "host-b:2:bb", now=T0 + lease * 2, lease=lease, limit=1)
    links = Links("https://papers.example.org", b"k" * 32, "digest@papers.example.org")
    builder = _builder(links)
    items = outgoing_of(engine, links, mine)
    bounce = DeliveryError("550 no such user", permanent=True)
    transport = RecordingTransport(errors={item.email: bounce for item in items})
    claim = Claim("host-a:1:aa", lease)
    result = asyncio.run(
        deliver(
            engine,
            items,
            builder,
            transport,
            sender_addr="digest@papers.example.org",
            clock=lambda: T0 + lease * 2,
            marks=Marks(engine, claim, lambda: T0 + lease * 2),
        )
    )
    assert result.claims_lost == 1 and result.failed == 1  # b's digest, and its own
    assert [r.message for r in caplog.records].count("claim lost") == 1
    statuses = {i.digest_id: _row(engine, i.digest_id) for i in items}
    assert statuses[taken[0].digest_id][:2] == ("sending", "host-b:2:bb")
    (kept,) = (i for i in items if i.digest_id != taken[0].digest_id)
    assert statuses[kept.digest_id][0] == "failed"
