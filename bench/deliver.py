"""Delivery speed: build and send 20,000 digests over SMTP to Postfix's smtp-sink.

Run by hand (not in CI), with Postfix's test tools installed
(``apt-get install postfix`` provides /usr/sbin/smtp-sink and smtp-source):

    python bench/deliver.py [--digests 20000] [--connections 8] [--naive-sample 1000]
                            [--no-pipelining] [--no-send] [--dumps PATH ...]
                            [--baseline CHECKOUT [--rounds N]]

The digests are what a run sends: a day of synthetic papers and readers with Zipf-drawn
interests (the generators of bench/match.py), ranked by ``ranker.rank`` (set-up, not
timed), each reader's items kept as the outbox keeps them (paper row, score, stored
explanation JSON). In the same run, against the same sink, it measures
- ours: the message step as a run does it, minus the database: each batch of 1,000
  digests made into views (the papers, the reader's links and tokens) and their marks
  prepared, then each message built by one MessageBuilder and sent over the pooled
  SMTPTransport; from as many forked senders as a run forks for that many digests
  (``deliver.processes.senders_for``, or ``--processes``), each every so many batches over its
  share of the connections (PIPELINING, which smtp-sink offers; ``--no-pipelining``:
  aiosmtplib's one command at a time) on the loop a run's senders use (``deliver.loops``:
  uvloop's where installed), their CPU counted; before forking, what the rest's
  papers show every reader is worked out once, as a run does it
  (``deliver.send.prepare_papers``);
- the ceiling: smtp-source sending as many messages of the same average size;
- the naive way: per message a Jinja render, an EmailMessage and ``aiosmtplib.send``
  on a new connection, timed on a sample and extrapolated.
Prints messages/s, CPU a message, the ratios, and peak RSS. ``--baseline``: this script
on another checkout's code and on this one's, in turns, and the figures side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing
import random
import re
import resource
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
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
from senders import free_port, wait_for_port  # bench/senders.py

from digest.deliver.message import MessageBuilder, Sender, subject_for
from digest.deliver.transports import SMTPTransport
from digest.present.paper import DigestView, PaperView, prepare
from digest.present.views import Links, paper_view

try:
    from digest.deliver.send import item_views
except ImportError:  # the code before it
    item_views = None
try:
    from digest.deliver.send import SPARE_EVERY
except ImportError:  # the code before it: set apart once a batch
    SPARE_EVERY = 10**12
try:
    from digest.deliver.plan import readers_alike
except ImportError:  # the code before it: the readers' own order
    readers_alike = None
try:
    from digest.deliver.processes import senders_for
except ImportError:  # the code before it: one sender

    def senders_for(waiting: int) -> int:
        return 1


try:
    from digest.deliver.loops import run as run_pass
except ImportError:  # the code before it: asyncio's own loop
    run_pass = asyncio.run
try:
    from digest.deliver.send import sparing_the_collector

    SPARES_THE_COLLECTOR = True
except ImportError:  # the code before it: the collector walks everything a pass holds
    SPARES_THE_COLLECTOR = False

    @contextlib.contextmanager
    def sparing_the_collector() -> Iterator[Callable[[], None]]:
        yield lambda: None


try:
    from digest.present.views import stored_view
except ImportError:  # the code before it: each item made into a view of its own

    def stored_view(row: PaperRow, score: float, matched: str, base_url: str | None) -> PaperView:
        return paper_view(row, score, json.loads(matched), base_url)


from digest.rank.ranker import rank
from digest.rank.types import CorpusStats, hits_to_json
from digest.store.papers import PaperRow

BASE_URL = "https://example.org"
SENDER = Sender("digest <digest@example.org>", "digest", "papers.example.org", BASE_URL)
NOW = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
PERIOD = date(2026, 11, 22)
BATCH = 1_000  # digests made into views at a time, as a run claims them
NO_PIPELINING = False  # --no-pipelining
NO_SEND = False  # --no-send


@dataclass(frozen=True)
class Item:
    """A paper in a digest, as the outbox keeps it."""

    paper: PaperRow
    score: float
    matched: str


@dataclass(frozen=True)
class Digest:
    """A digest waiting in the outbox, with its reader."""

    digest_id: int
    email: str
    subscriber_id: int
    token_salt: str
    items: list[Item]


def make_day(args: argparse.Namespace) -> list[Digest]:
    """A day's outbox: papers and readers drawn as bench/match.py does, ranked."""
    rng = random.Random(args.seed)
    real = real_papers(dump_files(args.dumps))
    generator = Generator(rng, real)
    day = [generator.paper(i) for i in range(args.papers)]
    first = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)
    rows = {
        p.id: PaperRow(
            p.id,
            f"arxiv:2411.{p.id:05d}",
            p.title,
            p.abstract
            + (f" Code: https://github.com/lab{p.id % 97}/project-{p.id}." if p.id % 5 < 2 else ""),
            None,
            f"2411.{p.id:05d}",
            p.times_seen,
            first,
            authors="Ada Lovelace, Grace Hopper and Alan Turing",
            listing_date=PERIOD,
        )
        for p in day
    }
    stats = CorpusStats.from_texts((p.title, p.abstract) for p in day)
    profiles = subscribers(rng, interest_pool(rng, real), args.digests)
    ranked = rank(day, profiles, stats)
    if readers_alike is not None:  # the outbox in the order a run plans it
        alike = readers_alike({p.id: p for p in profiles})
        profiles.sort(key=lambda p: alike(p.id))
    digests = []
    for profile in profiles:
        items = [
            Item(rows[r.paper_id], r.score, json.dumps(hits_to_json(r.hits)))
            for r in ranked.get(profile.id, [])
        ]
        if items:
            digests.append(
                Digest(
                    len(digests) + 1,
                    f"reader{profile.id}@example.net",
                    profile.id,
                    secrets.token_hex(16),
                    items,
                )
            )
    return digests


