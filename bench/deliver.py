"""Delivery speed: build and send 20,000 digests over SMTP to Postfix's smtp-sink.

Run by hand (not in CI), with Postfix's test tools installed
(``apt-get install postfix`` provides /usr/sbin/smtp-sink and smtp-source):

    python bench/deliver.py [--digests 20000] [--connections 8] [--naive-sample 1000]

In the same run, against the same sink, it measures
- ours: one MessageBuilder (paper blocks rendered once) and the pooled SMTPTransport;
- the ceiling: smtp-source sending as many messages of the same average size;
- the naive way: per message a Jinja render, an EmailMessage and ``aiosmtplib.send``
  on a new connection, timed on a sample and extrapolated.
Prints messages/s, the ratios, and peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import shutil
import socket
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from email.message import EmailMessage

import aiosmtplib

from digest.deliver.message import MessageBuilder, Sender, subject_for
from digest.deliver.transports import SMTPTransport
from digest.present.paper import DigestView, PaperView

WORD_TEXT = (
    "learning model models language large neural network networks training data diffusion "
    "transformer attention agents reasoning benchmark vision robust federated graph sparse "
    "token inference retrieval alignment reward policy scaling efficient multimodal video "
    "speech protein molecular quantization pruning distillation evaluation safety"
)
WORDS = WORD_TEXT.split()
SENDER = Sender(
    "digest <digest@example.org>", "digest", "papers.example.org", "https://example.org"
)
NOW = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
PERIOD = date(2026, 11, 22)


def make_papers(count: int, rng: random.Random) -> list[PaperView]:
    """Synthetic papers: arXiv-like titles and ~1,000-character abstracts, some with code links."""
    papers = []
    for n in range(count):
        title = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 12))).capitalize()
        abstract = " ".join(rng.choice(WORDS) for _ in range(rng.randint(110, 170))) + "."
        if rng.random() < 0.4:
            abstract += f" Code: https://github.com/lab{n % 97}/project-{n}."
        interests = tuple(rng.sample(WORDS, 1))
        papers.append(
            PaperView(
                f"arxiv:2411.{n:05d}",
                title,
                abstract,
                None,
                f"2411.{n:05d}",
                1.0,
                interests,
            )
        )
    return papers


def make_digests(count: int, papers: list[PaperView], rng: random.Random) -> list[DigestView]:
    """Digests of 10-30 papers each from the pool."""
    return [
        DigestView(
            f"reader{n}@example.net",
            PERIOD,
            rng.sample(papers, rng.randint(10, 30)),
            f"<digest-{PERIOD.isoformat()}-{n}@example.org>",
            f"https://example.org/unsubscribe?token={n:08x}{'a' * 40}",
            "unsubscribe@example.org",
            f"https://example.org/feeds/{n:08x}{'b' * 24}.atom",
            f"https://example.org/manage?token={n:08x}{'a' * 40}",
        )
        for n in range(count)
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"smtp-sink did not start on port {port}")


async def ours(digests: list[DigestView], port: int, connections: int) -> tuple[float, float, int]:
    """Build and send every digest; returns wall seconds, CPU seconds and bytes sent."""
    builder = MessageBuilder(SENDER)
    transport = SMTPTransport(
        "127.0.0.1", port, connections=connections, retries=3, local_hostname="bench.local"
    )
    queue = iter(digests)
    sent_bytes = 0

    async def worker() -> None:
        nonlocal sent_bytes
        for view in queue:  # the iterator is shared: each digest goes to one worker
            raw = builder.build(view, NOW)
            sent_bytes += len(raw)
            await transport.send("digest@example.org", view.to, raw, view.message_id)

    started, cpu = time.perf_counter(), time.process_time()
    async with transport:
        # Twice as many workers as connections so building overlaps waiting on the sink.
        await asyncio.gather(*(worker() for _ in range(connections * 2)))
    return time.perf_counter() - started, time.process_time() - cpu, sent_bytes


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


async def naive(digests: list[DigestView], port: int, concurrency: int) -> float:
    """Send a sample the naive way, one connection per message (as concurrent as ours)."""
    queue = iter(digests)

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digests", type=int, default=20_000)
    parser.add_argument("--papers", type=int, default=5_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--naive-sample", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    sink = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    source = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    for tool in (sink, source):
        if not shutil.which(tool):
            print(f"{tool} not found: apt-get install postfix", file=sys.stderr)
            return 1

    rng = random.Random(args.seed)
    papers = make_papers(args.papers, rng)
    digests = make_digests(args.digests, papers, rng)

    port = free_port()
    sink_process = subprocess.Popen(
        [sink, "-u", "nobody", f"127.0.0.1:{port}", "1000"], stdout=subprocess.DEVNULL
    )
    try:
        wait_for_port(port)
        ours_seconds, ours_cpu, sent_bytes = asyncio.run(ours(digests, port, args.connections))
        average = sent_bytes // len(digests)
        ceiling_seconds = ceiling(port, len(digests), average, 20, source)
        sample = digests[: args.naive_sample]
        naive_seconds = asyncio.run(naive(sample, port, args.connections * 2))
    finally:
        sink_process.terminate()
        sink_process.wait(timeout=10)

    ours_rate = len(digests) / ours_seconds
    ceiling_rate = len(digests) / ceiling_seconds
    naive_rate = len(sample) / naive_seconds
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"digests: {len(digests):,} of 10-30 papers from {len(papers):,}; average {average:,} B")
    print(
        f"ours:    {ours_rate:8,.0f} messages/s  ({ours_seconds:.1f} s, {args.connections} "
        f"connections, {ours_cpu / len(digests) * 1e6:.0f} us CPU a message)"
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
    print(f"peak RSS: {peak_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
