"""The shared sending pace: turns booked one at a time against turns booked in blocks.

Run by hand (not in CI):

    python bench/pace.py [--rate 1000] [--senders 3] [--connections 4] [--seconds 3]
                         [--postgres URL]

For each store (an SQLite file; and PostgreSQL when ``--postgres`` or
``DIGEST_TEST_POSTGRES_URL`` gives a server URL with the right to create a database),
``--senders`` processes of ``--connections`` coroutines each take turns from one
``SharedPace`` at ``--rate`` for ``--seconds``, nothing sent: the pace alone. In the same
run, side by side:

- the ceiling: each process paced alone at its share of the rate (``RateLimiter``, no
  database), what pacing in Python costs on this machine;
- one turn a booking (a block of one: a round trip and a commit per message);
- ours: blocks of up to a tenth of a second's turns (``deliver.pace``).

Prints the turns taken a second by all senders together against the rate, the bookings
(round trips) a second, and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from digest.deliver.pace import SharedPace
from digest.deliver.transports import RateLimiter
from digest.store.engine import open_store


def sender(
    url: str,
    rate: float,
    connections: int,
    seconds: float,
    block: int,
    ready: Any,
    results: Any,
) -> None:
    """One process: ``connections`` coroutines taking turns for ``seconds`` once every
    process is ready; ``block`` -1: paced alone at ``rate`` (its share), 0: our blocks,
    else blocks of that many turns. Puts (turns taken, bookings) on ``results``."""
    engine = open_store(url)
    pace = SharedPace(engine, rate)
    alone = RateLimiter(rate)
    if block > 0:
        pace.most = block
    taken = 0

    async def connection(end: float) -> None:
        nonlocal taken
        while time.time() < end:
            await (alone.wait() if block < 0 else pace.wait())
            taken += 1

    async def all_of_them() -> None:
        end = time.time() + seconds
        await asyncio.gather(*(connection(end) for _ in range(connections)))

    ready.wait()
    asyncio.run(all_of_them())
    engine.dispose()
    results.put((taken, pace.bookings))


def measure(url: str, args: argparse.Namespace, block: int, name: str) -> tuple[float, float]:
    """Turns and bookings a second, all senders together."""
    engine = open_store(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM ratecounter"))
    engine.dispose()
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(args.senders)
    results = context.Queue()
    rate = args.rate / args.senders if block < 0 else args.rate
    processes = [
        context.Process(
            target=sender,
            args=(url, rate, args.connections, args.seconds, block, ready, results),
        )
        for _ in range(args.senders)
    ]
    for process in processes:
        process.start()
    done = [results.get() for _ in processes]
    for process in processes:
        process.join()
    turns = sum(r[0] for r in done) / args.seconds
    bookings = sum(r[1] for r in done) / args.seconds
    print(
        f"  {name:<22} {turns:>9,.0f} turns/s ({turns / args.rate:6.1%} of the rate)"
        f"  {bookings:>8,.0f} bookings/s  {bookings / max(turns, 1):.3f} a message"
    )
    return turns, bookings


def bench(label: str, url: str, args: argparse.Namespace) -> None:
    open_store(url).dispose()
    print(f"{label}: {args.senders} senders x {args.connections} connections, rate {args.rate:g}/s")
    ceiling, _ = measure(url, args, -1, "ceiling (each alone)")
    one_turns, one_bookings = measure(url, args, 1, "one turn a booking")
    our_turns, our_bookings = measure(url, args, 0, "ours (blocks)")
    print(
        f"  ratio ours / one a booking: turns {our_turns / max(one_turns, 1):.2f}x,"
        f" bookings {our_bookings / max(one_bookings, 1):.3f}x;"
        f" ours / ceiling: turns {our_turns / max(ceiling, 1):.2f}x"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1_000)
    parser.add_argument("--senders", type=int, default=3)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--postgres", default=os.environ.get("DIGEST_TEST_POSTGRES_URL", ""))
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as folder:
        bench("SQLite", f"sqlite:///{Path(folder) / 'pace.db'}", args)
    if args.postgres:
        name = f"digest_bench_pace_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(args.postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        try:
            url = sa.engine.make_url(args.postgres).set(database=name)
            bench("PostgreSQL", url.render_as_string(hide_password=False), args)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            admin.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