def views_of(links: Links, digests: Sequence[Digest]) -> list[DigestView]:
    """The digests as a run makes them into views (``deliver.send.outgoing_of`` without
    the store), their marks worked out ahead (``deliver``)."""
    views = []
    if item_views is None:  # the code before it: each item made into a view of its own
        papers_of = {
            d.digest_id: [stored_view(i.paper, i.score, i.matched, links.base_url) for i in d.items]
            for d in digests
        }
    else:
        papers_of = item_views({d.digest_id: d.items for d in digests}, links.base_url)
    for digest in digests:
        papers = papers_of[digest.digest_id]
        views.append(
            links.digest_view(
                to=digest.email,
                ident=digest.subscriber_id,
                salt=digest.token_salt,
                period=PERIOD,
                papers=papers,
                message_id=f"<digest-{PERIOD.isoformat()}-{digest.digest_id}@example.org>",
            )
        )
    prepare(paper for view in views for paper in view.papers)
    return views


async def send_batches(
    builder: MessageBuilder,
    digests: list[Digest],
    starts: Iterable[int],
    port: int,
    connections: int,
) -> int:
    """Make views, build and send the batches of digests starting at ``starts``, as one
    sender; returns the bytes sent."""
    links = Links(BASE_URL, b"k" * 32, SENDER.from_addr)
    # --no-pipelining: aiosmtplib's one command at a time even though the sink offers
    # PIPELINING (the code before it had no choice)
    options = {"pipelining": False} if NO_PIPELINING else {}
    transport = SMTPTransport(
        "127.0.0.1", port, connections=connections, retries=3, local_hostname="bench.local",
        **options,
    )  # fmt: skip
    sent_bytes = 0

    built = 0

    async def worker(queue: list[DigestView], spare: Callable[[], None]) -> None:
        nonlocal sent_bytes, built
        while queue:  # shared: each digest goes to one worker
            view = queue.pop()
            built += 1
            if built % SPARE_EVERY == 0:
                spare()  # as deliver.send.deliver does
            raw = builder.build(view, NOW)
            sent_bytes += len(raw)
            if NO_SEND:  # the views and the build alone: what the code does, not the kernel
                await asyncio.sleep(0)
                continue
            await transport.send("digest@example.org", view.to, raw, view.message_id)

    async with transport:
        with sparing_the_collector() as spare:
            for at in starts:
                spare()  # as deliver.send.send_outbox does
                getattr(builder, "next_batch", lambda: None)()  # as deliver.send.deliver does
                queue = views_of(links, digests[at : at + BATCH])[::-1]
                # Twice as many workers as connections so building overlaps waiting on the sink.
                await asyncio.gather(*(worker(queue, spare) for _ in range(connections * 2)))
    return sent_bytes


