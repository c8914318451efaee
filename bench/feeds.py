"""The feeds step of a daily run at scale: every private feed file written (`feed_files=all`).

Run by hand (not in CI):  python bench/feeds.py [--subscribers 20000] [--daily 5000]
                                                [--papers 20000] [--cache DIR]
                                                [--baseline CHECKOUT [--rounds N]]

The store of bench/cycle.py's day: papers back-filled, a daily dump of ``--daily`` papers
(Hugging Face daily-papers JSON, with arXiv ids and authors as the real one has them)
ingested, subscribers with Zipf-drawn interests (the generators of bench/match.py) ranked
and their digests recorded by the real plan. That store is built once and kept under
``--cache``; each run works on a copy. Each run then, as `digest run` does, renders and
hands every message to a transport that only counts them (untimed: it marks the digests
sent, and works out each paper's marks, which the feeds show too), and times the feeds
with ``feed_files=all`` and every reader changed (the global feed and two files a
reader), then the same again with nothing new (every file's content hash checked, none
written), then with the site renamed (each file's title changes, its entries do not): every
file replaced, as a daily run replaces the day before's files; then renamed once more
(replaced again), as every later day replaces the files again: where old files are kept as
spares (``digest/feeds/staged.py``), this is the case that writes over them, and a spare set
aside by the case before counts as a day old. ``--pause SECONDS``: a wait after the ``sync``
before each case, so that the inodes freed by the case before (or the run before) are out of
the window ext4 without a journal skips them in (60 s once written out), as a day later.
``--pause-again SECONDS``: the wait before the last case instead, when longer: a new inode
made in an inode table block marks it dirty, and ext4 then skips the inodes of that block
freed in the last six minutes (``recently_deleted``), so only a wait of over 360 s puts the
inodes the case before freed as far out of reach as a day does.
``--cold``: the digests marked sent in the store instead, so the feeds step
works out every paper's marks itself (as a fresh process does). ``--baseline``: this
script on another checkout's code (its ``.venv`` when it has one) and on this one's, in
turns.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import resource
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cycle import add_readers, write_store_snapshot  # bench/cycle.py
from match import (  # bench/match.py
    Generator,
    add_dumps_argument,
    args_for_turns,
    dump_files,
    in_turns,
    interest_pool,
    real_papers,
    subscribers,
)
from sqlalchemy.engine import Engine

from digest.deliver.plan import plan_owed, record_plans
from digest.ingest.dumps import ingest_file
from digest.present.views import Links
from digest.service.cycle import deliver_outbox, publish_site_feeds
from digest.service.keys import site_keys
from digest.settings import Settings, load_settings
from digest.store.engine import open_store, transaction
from digest.store.papers import index_papers
from digest.store.subscribers import feed_salts

STAMP = "%Y-%m-%d %H:%M:%S.%f"  # how the store keeps times on SQLite
DAY = datetime(2026, 3, 12, 7, 0, tzinfo=UTC)  # the run's day: the same store every time


class CountingTransport:
    """Takes every message and keeps only the count."""

    def __init__(self) -> None:
        self.messages = 0

    async def send(self, sender_addr: str, recipient: str, message: bytes, message_id: str) -> None:
        self.messages += 1

    async def close(self) -> None:
        return None


def _authors(rng: random.Random) -> list[dict[str, str]]:
    names = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "John")
    surnames = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Backus")
    return [
        {"name": f"{rng.choice(names)} {rng.choice(surnames)}"} for _ in range(rng.randint(1, 9))
    ]


def write_daily_json(
    path: Path, generator: Generator, rng: random.Random, first: int, n: int
) -> None:
    """The day's papers as the Hugging Face daily-papers JSON."""
    posted = DAY.date().isoformat()
    papers = []
    for i in range(n):
        paper = generator.paper(first + i)
        ident = f"2603.{i:05d}"
        abstract = paper.abstract
        if i % 4 == 0:  # some papers link their code
            abstract += f" Code: https://github.com/lab{i % 97}/project{i}."
        papers.append(
            {
                "paper": {
                    "id": ident,
                    "title": paper.title,
                    "summary": abstract,
                    "authors": _authors(rng),
                    "publishedAt": f"{posted}T00:00:00.000Z",
                },
                "title": paper.title,
                "publishedAt": f"{posted}T06:00:00.000Z",
            }
        )
    path.write_text(json.dumps(papers), encoding="utf-8")


def settings_for(data: Path, cwd: Path) -> Settings:
    return load_settings(
        environ={"DIGEST_DATA_DIR": str(data), "DIGEST_BASE_URL": "https://papers.example.org"},
        cwd=cwd,
    )


