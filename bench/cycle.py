"""One daily cycle at scale, phase by phase: what an operator's `digest run` costs.

Run by hand (not in CI):  python bench/cycle.py [--papers 200000] [--subscribers 20000]
                                                 [--dumps PATH ...]
                                                 [--baseline CHECKOUT [--rounds N]]

A store back-filled with synthetic papers, subscribers with Zipf-drawn interests
(the generators of bench/match.py, seeded from ``--dumps`` as there), a 5,000-paper
daily dump in the inbox; then the steps of `digest run` in order, each timed: ingest,
rank, record the outbox, render and hand every message to a transport that only counts
them (bench/deliver.py measures SMTP), and the feeds, once with ``feed_files=public`` (the
global feed only: the web front serves the private ones) and once with ``all``. Prints
seconds per phase, the total under each setting, and peak RSS. ``--baseline``: this script
on another checkout's code (its ``.venv`` when it has one) and on this one's, in turns (the
same seed: the same store, subscribers and day), and the phases side by side with ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import resource
import secrets
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from match import (  # bench/match.py
    Generator,
    add_dumps_argument,
    dump_files,
    in_turns,
    interest_pool,
    real_papers,
    subscribers,
)

from digest.deliver.plan import plan_owed, record_plans
from digest.ingest.dumps import Clock, ingest_file, ingest_inbox
from digest.service.cycle import deliver_outbox, publish_site_feeds
from digest.service.keys import site_keys
from digest.settings import load_settings
from digest.store.engine import ingest_sequence, open_store, transaction
from digest.store.models import Subscriber
from digest.store.papers import index_papers

try:  # planned and recorded a batch of readers at a time
    from digest.deliver.plan import owed_plans
except ImportError:  # a checkout from before: one list of every plan, then recorded
    owed_plans = None


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


def write_store_snapshot(path: Path, generator: Generator, papers: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        for i in range(papers):
            paper = generator.paper(i)
            ident = f"{1000 + i // 90000:04d}.{i % 90000:05d}"
            out.write(
                json.dumps({"id": ident, "title": paper.title, "abstract": paper.abstract}) + "\n"
            )


def write_daily(path: Path, generator: Generator, first: int, papers: int) -> None:
    """The day's papers as Hugging Face daily-papers JSON, numbered on from the store's."""
    posted = datetime.now(UTC).isoformat()
    rows = []
    for i in range(first, first + papers):
        paper = generator.paper(i)
        ident = f"{1000 + i // 90000:04d}.{i % 90000:05d}"
        rows.append(
            {
                "paper": {"id": ident, "title": paper.title, "summary": paper.abstract},
                "publishedAt": posted,
            }
        )
    path.write_text(json.dumps(rows), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--papers", type=int, default=200_000, help="papers already in the store")
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--daily", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT")
    parser.add_argument("--rounds", type=int, default=1, help="turns each with --baseline")
    parser.add_argument(
        "--public-feeds-only",
        action="store_true",
        help="leave out the feeds step with feed_files=all (every private feed file)",
    )
    add_dumps_argument(parser)
    args = parser.parse_args()
    if args.baseline:
        rest = [a for a in sys.argv[1:] if a not in (str(args.baseline), "--baseline")]
        side_by_side(args.baseline, rest, args.rounds)
        return
    rng = random.Random(args.seed)
    real = real_papers(dump_files(args.dumps))
    generator = Generator(rng, real)
    folder = Path(tempfile.mkdtemp(prefix="digest-cycle-"))
    settings = load_settings(environ={"DIGEST_DATA_DIR": str(folder / "data")}, cwd=folder)
    engine = open_store(settings.database_url)
    clock = Clock()
    joined = datetime.now(UTC) - timedelta(days=1)

    snapshot = folder / "store.jsonl"
    write_store_snapshot(snapshot, generator, args.papers)
    started = time.perf_counter()
    ingest_file(engine, snapshot, clock=lambda: joined - timedelta(days=1), defer_index=True)
    with transaction(engine) as conn:
        index_papers(conn)
    print(f"set-up: {args.papers:,} papers back-filled in {time.perf_counter() - started:.1f} s")

    profiles = subscribers(rng, interest_pool(rng, real), args.subscribers)
    with transaction(engine) as conn:
        joined_upto = ingest_sequence(conn)  # they joined after the back-fill
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
    settings.inbox.mkdir(parents=True, exist_ok=True)
    write_daily(settings.inbox / "daily.json", generator, args.papers, args.daily)

    phases: dict[str, float] = {}
    # CPU time of this process and of the worker processes it forked and reaped meanwhile
    # (ranking, statistics, feeds)
    cpu: dict[str, float] = {}

    def cpu_now() -> float:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + children.ru_utime + children.ru_stime

    cpu_mark = [cpu_now()]

    def timed(name: str, started: float) -> float:
        now = time.perf_counter()
        phases[name] = now - started
        cpu[name] = cpu_now() - cpu_mark[0]
        cpu_mark[0] = cpu_now()
        return now

    period = datetime.now(UTC).date()
    # Read (or made) before the plan's write transaction: on SQLite, making the site's key
    # inside it would wait on that transaction's own lock.
    key = site_keys(settings, engine, clock()).signing
    t = time.perf_counter()
    cpu_mark[0] = cpu_now()
    dumps = ingest_inbox(engine, settings.inbox, clock=clock)
    t = timed("ingest the daily dump (with search index)", t)
    ranked_in = None
    with engine.begin() as conn:
        if owed_plans is None:  # the code before: every plan in one list, then all recorded
            plans = plan_owed(conn, period=period)
            ranked_in = time.perf_counter() - t
        else:
            plans = owed_plans(conn, period=period)
        counts = record_plans(
            conn, plans, period=period, now=clock(), key=key,
            mail_from=settings.mail_from, run_id=None,
        )  # fmt: skip
        del plans
        items = conn.execute(sa.text("SELECT count(*) FROM digestitem")).scalar_one()
    t = timed("rank every subscriber and record the outbox", t)
    planned_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    transport = CountingTransport()
    delivered = asyncio.run(deliver_outbox(settings, engine, transport, clock=clock, stop=None))
    t = timed("load, render and hand over every message", t)
    # Both settings of feed_files on the same outbox: the public feed files alone (the web
    # front serves the private feeds live), then every private feed file as well.
    public = settings.model_copy(update={"feed_files": "public"})
    publish_site_feeds(public, engine, now=clock(), changed=delivered.sent_to)
    t = timed("feeds, feed_files=public (global only)", t)
    feeds = {"written": 0}
    if not args.public_feeds_only:
        every = settings.model_copy(update={"feed_files": "all"})
        feeds = publish_site_feeds(every, engine, now=clock(), changed=delivered.sent_to)
        timed("feeds, feed_files=all (global + private of those sent)", t)

    print(
        f"daily: {dumps[0].new:,} new papers; {sum(counts.values()):,} subscribers,"
        f" {counts['pending']:,} digests,"
        f" {counts['skipped']:,} skipped, {items:,} items; {transport.messages:,} messages,"
        f" {transport.bytes / max(transport.messages, 1) / 1024:.1f} KB each;"
        f" {feeds['written']:,} feed files written"
    )
    for name, seconds in phases.items():
        print(f"  {name:<55} {seconds:8.2f} s  (CPU {cpu[name]:.2f} s)")
    common = sum(v for k, v in phases.items() if not k.startswith("feeds"))
    for setting in ("public", "all"):
        feeds_step = next((v for k, v in phases.items() if f"feed_files={setting}" in k), None)
        if feeds_step is None:
            continue
        print(f"  {'total with feed_files=' + setting:<55} {common + feeds_step:8.2f} s")
    if ranked_in is not None:
        print(f"  (of the plan step: ranking into one list of plans {ranked_in:.2f} s)")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    print(
        f"peak RSS up to the recorded outbox: {planned_rss:.0f} MB, largest worker {workers_rss:.0f} MB"
    )
    print(f"(files in {folder})")


_PHASE = re.compile(r"^  (\S.*?)\s+([\d.]+) s(?:  \(CPU ([\d.]+) s\))?$", re.MULTILINE)


def side_by_side(baseline: Path, rest: list[str], rounds: int) -> None:
    """This script on the baseline's code and on this checkout's, in turns."""
    found: dict[str, list[dict[str, tuple[float, str]]]] = {"baseline": [], "this checkout": []}
    for name, output in in_turns(baseline, rounds, rest, script=Path(__file__).resolve()):
        found[name].append({k: (float(v), c) for k, v, c in _PHASE.findall(output)})
        kept = re.search(r"^\(files in (.+)\)$", output, re.MULTILINE)
        if kept:
            shutil.rmtree(kept.group(1), ignore_errors=True)
    for turn in range(rounds):
        old, new = found["baseline"][turn], found["this checkout"][turn]
        print(
            f"\nround {turn + 1}\n| step | baseline | this checkout | ratio |\n| --- | --- | --- | --- |"
        )
        for phase, (seconds, cpu) in old.items():
            if phase not in new:
                continue
            now, now_cpu = new[phase]
            print(f"| {phase} | {seconds:.2f} s | {now:.2f} s | {now / seconds:.2f}x |")
            if cpu and now_cpu and float(cpu) > 0:
                print(f"| (CPU) | {cpu} s | {now_cpu} s | {float(now_cpu) / float(cpu):.2f}x |")


if __name__ == "__main__":
    main()
