"""The plan step of a daily run alone: rank every reader and record the outbox (by hand).

    python bench/plan.py [--subscribers 20000] [--papers 200000] [--daily 5000]
                         [--store DIR] [--seed 7] [--dumps PATH ...]
                         [--baseline CHECKOUT [--rounds N]] [--rank-only]

The store of bench/cycle.py (its generators, the same seed: the same papers, readers and
day), built once into ``--store`` (default: a folder under the system's temporary folder
named by the sizes) and copied for each run, the daily dump already ingested; then what
`digest run` does between ingesting and sending: every reader owed a digest ranked and
their outbox rows written, in one transaction. Prints the seconds, this process's CPU
time and that of the worker processes it forked (ranking, statistics), its peak RSS and
the largest worker's, and what was written. The store keeps the term counts of the day
before, as the run before the day's would have kept them. ``--baseline``: this script on another
checkout's code and on this one's, in turns, on the same store. ``--rank-only``: on the
same store, the ranking alone as bench/match.py ranks (every owed reader's interests, the
day's papers and the store's statistics read, then every reader ranked a batch at a time,
with no candidate sets, votes, item rows or outbox), to set beside the whole step.
"""

from __future__ import annotations

import argparse
import random
import re
import resource
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from cycle import (  # bench/cycle.py
    add_readers,
    keep_counts,
    plan_transaction,
    write_daily,
    write_store_snapshot,
)
from match import (  # bench/match.py
    Generator,
    add_dumps_argument,
    dump_files,
    in_turns,
    interest_pool,
    real_papers,
    subscribers,
)

from digest.deliver import plan
from digest.ingest.dumps import Clock, ingest_file, ingest_inbox
from digest.rank.corpus import store_stats
from digest.rank.ranker import Ranking
from digest.rank.types import Profile
from digest.service.keys import site_keys
from digest.settings import Settings, load_settings
from digest.store import outbox
from digest.store import papers as papers_store
from digest.store.engine import ingest_sequence, open_store, transaction
from digest.store.papers import index_papers


def settings_in(folder: Path) -> Settings:
    return load_settings(environ={"DIGEST_DATA_DIR": str(folder / "data")}, cwd=folder)


def build(folder: Path, args: argparse.Namespace) -> None:
    """The store of bench/cycle.py, with the day ingested and nothing planned."""
    rng = random.Random(args.seed)
    real = real_papers(dump_files(args.dumps))
    generator = Generator(rng, real)
    work = folder.with_name(folder.name + ".building")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    settings = settings_in(work)
    engine = open_store(settings.database_url)
    joined = datetime.now(UTC) - timedelta(days=1)
    snapshot = work / "store.jsonl"
    write_store_snapshot(snapshot, generator, args.papers)
    ingest_file(engine, snapshot, clock=lambda: joined - timedelta(days=1), defer_index=True)
    snapshot.unlink()
    with transaction(engine) as conn:
        index_papers(conn)
    profiles = subscribers(rng, interest_pool(rng, real), args.subscribers)
    add_readers(engine, profiles, joined)
    keep_counts(engine)  # as the run of the day before kept them (code that keeps them)
    settings.inbox.mkdir(parents=True, exist_ok=True)
    write_daily(settings.inbox / "daily.json", generator, args.papers, args.daily)
    ingest_inbox(engine, settings.inbox, clock=Clock())
    engine.dispose()
    work.rename(folder)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(store: Path) -> None:
    folder = Path(tempfile.mkdtemp(prefix="digest-plan-"))
    try:
        shutil.copytree(store / "data", folder / "data")
        settings = settings_in(folder)
        engine = open_store(settings.database_url)
        now = datetime.now(UTC)
        key = site_keys(settings, engine, now).signing
        period = now.date()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        started, cpu = time.perf_counter(), time.process_time()
        with plan_transaction(engine) as conn:
            streamed = getattr(plan, "owed_plans", None)  # a checkout from before: a list
            plans = streamed or plan.plan_owed
            counts = plan.record_plans(
                conn,
                plans(conn, period=period),
                period=period,
                now=now,
                key=key,
                mail_from=settings.mail_from,
                run_id=None,
            )
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        workers = children_cpu()
        with engine.connect() as conn:
            items = conn.execute(sa.text("SELECT count(*) FROM digestitem")).scalar_one()
        engine.dispose()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"{sum(counts.values()):,} readers, {counts['pending']:,} digests, {items:,} items")
        print(f"plan and record: {seconds:.2f} s, CPU {cpu:.2f} s + workers {workers:.2f} s")
        print(
            f"peak RSS: {peak:.0f} MB ({before:.0f} MB before planning), largest worker {worker:.0f} MB"
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def rank_only(store: Path) -> None:
    """What the plan step ranks, ranked as bench/match.py ranks it, on the store itself."""
    engine = open_store(settings_in(store).database_url)
    period = datetime.now(UTC).date()
    started, cpu, workers = time.perf_counter(), time.process_time(), children_cpu()
    with engine.connect() as conn:
        decoded: dict[str, tuple[str, ...]] = {}
        rows = [row for row in outbox.owed_readers(conn, period) if plan.due(row, period)]
        profiles = [Profile.stored(row, decoded) for row in rows]
        after = min(int(row.seen_upto) for row in rows)
        papers = papers_store.new_since(conn, after, ingest_sequence(conn))
        stats = store_stats(conn, processes=None)
    engine.dispose()
    read = (time.perf_counter() - started, time.process_time() - cpu, children_cpu() - workers)
    started, cpu, workers = time.perf_counter(), time.process_time(), children_cpu()
    with Ranking(papers, profiles, stats) as day:
        items = 0
        for start in range(0, len(profiles), plan.PLAN_BATCH):
            ranked = day.rank(profiles[start : start + plan.PLAN_BATCH])
            items += sum(map(len, ranked.values()))
            del ranked
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"{len(profiles):,} readers, {len(papers):,} papers, {items:,} items")
    print(
        f"read readers, papers and statistics: {read[0]:.2f} s, CPU {read[1]:.2f} s"
        f" + workers {read[2]:.2f} s"
    )
    print(f"rank only: {seconds:.2f} s, CPU {cpu:.2f} s + workers {children_cpu() - workers:.2f} s")