def build_store(data: Path, args: argparse.Namespace) -> None:
    """Papers, subscribers and their sent digests, under ``data``."""
    rng = random.Random(args.seed)
    real = real_papers(dump_files(args.dumps))
    generator = Generator(rng, real)
    settings = settings_for(data, data.parent)
    engine = open_store(settings.database_url)
    before = DAY - timedelta(days=2)
    snapshot = data.parent / "store.jsonl"
    write_store_snapshot(snapshot, generator, args.papers)
    ingest_file(engine, snapshot, clock=lambda: before, defer_index=True)
    with transaction(engine) as conn:
        index_papers(conn)
    profiles = subscribers(rng, interest_pool(rng, real), args.subscribers)
    add_readers(engine, profiles, before)
    daily = data.parent / "daily.json"
    write_daily_json(daily, generator, rng, args.papers, args.daily)
    done = ingest_file(engine, daily, clock=lambda: DAY - timedelta(hours=1))
    if done.new != args.daily:
        raise SystemExit(f"the daily dump brought {done.new} new papers, not {args.daily}")
    key = site_keys(settings, engine, DAY).signing
    with engine.begin() as conn:
        plans = plan_owed(conn, period=DAY.date())
        record_plans(
            conn, plans, period=DAY.date(), now=DAY, key=key,
            mail_from=settings.mail_from, run_id=None,
        )  # fmt: skip
    engine.dispose()


