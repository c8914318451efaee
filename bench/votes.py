"""The cost of vote links in the email: build digests with and without them (run by hand).

    python bench/votes.py [--digests 20000] [--papers 20] [--baseline CHECKOUT [--rounds N]]

Each reader's digest carries ``--papers`` papers drawn from a pool of 2,000 (a day), so
paper blocks are shared between digests as in a real run. In the same run, one
``MessageBuilder`` builds every digest twice: without vote links, and with each item's
two signed links (``Links.digest_view``: a reader's vote key once, then two keyed hashes
per item, filled into the shared blocks). Prints messages/s for both and the ratio.
``--baseline``: this script on another checkout's code (its ``.venv`` when it has one) and
on this one's, in turns, and the ratios side by side.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

from digest.deliver.message import DigestView, MessageBuilder, PaperView, Sender
from digest.deliver.views import Links

NOW = datetime(2026, 3, 12, 7, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digests", type=int, default=20_000)
    parser.add_argument("--papers", type=int, default=20)
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT")
    parser.add_argument("--rounds", type=int, default=2, help="turns each with --baseline")
    args = parser.parse_args()
    if args.baseline:
        side_by_side(
            args.baseline,
            ["--digests", str(args.digests), "--papers", str(args.papers)],
            args.rounds,
        )
        return
    rng = random.Random(7)
    words = [
        "model",
        "learning",
        "data",
        "language",
        "speech",
        "vision",
        "graph",
        "diffusion",
        "token",
        "agent",
    ]
    pool = [
        PaperView(
            f"arxiv:2403.{n:05d}",
            " ".join(rng.choices(words, k=8)).title(),
            " ".join(rng.choices(words, k=150)),
            None,
            f"2403.{n:05d}",
            1.0,
            interests=("speech",),
        )
        for n in range(2_000)
    ]
    links = Links("https://papers.example.org", b"k" * 32, "digest@papers.example.org")
    sender = Sender("digest@papers.example.org", "Papers", "papers", "https://papers.example.org")
    readers = [rng.sample(pool, args.papers) for _ in range(args.digests)]
    builder = MessageBuilder(sender)
    for papers in readers[:200]:  # every paper block rendered once before timing
        builder.build(_plain(links, papers), NOW)
    timings = {}
    for name in ("without links", "with vote links"):
        start = time.perf_counter()
        size = 0
        for ident, papers in enumerate(readers):
            if name == "without links":
                view = _plain(links, papers)
            else:
                view = links.digest_view(
                    to=f"r{ident}@example.org",
                    ident=ident,
                    salt=f"salt{ident}",
                    period=date(2026, 3, 12),
                    papers=papers,
                    message_id=f"<m{ident}@x>",
                )
            size += len(builder.build(view, NOW))
        timings[name] = time.perf_counter() - start
        print(
            f"{name}: {args.digests / timings[name]:,.0f} messages/s"
            f" ({timings[name]:.2f} s, {size / args.digests / 1024:.1f} KB each)"
        )
    ratio = timings["with vote links"] / timings["without links"]
    print(f"ratio: {ratio:.2f}x the time")
    start = time.perf_counter()
    for ident, papers in enumerate(readers):
        for paper in papers:
            links.vote_urls(ident, f"salt{ident}", paper.key)
    signing = time.perf_counter() - start
    items = args.digests * args.papers
    print(f"signing alone (Links.vote_urls): {signing / items * 1e6:.1f} us an item")


def side_by_side(baseline: Path, rest: list[str], rounds: int) -> None:
    """This script on the baseline's code and on this checkout's, in turns."""
    runs = {"baseline": baseline.resolve(), "this checkout": REPO}
    found: dict[str, list[str]] = {name: [] for name in runs}
    for turn in range(rounds):
        for name, checkout in runs.items():
            venv = checkout / ".venv" / "bin" / "python"
            python = str(venv) if venv.exists() else sys.executable
            env = {**os.environ, "PYTHONPATH": str(checkout)}
            done = subprocess.run(
                [python, __file__, *rest], env=env, capture_output=True, text=True, check=True
            )
            print(f"--- round {turn + 1}, {name}: {checkout}\n{done.stdout}", end="", flush=True)
            rates = re.findall(r"([\d,]+) messages/s", done.stdout)
            ratio = re.search(r"ratio: ([\d.]+)x", done.stdout)
            if len(rates) != 2 or ratio is None:
                raise SystemExit(f"no figures in the output of {name}")
            signing = re.search(r"signing alone \(Links.vote_urls\): ([\d.]+) us", done.stdout)
            alone = f"; signing {signing.group(1)} us an item" if signing else ""
            found[name].append(f"{rates[0]} / {rates[1]} messages/s, {ratio.group(1)}x{alone}")
    print("\n| round | baseline: without / with links | this checkout |\n| --- | --- | --- |")
    for turn, (old, new) in enumerate(zip(*found.values(), strict=True), 1):
        print(f"| {turn} | {old} | {new} |")


def _plain(links: Links, papers: list[PaperView]) -> DigestView:
    return DigestView(
        to="r@example.org",
        period=date(2026, 3, 12),
        papers=papers,
        message_id="<m@x>",
        unsubscribe_url=links.unsubscribe_url("1.x"),
        unsubscribe_mailto=links.unsubscribe_mailto("1.x"),
        feed_url=links.feed_url("x"),
    )


if __name__ == "__main__":
    main()