_FIGURES = re.compile(
    r"plan and record: ([\d.]+) s, CPU ([\d.]+) s \+ workers ([\d.]+) s\n"
    r"peak RSS: (\d+) MB \((\d+) MB before planning\), largest worker (\d+) MB"
)


def side_by_side(baseline: Path, rest: list[str], rounds: int) -> None:
    """This script on the baseline's code and on this checkout's, in turns."""
    found: dict[str, list[tuple[str, ...]]] = {"baseline": [], "this checkout": []}
    for name, output in in_turns(baseline, rounds, rest, script=Path(__file__).resolve()):
        match = _FIGURES.search(output)
        if match:
            found[name].append(match.groups())
    names = ("seconds", "CPU, this process (s)", "CPU, workers (s)", "peak RSS (MB)")
    names += ("RSS before planning (MB)", "largest worker (MB)")
    pairs = zip(found["baseline"], found["this checkout"], strict=True)
    for turn, (old, new) in enumerate(pairs, 1):
        print(f"\nround {turn}\n| | baseline | this checkout | ratio |\n| --- | --- | --- | --- |")
        for name, a, b in zip(names, old, new, strict=True):
            print(f"| {name} | {a} | {b} | {float(b) / max(float(a), 1e-9):.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--papers", type=int, default=200_000, help="papers already in the store")
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--daily", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--store", type=Path, help="where the store is built once and kept")
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT")
    parser.add_argument("--rounds", type=int, default=1, help="turns each with --baseline")
    parser.add_argument(
        "--rank-only",
        action="store_true",
        help="rank as bench/match.py does, on the same store (no outbox), instead",
    )
    add_dumps_argument(parser)
    args = parser.parse_args()
    sizes = f"{args.papers}-{args.subscribers}-{args.daily}-{args.seed}"
    # "-kept": built with the day before's term counts kept (code from before ignores them)
    store = args.store or Path(tempfile.gettempdir()) / f"digest-bench-plan-{sizes}-kept"
    if not store.exists():
        started = time.perf_counter()
        build(store, args)
        print(f"set-up: store built in {store} in {time.perf_counter() - started:.1f} s")
    if args.rank_only:
        rank_only(store)
        return
    if args.baseline:
        rest = [a for a in sys.argv[1:] if a not in (str(args.baseline), "--baseline")]
        if "--store" not in rest:
            rest += ["--store", str(store)]
        side_by_side(args.baseline, rest, args.rounds)
        return
    run(store)


if __name__ == "__main__":
    main()