def measure(args: argparse.Namespace) -> None:
    data = args.cache / f"day-{args.papers}-{args.daily}-{args.subscribers}-{args.seed}"
    if not (data / "data" / "digest.db").exists():
        print(f"building the store in {data} ...", file=sys.stderr)
        shutil.rmtree(data, ignore_errors=True)
        (data / "data").mkdir(parents=True)
        started = time.perf_counter()
        build_store(data / "data", args)
        print(f"  built in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    run = Path(tempfile.mkdtemp(prefix="digest-bench-feeds-"))
    try:
        (run / "data").mkdir()
        shutil.copyfile(data / "data" / "digest.db", run / "data" / "digest.db")
        settings = settings_for(run / "data", run).model_copy(update={"feed_files": "all"})
        engine = open_store(settings.database_url)
        now = DAY + timedelta(minutes=30)
        started = time.perf_counter()
        if args.cold:
            with sqlite3.connect(run / "data" / "digest.db") as raw:
                raw.execute(
                    "UPDATE digest SET status = 'sent', sent_at = ? WHERE status = 'pending'",
                    (now.strftime(STAMP),),
                )
            raw.close()
        else:
            transport = CountingTransport()
            asyncio.run(deliver_outbox(settings, engine, transport, clock=lambda: now, stop=None))
            print(
                f"(messages: {transport.messages:,} in {time.perf_counter() - started:.1f} s,"
                " untimed)",
                file=sys.stderr,
            )
        raw = sqlite3.connect(run / "data" / "digest.db")
        sent = {
            sid for (sid,) in raw.execute("SELECT subscriber_id FROM digest WHERE status = 'sent'")
        }
        items = raw.execute("SELECT count(*) FROM digestitem").fetchone()[0]
        raw.close()
        site_keys(settings, engine, now)  # the key made or read before the clock starts
        renamed = settings.model_copy(update={"site_name": f"{settings.site_name} (renamed)"})
        again = settings.model_copy(update={"site_name": f"{settings.site_name} (again)"})
        cases = (
            ("every private feed written", settings),
            ("nothing new (hashes checked)", settings),
            ("every private feed replaced", renamed),
            ("every feed replaced again", again),
        )
        spares_aged()
        for name, use in cases:
            # what was written before on disk, as a day's run finds the day before's files
            # (an old file replaced while the kernel still writes it out waits for that)
            os.sync()
            time.sleep(max(args.pause, args.pause_again) if name == cases[-1][0] else args.pause)
            own = resource.getrusage(resource.RUSAGE_SELF)
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            counts = publish_site_feeds(use, engine, now=now, changed=sent)
            wall = time.perf_counter() - started
            own_after = resource.getrusage(resource.RUSAGE_SELF)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            user = (own_after.ru_utime - own.ru_utime) + (after.ru_utime - children.ru_utime)
            system = (own_after.ru_stime - own.ru_stime) + (after.ru_stime - children.ru_stime)
            mine = (own_after.ru_utime + own_after.ru_stime) - (own.ru_utime + own.ru_stime)
            print(
                f"  {name:<32} {wall:8.2f} s  (CPU {mine:.2f} s,"
                f" forked {user + system - mine:.2f} s; user {user:.2f} s, system {system:.2f} s;"
                f" {counts['written']:,} written; load {os.getloadavg()[0]:.1f})"
            )
        if args.entries:
            compare_entries(engine, settings, sorted(sent))
        files = list((settings.feeds_dir / "private").iterdir())
        size = sum(p.stat().st_size for p in files if not p.name.startswith("."))
        hidden = sum(p.stat().st_size for p in files if p.name.startswith("."))
        print(
            f"{len(sent):,} readers sent a digest, {items:,} items; private feed files"
            f" {size / 1024 / 1024:.0f} MB, spares {hidden / 1024 / 1024:.0f} MB;"
            f" peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
        )
        engine.dispose()
    finally:
        shutil.rmtree(run, ignore_errors=True)


def spares_aged() -> None:
    """Spares set aside by one case written over in the next, as a day later (code that
    keeps old files as spares waits some minutes before it writes over one)."""
    try:
        from digest.feeds import staged
    except ImportError:  # code from before the staged folder
        return
    if hasattr(staged, "SPARE_REST"):
        staged.SPARE_REST = 0.0


def compare_entries(engine: Engine, settings: Settings, readers: list[int]) -> None:
    """The day's distinct entries (a paper under the interests that chose it) made two ways,
    from nothing: each by feedgen, and from each paper's shape (feedgen once a paper, the
    summary and categories escaped into its holes). Only on code that has both."""
    try:
        from digest.feeds import publish, xml
    except ImportError:  # code from before the shared entries
        return

    site = publish.site_of(
        engine, base_url=settings.base_url, site_name=settings.site_name, limit=100
    )
    key = site_keys(settings, engine, DAY).signing
    with engine.connect() as conn:
        salts = {ident: salt for ident, (salt, _) in feed_salts(conn).items()}
        voting = (Links(settings.base_url, key, ""), salts)
        for start in range(0, len(readers), 500):
            publish.private_items(conn, readers[start : start + 500], site, voting)
    shared = [item for item, _ in site.shared.found.values()]
    timings = {}
    for name in ("feedgen, each entry", "feedgen, each paper's shape"):
        xml._entries.found.clear()
        xml._shapes.found.clear()
        xml._summary.cache_clear()
        started = time.process_time()
        made = {}
        for kind in ("atom", "rss"):
            for first in range(0, len(shared), 1_000):
                batch = shared[first : first + 1_000]
                if name == "feedgen, each entry":
                    made[kind, first] = xml._made(batch, kind)
                else:
                    made[kind, first] = xml.entries(batch, kind)
        timings[name] = (time.process_time() - started, made)
    (each, whole), (shaped, parts) = timings.values()
    assert whole == parts, "the two ways made different entries"
    print(
        f"  entries of {len(shared):,} (paper, interests), both kinds, CPU:"
        f" feedgen each {each:.2f} s, from per-paper shapes {shaped:.2f} s"
    )


_STEP = re.compile(
    r"^  (\S.*?)\s+([\d.]+) s  \(CPU ([\d.]+) s, forked ([\d.]+) s;"
    r" user ([\d.]+) s, system ([\d.]+) s;[^;]*; load ([\d.]+)\)",
    re.MULTILINE,
)


def side_by_side(baseline: Path, rest: list[str], rounds: int) -> None:
    """This script on the baseline's code and on this checkout's, in turns."""
    found: dict[str, list[dict[str, tuple[float, ...]]]] = {"baseline": [], "this checkout": []}
    for name, output in in_turns(baseline, rounds, rest, script=Path(__file__).resolve()):
        found[name].append(
            {
                step: (float(w), float(u), float(s), float(load))
                for step, w, _, _, u, s, load in _STEP.findall(output)
            }
        )
    print("\n| round | step | baseline: wall (CPU user + system; load) | this checkout |", end="")
    print(" ratio (wall / CPU) |\n| --- | --- | --- | --- | --- |")
    for turn in range(rounds):
        old, new = found["baseline"][turn], found["this checkout"][turn]
        for step, before in old.items():
            after = new[step]
            cells = [
                f"{wall:.2f} s ({user:.2f} + {system:.2f} s; {load:.1f})"
                for wall, user, system, load in (before, after)
            ]
            ratio = after[0] / before[0], (after[1] + after[2]) / (before[1] + before[2])
            print(f"| {turn + 1} | {step} | {cells[0]} | {cells[1]} |", end="")
            print(f" {ratio[0]:.3f}x / {ratio[1]:.3f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--daily", type=int, default=5_000, help="papers of the day")
    parser.add_argument("--papers", type=int, default=20_000, help="papers back-filled before")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "digest-bench-feeds"
    )
    parser.add_argument("--cold", action="store_true", help="no message step before the feeds")
    parser.add_argument(
        "--entries", action="store_true", help="also: entries by feedgen each, or by shapes"
    )
    parser.add_argument(
        "--writers", type=int, help="threads each writing process writes files with (as coded)"
    )
    parser.add_argument(
        "--pause", type=float, default=0.0, help="seconds to wait after the sync before each case"
    )
    parser.add_argument(
        "--pause-again", type=float, default=0.0, help="seconds to wait before the last case"
    )
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT")
    parser.add_argument("--rounds", type=int, default=1, help="turns each with --baseline")
    add_dumps_argument(parser)
    args = parser.parse_args()
    if args.baseline:
        side_by_side(args.baseline, args_for_turns(sys.argv[1:]), args.rounds)
        return
    if args.writers:
        from digest.feeds import publish

        publish.WRITERS = args.writers  # type: ignore[misc]
    measure(args)


if __name__ == "__main__":
    main()
