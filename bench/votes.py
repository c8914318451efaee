"""The cost of vote links in the email: build digests with and without them (run by hand).

    python bench/votes.py [--digests 20000] [--papers 20]

Each reader's digest carries ``--papers`` papers drawn from a pool of 2,000 (a day), so
paper blocks are shared between digests as in a real run. In the same run, one
``MessageBuilder`` builds every digest twice: without vote links, and with each item's
two signed links (``Links.digest_view``: two HMACs per item, filled into the shared
blocks). Prints messages/s for both and the ratio.
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, date, datetime

from digest.deliver.message import DigestView, MessageBuilder, PaperView, Sender
from digest.deliver.views import Links

NOW = datetime(2026, 3, 12, 7, 0, tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digests", type=int, default=20_000)
    parser.add_argument("--papers", type=int, default=20)
    args = parser.parse_args()
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
