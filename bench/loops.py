"""The SMTP transport on asyncio's event loop against uvloop's: CPU a message, side by side.

Run by hand (not in CI), with Postfix's ``smtp-sink`` installed:

    python bench/loops.py [--messages 5000] [--size 40000] [--connections 4] [--rounds 8]

One process sends ``--messages`` copies of a ``--size``-byte message (built once, in wire
form, as ``MessageBuilder`` hands them over) through one pooled ``SMTPTransport`` to
``smtp-sink`` on loopback, from two coroutines a connection, as a sending pass does; once on
asyncio's own loop and once on the loop ``deliver.loops`` gives a pass (uvloop's), in turns,
``--rounds`` times. Nothing is built while it runs, so the figure is the loop's and the
transport's alone: what a run's message step spends beside building its messages. Prints
the CPU a message of each round, the medians and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable, Coroutine
from typing import Any

from senders import smtp_sink  # bench/senders.py

from digest.deliver.loops import loop_factory
from digest.deliver.loops import run as run_pass
from digest.deliver.transports import SMTPTransport
from digest.deliver.wire import Wire

Runner = Callable[[Coroutine[Any, Any, None]], None]


def message(size: int) -> Wire:
    """A message of about ``size`` bytes of quoted-printable lines, as a digest's body is."""
    line = b"=3C" * 8 + b"x" * 48 + b"=\r\n"
    return Wire(b"Subject: a digest\r\nTo: reader@example.net\r\n\r\n" + line * (size // len(line)))


async def send_all(port: int, count: int, connections: int, raw: Wire) -> None:
    transport = SMTPTransport(
        "127.0.0.1", port, connections=connections, retries=1, local_hostname="bench.local"
    )
    hands = 2 * connections  # two messages in hand a connection (``deliver.send.IN_HAND``)

    async def hand(first: int) -> None:
        for n in range(first, count, hands):
            await transport.send("digest@example.org", f"r{n}@example.net", raw, f"<{n}@b>")

    async with transport:
        await asyncio.gather(*(hand(first) for first in range(hands)))


def cpu_a_message(run: Runner, port: int, count: int, connections: int, raw: Wire) -> float:
    started = time.process_time()
    run(send_all(port, count, connections, raw))
    return (time.process_time() - started) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5_000)
    parser.add_argument("--size", type=int, default=40_000, help="bytes a message")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    if loop_factory() is None:
        raise SystemExit("uvloop is not installed here: pip install uvloop")
    raw = message(args.size)
    sides: dict[str, Runner] = {"asyncio": asyncio.run, "uvloop": run_pass}
    found: dict[str, list[float]] = {name: [] for name in sides}
    with smtp_sink() as (port, _):
        for _ in range(args.rounds):
            for name, run in sides.items():
                found[name].append(cpu_a_message(run, port, args.messages, args.connections, raw))
    print(
        f"{args.messages:,} messages of {len(raw):,} B, {args.connections} connections, one process"
    )
    for name, figures in found.items():
        rounds = " ".join(f"{x:,.0f}" for x in figures)
        print(f"{name:8} CPU a message, µs: {rounds}; median {statistics.median(figures):,.0f}")
    ratio = statistics.median(found["uvloop"]) / statistics.median(found["asyncio"])
    print(f"uvloop / asyncio, medians: {ratio:.2f}")


if __name__ == "__main__":
    main()
