"""Subscribe POSTs for known and unknown addresses, side by side: no address enumeration
means the two answers look alike, in status, body and time.

Run by hand (not in CI):

    python bench/subscription.py [--requests 300] [--known 1000]

A fresh store in a temporary folder, ``--known`` subscribers already active, the confirmation
emails written by the file transport (the same work for either kind of address). Requests
alternate between a known and a new address, through the ASGI app in this process (the
rate limits lifted, since every request here comes from one client). Prints the median and
p90 of each kind and their ratio.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from starlette.testclient import TestClient

from digest.service.subscriptions import operator_patch, save_subscribers
from digest.settings import load_settings
from digest.store.engine import open_store
from digest.web.app import create_app
from digest.web.security import RateLimit
from digest.web.state import WebState

BASE = "https://papers.example.org"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="POSTs of each kind")
    parser.add_argument("--known", type=int, default=1000, help="subscribers stored first")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        settings = load_settings(
            None,
            environ={
                "DIGEST_DATA_DIR": str(root / "data"),
                "DIGEST_MAIL_TRANSPORT": f"file://{root / 'outbox'}",
                "DIGEST_BASE_URL": BASE,
                "DIGEST_SECRET_KEY": "a-key-for-the-benchmark-only-0123456789",
            },
            cwd=root,
        )
        engine = open_store(settings.database_url)
        now = datetime.now(UTC)
        count = max(args.known, args.requests)
        save_subscribers(
            engine,
            [operator_patch(f"known{n}@example.org", ["graphs"]) for n in range(count)],
            now=now,
        )
        app = create_app(settings, engine)
        state = app.state.digest
        assert isinstance(state, WebState)
        for name in ("subscribe-client", "subscribe-email"):
            state.limits[name] = RateLimit(10**9, 3600)
        client = TestClient(app, base_url=BASE)
        page = client.get("/subscribe").text
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert found
        csrf = found.group(1)
        times: dict[str, list[float]] = {"known": [], "new": []}
        bodies: dict[str, set[str]] = {"known": set(), "new": set()}
        for n in range(args.requests):
            for kind in ("known", "new"):
                address = f"{kind}{n}@example.org"
                started = time.perf_counter()
                answer = client.post(
                    "/subscribe", data={"csrf": csrf, "email": address, "interests": "graphs"}
                )
                times[kind].append(time.perf_counter() - started)
                if answer.status_code != 200:
                    print(f"{kind} {address}: {answer.status_code}", file=sys.stderr)
                    return 1
                bodies[kind].add(answer.text.replace(address, "ADDRESS"))
        engine.dispose()
    print(f"{args.requests} subscribe POSTs of each kind, {count} subscribers stored")
    print("| address | median | p90 |")
    print("| --- | --- | --- |")
    for kind, values in times.items():
        cuts = statistics.quantiles(values, n=10)
        print(f"| {kind} | {statistics.median(values) * 1000:.2f} ms | {cuts[-1] * 1000:.2f} ms |")
    ratio = statistics.median(times["known"]) / statistics.median(times["new"])
    print(f"median known / new: {ratio:.3f}")
    print(f"distinct answers (address blanked): {len(bodies['known'] | bodies['new'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
