"""The cost of a reader's own links in the email: build digests with and without them (run
by hand).

    python bench/votes.py [--digests 20000] [--papers 20] [--baseline CHECKOUT [--rounds N]]

Each reader's digest carries ``--papers`` papers drawn from a pool of 2,000 (a day), so
paper blocks are shared between digests as in a real run; each paper links its page on
the site. In the same run, one ``MessageBuilder`` builds every digest twice: without the
reader's links (plain page links, no vote links), and with them (``Links.digest_view``:
the reader's signed vote links, and where the code has them, their token in the page link
too). Prints messages/s for both and the ratio, and the time of making the views alone
(signing included). ``--baseline``: this script on another checkout's code (its ``.venv``
when it has one) and on this one's, in turns, and the ratios side by side.
"""

from __future__ import annotations

import argparse
import random
import re
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from match import in_turns  # bench/match.py

from digest.deliver.message import MessageBuilder, Sender
from digest.present import views
from digest.present.paper import DigestView, PaperView
from digest.present.views import Links
from digest.tokens import feed_name, link_token

NOW = datetime(2026, 3, 12, 7, 0, tzinfo=UTC)
BASE_URL = "https://papers.example.org"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digests", type=int, default=20_000)
    parser.add_argument("--papers", type=int, default=20)
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT")
    parser.add_argument("--rounds", type=int, default=2, help="turns each with --baseline")
    parser.add_argument("--passes", type=int, default=3, help="alternating timed passes")
    args = parser.parse_args()
    if args.baseline:
        side_by_side(
            args.baseline,
            [
                *("--digests", str(args.digests), "--papers", str(args.papers)),
                *("--passes", str(args.passes)),
            ],
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
            **_page_links(f"arxiv:2403.{n:05d}"),
        )
        for n in range(2_000)
    ]
    links = Links(BASE_URL, b"k" * 32, "digest@papers.example.org")
    sender = Sender("digest@papers.example.org", "Papers", "papers", "https://papers.example.org")
    readers = [rng.sample(pool, args.papers) for _ in range(args.digests)]
    builder = MessageBuilder(sender)
    # every paper's blocks (with and without a reader's links) rendered once before timing
    for chunk in range(0, len(pool), args.papers):
        papers = pool[chunk : chunk + args.papers]
        builder.build(_plain(links, 0, papers), NOW)
        builder.build(_linked(links, 0, papers), NOW)
    # CPU time, the best of alternating passes: the machine is shared
    timings: dict[str, float] = {}
    sizes: dict[str, int] = {}
    for _ in range(args.passes):
        for name in ("without links", "with vote links"):
            start = time.process_time()
            size = 0
            for ident, papers in enumerate(readers):
                if name == "without links":
                    view = _plain(links, ident, papers)
                else:
                    view = _linked(links, ident, papers)
                size += len(builder.build(view, NOW))
            timings[name] = min(timings.get(name, float("inf")), time.process_time() - start)
            sizes[name] = size
    for name, seconds in timings.items():
        print(
            f"{name}: {args.digests / seconds:,.0f} messages/s"
            f" ({seconds:.2f} CPU-s, {sizes[name] / args.digests / 1024:.1f} KB each)"
        )
    ratio = timings["with vote links"] / timings["without links"]
    print(f"ratio: {ratio:.2f}x the time")
    start = time.perf_counter()
    for ident, papers in enumerate(readers):
        _linked(links, ident, papers)
    signing = time.perf_counter() - start
    items = args.digests * args.papers
    print(
        f"views alone (Links.digest_view, signing included): {signing / items * 1e6:.1f} us an item"
    )


def _page_links(key: str) -> dict[str, Any]:
    """A paper's links to its page (and, where the code has them, their token templates)."""
    if hasattr(views, "paper_links"):
        page, token_links = views.paper_links(BASE_URL, key)
        return {"page_url": page, "token_links": token_links}
    return {"page_url": views.paper_url(BASE_URL, key)}  # the code before the page's token


def side_by_side(baseline: Path, rest: list[str], rounds: int) -> None:
    """This script on the baseline's code and on this checkout's, in turns."""
    found: dict[str, list[str]] = {"baseline": [], "this checkout": []}
    for name, output in in_turns(baseline, rounds, rest, script=Path(__file__).resolve()):
        rates = re.findall(r"([\d,]+) messages/s", output)
        ratio = re.search(r"ratio: ([\d.]+)x", output)
        if len(rates) != 2 or ratio is None:
            raise SystemExit(f"no figures in the output of {name}")
        signing = re.search(r"views alone .*: ([\d.]+) us", output)
        alone = f"; views {signing.group(1)} us an item" if signing else ""
        found[name].append(f"{rates[0]} / {rates[1]} messages/s, {ratio.group(1)}x{alone}")
    print("\n| round | baseline: without / with links | this checkout |\n| --- | --- | --- |")
    for turn, (old, new) in enumerate(zip(*found.values(), strict=True), 1):
        print(f"| {turn} | {old} | {new} |")


def _linked(links: Links, ident: int, papers: list[PaperView]) -> DigestView:
    return links.digest_view(
        to=f"r{ident}@example.org",
        ident=ident,
        salt=f"salt{ident}",
        period=date(2026, 3, 12),
        papers=papers,
        message_id=f"<m{ident}@x>",
    )


def _plain(links: Links, ident: int, papers: list[PaperView]) -> DigestView:
    """The reader's digest as ``Links.digest_view`` makes it (signed unsubscribe, manage and
    feed links), without their own links to each paper."""
    salt = f"salt{ident}"
    token = link_token(links.key, ident, salt)
    return DigestView(
        to=f"r{ident}@example.org",
        period=date(2026, 3, 12),
        papers=papers,
        message_id=f"<m{ident}@x>",
        unsubscribe_url=links.unsubscribe_url(token),
        unsubscribe_mailto=links.unsubscribe_mailto(token),
        feed_url=links.feed_url(feed_name(links.key, ident, salt)),
        manage_url=links.manage_url(links.manage_token(ident, salt)),
    )


if __name__ == "__main__":
    main()