def _share(
    builder: MessageBuilder,
    digests: list[Digest],
    claims: Any,
    port: int,
    connections: int,
    out: Any,
) -> None:
    sent = run_pass(
        send_batches(builder, digests, _claimed(claims, len(digests)), port, connections)
    )
    out.put((sent, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


def _claimed(claims: Any, total: int) -> Iterator[int]:
    """The batches this sender claims, one at a time as it is ready for the next, as a
    run's senders claim the outbox (``store.claims``): where the next starts is shared."""
    while True:
        with claims.get_lock():
            at = claims.value
            claims.value = at + BATCH
        if at >= total:
            return
        yield at


def ours(
    digests: list[Digest], port: int, connections: int, processes: int
) -> tuple[float, float, int, int]:
    """Every digest made into views, built and sent, from ``processes`` forked senders as a
    run sends them (``deliver.processes.senders_for``): the first batch from here, then each
    sender the next batch of the rest as it is ready for one (``_claimed``), over its share of
    the connections, with the builder
    as the first batch left it; returns wall seconds, CPU seconds (the senders' too), bytes sent and
    the largest sender's peak RSS in KB (forked: what it touched of the day set up before)."""
    starts = range(0, len(digests), BATCH)
    started, cpu = time.perf_counter(), time.process_time()
    children_cpu = _children_cpu()
    builder = MessageBuilder(SENDER)
    if processes <= 1:
        sent_bytes = run_pass(send_batches(builder, digests, starts, port, connections))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    else:
        first = run_pass(send_batches(builder, digests, starts[:1], port, connections))
        print(f"first batch, from this process: {time.perf_counter() - started:.2f} s")
        if hasattr(builder, "prepare"):  # as deliver.send.prepare_papers does before forking
            ahead = time.perf_counter()
            rows = {item.paper.id: item.paper for d in digests[BATCH:] for item in d.items}
            made = builder.prepare(
                paper_view(row, 0.0, [], BASE_URL) for _, row in sorted(rows.items())
            )
            print(f"papers worked out ahead: {made:,} in {time.perf_counter() - ahead:.2f} s")
        context = multiprocessing.get_context("fork")
        out = context.SimpleQueue()
        claims = context.Value("q", BATCH)  # the rest, a batch at a time to whoever is ready
        share = max(1, connections // processes)
        senders = [
            context.Process(target=_share, args=(builder, digests, claims, port, share, out))
            for i in range(processes)
        ]
        if SPARES_THE_COLLECTOR:
            gc.freeze()  # as deliver.processes.in_processes forks its senders
        for sender in senders:
            sender.start()
        gc.unfreeze()
        answers = [out.get() for _ in senders]
        sent_bytes = first + sum(sent for sent, _ in answers)
        peak = max(kb for _, kb in answers)
        for sender in senders:
            sender.join()
    wall = time.perf_counter() - started
    used = time.process_time() - cpu + _children_cpu() - children_cpu
    return wall, used, sent_bytes, peak


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def naive_message(view: DigestView) -> EmailMessage:
    """The straightforward build: full Jinja render per message, EmailMessage for MIME."""
    builder = MessageBuilder(SENDER)  # fresh each time: nothing carried between messages
    message = EmailMessage()
    message["From"] = SENDER.from_addr
    message["To"] = view.to
    message["Subject"] = subject_for(view)
    message["Date"] = NOW
    message["Message-ID"] = view.message_id
    message["List-Unsubscribe"] = f"<{view.unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(builder.render_text(view))
    message.add_alternative(builder.render_html(view), subtype="html")
    return message


async def naive(views: list[DigestView], port: int, concurrency: int) -> float:
    """Send a sample the naive way, one connection per message (as concurrent as ours)."""
    queue = iter(views)

    async def worker() -> None:
        for view in queue:
            message = naive_message(view)
            await aiosmtplib.send(
                message, hostname="127.0.0.1", port=port, local_hostname="bench.local"
            )

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


def ceiling(port: int, count: int, size: int, sessions: int, tool: str) -> float:
    """Time smtp-source sending ``count`` messages of ``size`` bytes, reusing connections."""
    started = time.perf_counter()
    subprocess.run(
        [tool, "-d", "-s", str(sessions), "-l", str(size), "-m", str(count),
         "-f", "digest@example.org", "-t", "reader@example.net", f"127.0.0.1:{port}"],
        check=True,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - started


_FIGURES = re.compile(
    r"^ours: +([\d,]+) messages/s .*?([\d,]+) us CPU a message\)$"
    r"|^ceiling: +([\d,]+) messages/s"
    r"|^ours / ceiling: ([\d.]+)",
    re.MULTILINE,
)


def side_by_side(baseline: Path, rest: list[str], rounds: int) -> None:
    """This script on the baseline's code and on this checkout's, in turns."""
    rows: list[tuple[str, int, str, str, str, str]] = []
    turn: dict[str, int] = {}
    for name, output in in_turns(baseline, rounds, rest, script=Path(__file__).resolve()):
        turn[name] = turn.get(name, 0) + 1
        rate = cpu = ceil = ratio = ""
        for found in _FIGURES.finditer(output):
            rate, cpu = found.group(1) or rate, found.group(2) or cpu
            ceil, ratio = found.group(3) or ceil, found.group(4) or ratio
        rows.append((name, turn[name], rate, cpu, ceil, ratio))
    print("\n| round | code | messages/s | CPU a message | ceiling | ours / ceiling |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, number, rate, cpu, ceil, ratio in sorted(rows, key=lambda r: (r[1], r[0])):
        print(f"| {number} | {name} | {rate} | {cpu} us | {ceil} | {ratio} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digests", type=int, default=20_000)
    parser.add_argument("--papers", type=int, default=5_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--naive-sample", type=int, default=1_000)
    parser.add_argument(
        "--processes", type=int, help="sending processes (default: as a run would fork)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--no-pipelining",
        action="store_true",
        help="send one command at a time through aiosmtplib, as before PIPELINING",
    )
    parser.add_argument(
        "--no-send",
        action="store_true",
        help="make the views and build every message as ours does, but send none (its CPU"
        " a message is the build's alone; its rates and ratios mean nothing)",
    )
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT")
    parser.add_argument("--rounds", type=int, default=1, help="turns each with --baseline")
    add_dumps_argument(parser)
    args = parser.parse_args()
    global NO_PIPELINING, NO_SEND
    NO_PIPELINING = args.no_pipelining
    NO_SEND = args.no_send
    if args.baseline:
        side_by_side(args.baseline, args_for_turns(sys.argv[1:]), args.rounds)
        return 0

    sink = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    source = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    for tool in (sink, source):
        if not shutil.which(tool):
            print(f"{tool} not found: apt-get install postfix", file=sys.stderr)
            return 1

    started = time.perf_counter()
    digests = make_day(args)
    items = sum(len(d.items) for d in digests)
    print(f"set-up: {len(digests):,} digests ranked in {time.perf_counter() - started:.1f} s")

    port = free_port()
    sink_process = subprocess.Popen(
        [sink, "-u", "nobody", f"127.0.0.1:{port}", "1000"], stdout=subprocess.DEVNULL
    )
    try:
        wait_for_port(port)
        processes = args.processes or senders_for(len(digests))
        ours_seconds, ours_cpu, sent_bytes, senders_kb = ours(
            digests, port, args.connections, processes
        )
        average = sent_bytes // len(digests)
        ceiling_seconds = ceiling(port, len(digests), average, 20, source)
        sample = views_of(
            Links(BASE_URL, b"k" * 32, SENDER.from_addr), digests[: args.naive_sample]
        )
        naive_seconds = asyncio.run(naive(sample, port, args.connections * 2))
    finally:
        sink_process.terminate()
        sink_process.wait(timeout=10)

    ours_rate = len(digests) / ours_seconds
    ceiling_rate = len(digests) / ceiling_seconds
    naive_rate = len(sample) / naive_seconds
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"digests: {len(digests):,} of {items / len(digests):.1f} papers on average from "
        f"{args.papers:,}; average {average:,} B"
    )
    print(
        f"ours:    {ours_rate:8,.0f} messages/s  ({ours_seconds:.1f} s, {processes} process"
        f"{'es' if processes > 1 else ''}, {args.connections} connections,"
        f" {ours_cpu / len(digests) * 1e6:,.0f} us CPU a message)"
    )
    print(
        f"ceiling: {ceiling_rate:8,.0f} messages/s  (smtp-source -d -s 20, {ceiling_seconds:.1f} s)"
    )
    print(
        f"naive:   {naive_rate:8,.0f} messages/s  (sample of {len(sample):,}, "
        f"~{len(digests) / naive_rate:.0f} s for all)"
    )
    print(
        f"ours / ceiling: {ours_rate / ceiling_rate:.2f}   ours / naive: {ours_rate / naive_rate:.1f}x"
    )
    print(
        f"peak RSS: {peak_mb:.0f} MB (this process, the day's set-up in it); the largest"
        f" sender's {senders_kb / 1024:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
