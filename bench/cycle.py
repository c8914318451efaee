"""One daily cycle at scale, phase by phase: what an operator's `digest run` costs.

Run by hand (not in CI):  python bench/cycle.py [--papers 200000] [--subscribers 20000]
                                                 [--database URL [URL ...]]
                                                 [--senders N [N ...]] [--dumps PATH ...]
                                                 [--counting] [--no-feeds] [--public-feeds]
                                                 [--keep] [--baseline CHECKOUT] [--rounds N]

A store back-filled with synthetic papers, subscribers with Zipf-drawn interests
(the generators of bench/match.py, seeded from ``--dumps`` as there), a 5,000-paper
daily dump in the inbox (the daily-papers JSON, dated the day before it comes), the term
counts of the day before kept as a run keeps them; then the steps of `digest run` in
order, each timed: ingest, rank and record the outbox, send every message as a run sends
it (``deliver_in_processes`` with ``mail_transport`` naming Postfix's ``smtp-sink`` on
loopback: a large outbox from two forked senders), and the feeds, once with
``feed_files=public`` (the global feed only: the web front serves the private ones) and
once with ``all`` (not with ``--public-feeds``). Without ``smtp-sink``, or with
``--counting``, every message is handed in this one process to a transport that only
counts them (said in the output: it is not how a run sends). Prints seconds per phase,
CPU (this process's and that of the processes it forked and waited for: ranking workers,
senders; on a database server, the server's processes' too), the peaks of resident memory
of each step (this process's, the largest forked process's, all of them at once:
bench/memory.py), the totals under each setting, and the largest process's peak.
``--no-feeds`` stops once the outbox is sent.

``--database``: ``sqlite`` (a new file, the default) or a server's URL, on which a new
database is made for the run and dropped after (``postgresql+psycopg://USER:PASS@HOST/
postgres``: the role needs CREATEDB). ``--senders N``: the outbox is sent over SMTP to
Postfix's ``smtp-sink`` on loopback by N ``digest worker --no-plan`` processes instead,
and the step says messages/s and the CPU of each sender, of the sink and of the
database server's backends (each sender in a session of its own, as separate service
units would be; ``--same-session`` keeps them in this one's; bench/senders.py). More
than one database or number of senders, or ``--baseline CHECKOUT`` (this script on another checkout's code, its ``.venv`` when it
has one): each variant runs as a process of its own, in turns, ``--rounds`` times, on the
same seed (the same store, subscribers and day), and the phases are put side by side
with ratios to the first variant.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import gc
import json
import os
import random
import resource
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from match import (  # bench/match.py
    Generator,
    add_dumps_argument,
    dump_files,
    interest_pool,
    real_papers,
    subscribers,
)
from memory import StepMemory, status_kb  # bench/memory.py
from senders import (  # bench/senders.py
    Sent,
    children_cpu,
    send_with_workers,
    server_backends_cpu,
    sink_path,
    smtp_sink,
)
from sides import backend_name, side_by_side  # bench/sides.py

from digest.deliver.plan import plan_owed, record_plans

try:  # planned and recorded a batch of readers at a time
    from digest.deliver.plan import owed_plans
except ImportError:  # a checkout from before: one list of every plan
    owed_plans = None
try:  # a run's plan transaction (on SQLite without foreign-key checks)
    from digest.store.plan_rows import planning as plan_transaction
except ImportError:  # a checkout from before: a plain transaction

    def plan_transaction(engine: Any) -> Any:
        return engine.begin()


try:  # what a run does between its steps
    from digest.service.cycle import between_steps
except ImportError:  # a checkout from before: nothing

    def between_steps(engine: Any) -> None:
        return None


from digest.ingest.dumps import Clock, ingest_file, ingest_inbox
from digest.service.cycle import deliver_in_processes, deliver_outbox, publish_site_feeds
from digest.service.keys import site_keys
from digest.settings import load_settings
from digest.store.engine import ingest_sequence, open_store, transaction
from digest.store.models import Subscriber
from digest.store.papers import index_papers

BENCH_BASE_URL = "https://papers.example.org"  # no warning about links to this machine


class CountingTransport:
    """Takes every message and keeps only the count and the bytes."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0

    async def send(self, sender_addr: str, recipient: str, message: bytes, message_id: str) -> None:
        self.messages += 1
        self.bytes += len(message)

    async def close(self) -> None:
        return None


# --- the store and the day -------------------------------------------------------------


def write_store_snapshot(path: Path, generator: Generator, papers: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        for i in range(papers):
            paper = generator.paper(i)
            ident = f"{1000 + i // 90000:04d}.{i % 90000:05d}"
            out.write(
                json.dumps({"id": ident, "title": paper.title, "abstract": paper.abstract}) + "\n"
            )


def write_daily(
    path: Path,
    generator: Generator,
    first: int,
    papers: int,
    *,
    now: datetime | None = None,
    ids_from: int = 2500,
) -> None:
    """A daily-papers JSON dump (the Hugging Face API's shape) of ``papers`` new papers:
    posted today, each on arXiv the day before, so every one is news under ``news_days``;
    arXiv-like ids from ``ids_from``.00000 on.
    (The text layouts are checked for the shape of a papers page, and the generator's
    titles, cut anywhere, read as hard-wrapped prose to that check.)"""
    now = now or datetime.now(UTC)
    posted = now.strftime("%Y-%m-%dT06:00:00.000Z")
    published = (now - timedelta(days=1)).strftime("%Y-%m-%dT17:00:00.000Z")
    items = []
    for i in range(papers):
        paper = generator.paper(first + i)
        ident = f"{ids_from + i // 90000:04d}.{i % 90000:05d}"
        items.append(
            {
                "paper": {
                    "id": ident,
                    "title": paper.title,
                    "summary": paper.abstract,
                    "authors": [{"name": f"Author {i % 997}"}, {"name": f"Author {i % 89}"}],
                    "publishedAt": published,
                },
                "title": paper.title,
                "publishedAt": posted,
                "numComments": 0,
            }
        )
    path.write_text(json.dumps(items), encoding="utf-8")


def fresh_database(url: str, folder: Path) -> tuple[str, Callable[[], None]]:
    """The store's URL for this run, and how to drop it: ``sqlite`` is a new file in
    ``folder``; a server's URL gets a new database of its own, dropped afterwards."""
    if url == "sqlite":
        return f"sqlite:///{folder / 'data' / 'digest.db'}", lambda: None
    server = sa.engine.make_url(url)
    if server.get_backend_name() == "sqlite":
        return url, lambda: None
    name = f"digest_bench_{secrets.token_hex(5)}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()

    def drop() -> None:
        # The server's own autovacuum may still be on the new database, and a role without
        # pg_signal_backend cannot end it: try again for a while, then say what is left.
        admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
        try:
            for _ in range(30):
                try:
                    with admin.connect() as conn:
                        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    return
                except sa.exc.DBAPIError:
                    time.sleep(1)
            print(f"(database {name} left on the server: drop it by hand)", file=sys.stderr)
        finally:
            admin.dispose()

    return server.set(database=name).render_as_string(hide_password=False), drop


@dataclass
class Bench:
    """A store set up for one measurement: its settings (as ``DIGEST_*`` variables too,
    for the processes started on it), engine, and what was put in."""

    folder: Path
    environ: dict[str, str]
    settings: Any
    engine: Any
    papers: int
    readers: int
    drop: Callable[[], None] = field(default=lambda: None)

    def close(self) -> None:
        self.engine.dispose()
        self.drop()


def set_up(
    *,
    papers: int,
    readers: int,
    daily: int,
    seed: int,
    dumps: list[Path] | None,
    database: str = "sqlite",
    folder: Path | None = None,
    say: Callable[[str], None] = print,
) -> Bench:
    """A store back-filled with ``papers`` synthetic papers, ``readers`` subscribers who
    joined after it, and a ``daily``-paper dump waiting in the inbox. The papers (store
    and day) depend on ``seed`` alone, not on how many readers there are."""
    rng = random.Random(seed)
    real = real_papers(dump_files(dumps))
    generator = Generator(rng, real)
    folder = folder or Path(tempfile.mkdtemp(prefix="digest-cycle-"))
    url, drop = fresh_database(database, folder)
    environ = {
        "DIGEST_DATA_DIR": str(folder / "data"),
        "DIGEST_DATABASE_URL": url,
        "DIGEST_BASE_URL": BENCH_BASE_URL,
    }
    try:
        settings = load_settings(environ=environ, cwd=folder)
        engine = open_store(settings.database_url)
    except BaseException:
        drop()
        raise
    bench = Bench(folder, environ, settings, engine, papers, readers, drop)
    try:
        _fill(bench, generator, rng, real, daily, say)
    except BaseException:
        bench.close()
        raise
    return bench


def add_readers(engine: Any, profiles: Sequence[Any], joined: datetime) -> None:
    """The drawn readers stored as active subscribers who joined at ``joined``, after the
    papers already in the store (their cut-off is the store's ingest sequence now)."""
    with transaction(engine) as conn:
        joined_upto = ingest_sequence(conn)
        conn.execute(
            sa.insert(Subscriber),
            [
                {
                    "email": f"reader{p.id}@example.org",
                    "interests": json.dumps(list(p.interests)),
                    "token_salt": secrets.token_hex(16),
                    "created_at": joined,
                    "seen_upto": joined_upto,
                    "status": "active",
                }
                for p in profiles
            ],
        )


def _fill(
    bench: Bench,
    generator: Generator,
    rng: random.Random,
    real: list[tuple[str, str]],
    daily: int,
    say: Callable[[str], None],
) -> None:
    joined = datetime.now(UTC) - timedelta(days=1)
    snapshot = bench.folder / "store.jsonl"
    write_store_snapshot(snapshot, generator, bench.papers)
    started = time.perf_counter()
    ingest_file(bench.engine, snapshot, clock=lambda: joined - timedelta(days=1), defer_index=True)
    with transaction(bench.engine) as conn:
        index_papers(conn)
    say(f"set-up: {bench.papers:,} papers back-filled in {time.perf_counter() - started:.1f} s")
    snapshot.unlink()
    inbox = bench.settings.inbox
    inbox.mkdir(parents=True, exist_ok=True)
    # Written before the readers are drawn: the same day whatever their number.
    write_daily(inbox / "daily.json", generator, bench.papers, daily)
    profiles = subscribers(rng, interest_pool(rng, real), bench.readers)
    add_readers(bench.engine, profiles, joined)
    keep_counts(bench.engine)


def keep_counts(engine: Any) -> None:
    """The store's term counts kept, as the run of the day before kept them (when this
    checkout's code keeps them): the day's run brings them up to date."""
    try:
        from digest.rank.corpus import sample_counts
    except ImportError:  # a checkout from before: every run counts afresh
        return
    with transaction(engine) as conn:
        sample_counts(conn, keep=True, processes=None)


def with_setting(settings: Any, **changes: Any) -> Any:
    """The settings with ``changes`` (pydantic settings, or a checkout's dataclass ones)."""
    if hasattr(settings, "model_copy"):
        return settings.model_copy(update=changes)
    from dataclasses import replace

    return replace(settings, **changes)


# --- one measurement ----------------------------------------------------------------------


class Phases:
    """Wall and CPU seconds of each step (CPU: this process's and its waited-for children's,
    so the forked ranking workers and senders count; ``forked``: theirs alone), the peaks of
    resident memory (``bench/memory.py``: this process's, the largest forked one's, all
    together), and on a database server the CPU of the server's processes serving this
    database (those alive at the step's end: a connection opened and closed within a step
    is missed)."""

    def __init__(self, database: str | None = None) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.forked: dict[str, float] = {}
        self.server: dict[str, float] = {}
        self.database = database
        self.memory = StepMemory()
        self._marks = self._now()
        self._backends = self._server_now()

    @staticmethod
    def _now() -> tuple[float, float, float]:
        return time.perf_counter(), time.process_time(), children_cpu()

    def _server_now(self) -> dict[int, float]:
        return server_backends_cpu(self.database) if self.database else {}

    def start(self) -> None:
        self._marks = self._now()
        self._backends = self._server_now()
        self.memory.start()

    def done(self, name: str) -> None:
        wall, own, forked = self._now()
        self.forked[name] = forked - self._marks[2]
        self.cpu[name] = own - self._marks[1] + self.forked[name]
        self.wall[name] = wall - self._marks[0]
        self._marks = (wall, own, forked)
        self.memory.done(name)
        if self.database:
            now = self._server_now()
            self.server[name] = sum(v - self._backends.get(pid, 0.0) for pid, v in now.items())
            self._backends = now


SEND_STEP = "send the outbox over SMTP (sender processes)"
COUNT_STEP = "load, render and hand over every message"
RUN_STEP = "send every message as a run does (SMTP to smtp-sink)"


def measure(args: argparse.Namespace) -> None:
    """One cycle on one store, printed phase by phase."""
    senders = args.senders[0]
    bench = set_up(
        papers=args.papers,
        readers=args.subscribers,
        daily=args.daily,
        seed=args.seed,
        dumps=args.dumps,
        database=args.database[0],
    )
    # The set-up (200,000 papers written, ingested and indexed in this process) leaves what
    # it freed in the allocator: handed back, as `digest run` starts a process of its own.
    before = status_kb("self", "VmRSS")[0] / 1024
    hand_back()
    print(f"set-up: {before:.0f} MB resident, {status_kb('self', 'VmRSS')[0] / 1024:.0f} MB after"
          " handing back what it freed")  # fmt: skip
    try:
        with ExitStack() as held:
            # The sink for the whole run: reaped once every step is timed, so its CPU is
            # counted in none of them (it is printed apart).
            sink = None
            if not senders and not args.counting and sink_path() is not None:
                sink = held.enter_context(smtp_sink())
            _cycle(bench, args, senders, sink)
        if sink is not None:
            print(f"smtp-sink: {sink[1][0].cpu:.2f} CPU-s (not counted in the steps)")
    finally:
        bench.close()
    if not args.keep:
        shutil.rmtree(bench.folder, ignore_errors=True)
    else:
        print(f"(files in {bench.folder})")


def hand_back() -> None:
    """The collector's pass, then glibc's ``malloc_trim`` (whatever the checkout's code)."""
    gc.collect()
    with suppress(OSError, AttributeError):
        name = ctypes.util.find_library("c")
        if name:
            ctypes.CDLL(name).malloc_trim(0)


def _cycle(
    bench: Bench, args: argparse.Namespace, senders: int, sink: tuple[int, Any] | None
) -> None:
    settings, engine = bench.settings, bench.engine
    clock = Clock()
    url = sa.engine.make_url(settings.database_url)
    phases = Phases(None if url.get_backend_name() == "sqlite" else url.database)
    period = datetime.now(UTC).date()
    # Read (or made) before the plan's write transaction: on SQLite, making the site's key
    # inside it would wait on that transaction's own lock.
    key = site_keys(settings, engine, clock()).signing
    phases.start()
    dumps = ingest_inbox(engine, settings.inbox, clock=clock)
    phases.done("ingest the daily dump (with search index)")
    if dumps[0].status != "ok":
        raise SystemExit(f"the daily dump was not ingested: {dumps[0].status} {dumps[0].error}")
    counts, items = _plan(settings, engine, period=period, clock=clock, key=key)
    between_steps(engine)  # as `digest run` does before it sends
    phases.done(PLAN_STEP)
    workers_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    transport = CountingTransport()
    if senders:
        sent = send_with_workers(
            bench, senders, args.connections, args.batch, own_sessions=not args.same_session
        )
        phases.wall[SEND_STEP] = sent.seconds
        phases.cpu[SEND_STEP] = sum(r.cpu for r in sent.senders)  # the senders' own
        if phases.database:
            phases.server[SEND_STEP] = sent.backends
        delivered_to = None  # every reader sent to: the feeds of all are rebuilt
        phases.start()
    elif sink is not None:  # as `digest run` sends: deliver_in_processes, configured SMTP
        smtp = with_setting(settings, mail_transport=f"smtp://127.0.0.1:{sink[0]}")
        delivered = deliver_in_processes(smtp, engine, None, clock=clock, stop=None)
        between_steps(engine)
        phases.done(RUN_STEP)
        delivered_to = delivered.sent_to
    else:
        if not args.counting:
            print(NO_SINK, flush=True)
        delivered = asyncio.run(deliver_outbox(settings, engine, transport, clock=clock, stop=None))
        phases.done(COUNT_STEP)
        delivered_to = delivered.sent_to
    feeds = (
        {"written": 0}
        if args.no_feeds
        else _feeds(settings, engine, phases, delivered_to, every=not args.public_feeds)
    )

    if senders:
        handed = f"{sent.messages:,} messages sent, {sent.failed:,} failed"
    elif sink is not None:
        handed = f"{delivered.sent:,} messages sent over SMTP, {delivered.failed:,} failed"
    else:
        size = transport.bytes / max(transport.messages, 1) / 1024
        handed = f"{transport.messages:,} messages, {size:.1f} KB each (counting transport)"
    print(
        f"daily: {dumps[0].new:,} new papers; {sum(counts.values()):,} subscribers,"
        f" {counts['pending']:,} digests,"
        f" {counts['skipped']:,} skipped, {items:,} items; {handed};"
        f" {feeds['written']:,} feed files written"
    )
    print(f"store: {backend_name(args.database[0])}")
    _print_phases(phases)
    if senders:
        _print_sent(sent, senders, args.connections)
    print(f"peak RSS: {phases.memory.peak():.0f} MB")
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS of the largest forked process (wait4): {largest:.0f} MB")
    print(
        f"peak RSS up to the recorded outbox: {phases.memory.peak(PLAN_STEP):.0f} MB,"
        f" largest worker {workers_rss:.0f} MB"
    )
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    phases.memory.close()
    if not dumps[0].new or not counts["pending"] or not items:
        raise SystemExit("the day gave no digests: the figures above measure nothing")


PLAN_STEP = "rank every subscriber and record the outbox"
NO_SINK = (
    "NOTE: smtp-sink not found: the messages go to a transport that only counts them, from"
    " ONE process, not as `digest run` sends them (apt-get install postfix)"
)


def _plan(
    settings: Any, engine: Any, *, period: Any, clock: Clock, key: bytes
) -> tuple[dict[str, int], int]:
    """Every reader ranked and the outbox recorded, a batch at a time, in one transaction
    (as `digest run` does); nothing of it is kept but the counts."""
    with plan_transaction(engine) as conn:
        if owed_plans is None:  # a checkout from before: every plan in one list, then recorded
            plans: Any = plan_owed(conn, period=period, news_days=settings.news_days)
        else:  # planned and recorded a batch of readers at a time
            plans = owed_plans(conn, period=period, news_days=settings.news_days)
        counts: dict[str, int] = record_plans(
            conn, plans, period=period, now=clock(), key=key,
            mail_from=settings.mail_from, run_id=None,
        )  # fmt: skip
        del plans
        items = conn.execute(sa.text("SELECT count(*) FROM digestitem")).scalar_one()
    return counts, int(items)


def _feeds(
    settings: Any, engine: Any, phases: Phases, changed: Any, *, every: bool = True
) -> dict[str, int]:
    """Both settings of feed_files on the same outbox: the public feed files alone (the web
    front serves the private feeds live), then (``every``) every private feed file as well."""
    public = with_setting(settings, feed_files="public")
    written: dict[str, int] = publish_site_feeds(
        public, engine, now=datetime.now(UTC), changed=changed
    )
    phases.done("feeds, feed_files=public (global only)")
    if not every:
        return written
    every = with_setting(settings, feed_files="all")
    feeds: dict[str, int] = publish_site_feeds(
        every, engine, now=datetime.now(UTC), changed=changed
    )
    phases.done("feeds, feed_files=all (global + private of those sent)")
    return feeds


def _print_phases(phases: Phases) -> None:
    for name, seconds in phases.wall.items():
        print(f"  {name:<55} {seconds:8.2f} s  (CPU {phases.cpu[name]:.2f} s)")
    for name, seconds in phases.forked.items():
        if seconds >= 0.005:
            print(f"  {name + ', CPU of forked processes':<55} {seconds:8.2f} s")
    _print_memory(phases.memory)
    for name, seconds in phases.server.items():
        print(f"  {name + ', database server CPU':<55} {seconds:8.2f} s")
    common = sum(v for k, v in phases.wall.items() if not k.startswith("feeds"))
    for setting in ("public", "all"):
        feeds_step = [v for k, v in phases.wall.items() if f"feed_files={setting}" in k]
        if feeds_step:
            print(f"  {'total with feed_files=' + setting:<55} {common + feeds_step[0]:8.2f} s")
    if not any(k.startswith("feeds") for k in phases.wall):
        print(f"  {'total without the feeds':<55} {common:8.2f} s")
    # CPU seconds move less than wall ones with the neighbours' load on a shared machine
    cpu = sum(v for k, v in phases.cpu.items() if not k.startswith("feeds"))
    for setting in ("public", "all"):
        feeds_cpu = [v for k, v in phases.cpu.items() if f"feed_files={setting}" in k]
        if feeds_cpu:
            print(f"  {'CPU, total with feed_files=' + setting:<55} {cpu + feeds_cpu[0]:8.2f} s")
    # The store's own CPU: in this process on SQLite, in the server's processes otherwise.
    cpu += sum(v for k, v in phases.server.items() if not k.startswith("feeds"))
    for setting in ("public", "all"):
        feeds = [
            phases.cpu[k] + phases.server.get(k, 0.0)
            for k in phases.cpu
            if f"feed_files={setting}" in k
        ]
        if feeds:
            name = f"CPU with the store's, total with feed_files={setting}"
            print(f"  {name:<55} {cpu + feeds[0]:8.2f} s")


def _print_memory(memory: StepMemory) -> None:
    """Each step's peaks: this process, the largest process it forked, all at once."""
    print("peak resident memory per step (this process; largest forked; all at once):")
    for name, peaks in memory.steps.items():
        print(f"  {name + ', peak RSS of this process':<70} {peaks.parent:8.0f} MB")
        if peaks.forked:
            label = f"{name}, largest of {peaks.forked} forked"
            print(f"  {label:<70} {peaks.largest_forked:8.0f} MB")
            print(f"  {name + ', all processes at once':<70} {peaks.together:8.0f} MB")


def _print_sent(sent: Sent, senders: int, connections: int) -> None:
    each = ", ".join(f"{r.cpu:.2f}" for r in sent.senders)
    print(
        f"send: {sent.messages:,} messages by {senders} sender process(es) of {connections}"
        f" connections in {sent.seconds:.2f} s: {sent.rate:,.0f} messages/s"
        f" ({sent.messages / max(sent.sending, 1e-9):,.0f}/s from the first sent to the last)"
    )
    per_message = sum(r.cpu for r in sent.senders) / max(sent.messages, 1) * 1000
    print(
        f"send CPU: senders {each} s ({per_message:.2f} ms a message, start-up included;"
        f" largest RSS {max(r.maxrss_kb for r in sent.senders) / 1024:.0f}"
        f" MB); smtp-sink {sent.sink.cpu:.2f} s; database server {sent.backends:.2f} s;"
        f" the whole machine busy {sent.machine_busy:.1f} CPU-s of {sent.seconds * os.cpu_count():.1f}"
        f" ({os.cpu_count()} cores; other jobs included); load average {os.getloadavg()[0]:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--papers", type=int, default=200_000, help="papers already in the store")
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--daily", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--database",
        nargs="+",
        default=["sqlite"],
        metavar="URL",
        help="sqlite (a new file) or a server's URL (a new database on it, dropped after)",
    )
    parser.add_argument(
        "--senders",
        nargs="+",
        type=int,
        default=[0],
        metavar="N",
        help="send over SMTP to smtp-sink with N digest worker processes (0: count only)",
    )
    parser.add_argument("--connections", type=int, default=4, help="SMTP connections a sender")
    parser.add_argument("--batch", type=int, default=200, help="digests a sender claims at once")
    parser.add_argument(
        "--same-session",
        action="store_true",
        help="the senders in this script's session (one share of a busy machine's CPU for"
        " all of them) rather than each in a session of its own",
    )
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT")
    parser.add_argument("--rounds", type=int, default=1, help="turns of each variant")
    parser.add_argument(
        "--counting",
        action="store_true",
        help="the message step as it was measured before: every message handed, in this one"
        " process, to a transport that only counts them (a run sends a large outbox from"
        " forked senders over its configured transport)",
    )
    parser.add_argument("--no-feeds", action="store_true", help="stop once the outbox is sent")
    parser.add_argument(
        "--public-feeds", action="store_true", help="the feeds with feed_files=public only"
    )
    parser.add_argument("--keep", action="store_true", help="keep the files (not the database)")
    add_dumps_argument(parser)
    args = parser.parse_args()
    if args.baseline or len(args.database) > 1 or len(args.senders) > 1:
        side_by_side(args, _passed_on(sys.argv[1:]))
        return
    measure(args)


def _passed_on(argv: list[str]) -> list[str]:
    """The arguments every variant shares (all but what tells the variants apart)."""
    rest: list[str] = []
    skip = False
    for arg in argv:
        if arg in ("--baseline", "--rounds", "--database", "--senders"):
            skip = True
        elif skip and not arg.startswith("--"):
            continue
        else:
            skip = False
            rest.append(arg)
    return rest


if __name__ == "__main__":
    main()
