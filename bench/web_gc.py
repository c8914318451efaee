"""A web worker's garbage-collector passes while it answers private feeds, in process:
CPython's collector as it comes, then with ``digest.web.collector`` (what ``digest web``
workers install), each in a fresh process on the same store and the same feeds.

Run by hand, after ``bench/web.py`` built its store:

    python bench/web.py --papers 100000 --subscribers 70000 --cases 304  # builds it
    python bench/web_gc.py [--cache DIR] --papers 100000 --subscribers 70000 [--feeds 1500]

(the same ``--cache``, ``--papers`` and ``--subscribers`` as bench/web.py). Each process
answers ``--feeds`` rendered private feeds of readers none asked for before (their
entries mostly still to make), then as many again (most entries made), one at a time
through the ASGI test client, and prints for each pass of the collector's generations
how many there were, their CPU time (the thread's, so other jobs on the machine count
little) in all and at most, and the requests' wall time. CPU time is what a worker's
requests wait for, whatever the machine does beside.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SECRET = "bench-web-secret-key-0123456789abcdef"  # bench/web.py's


def _serve(data: Path, feeds: int, collector: bool) -> None:
    from starlette.testclient import TestClient

    from digest.settings import load_settings
    from digest.tokens import feed_name
    from digest.web import collector as worker_collector
    from digest.web.app import create_app

    logging.disable(logging.CRITICAL)
    env = {
        "DIGEST_DATA_DIR": str(data),
        "DIGEST_SECRET_KEY": SECRET,
        "DIGEST_BASE_URL": "http://127.0.0.1:9",
        "DIGEST_LOG_FORMAT": "json",
    }
    settings = load_settings(environ=env, cwd=Path(tempfile.gettempdir()))
    app = create_app(settings)
    raw = sqlite3.connect(data / "digest.db")
    salts = raw.execute("SELECT id, token_salt FROM subscriber WHERE status = 'active'").fetchall()
    raw.close()
    random.Random(11).shuffle(salts)
    key = settings.secret_key.encode()
    paths = [f"/feeds/private/{feed_name(key, i, s)}.atom" for i, s in salts[: 2 * feeds + 1]]
    passes: list[tuple[int, float]] = []
    started = [0.0]

    def note(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.thread_time()
        else:
            passes.append((info["generation"], time.thread_time() - started[0]))

    with TestClient(app) as client:
        client.get(paths[0])
        if collector:
            worker_collector.keep_off_requests()
        for part, chosen in (
            ("entries to make", paths[1 : feeds + 1]),
            ("entries made", paths[feeds + 1 :]),
        ):
            passes.clear()
            gc.callbacks.insert(0, note)
            took = []
            for path in chosen:
                begun = time.perf_counter()
                assert client.get(path).status_code == 200
                took.append(time.perf_counter() - begun)
            gc.callbacks.remove(note)
            took.sort()
            for generation in range(3):
                cpu = [spent for g, spent in passes if g == generation]
                print(
                    f"| {part} | {generation} | {len(cpu)} | {sum(cpu) * 1000:.0f} |"
                    f" {max(cpu, default=0) * 1000:.1f} |"
                    f" {took[len(took) // 2] * 1000:.1f} / {took[int(len(took) * 0.99)] * 1000:.1f}"
                    f" / {took[-1] * 1000:.1f} |",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--papers", type=int, default=1_000_000)
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "digest-bench-web"
    )
    parser.add_argument("--feeds", type=int, default=1_500)
    parser.add_argument("--serve", choices=["cpython", "collector"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    data = args.cache / f"store-{args.papers}-{args.subscribers}"
    if args.serve:
        _serve(data, args.feeds, args.serve == "collector")
        return
    if not (data / "digest.db").exists():
        raise SystemExit(f"no store in {data}: run bench/web.py with these sizes first")
    print(f"{args.feeds:,} feeds, then {args.feeds:,} more, one worker in process")
    print(
        "| collector | feeds | generation | passes | CPU ms in all | CPU ms at most |"
        " request ms p50 / p99 / max |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for mode in ("cpython", "collector"):
        done = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--serve", mode],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        for line in done.stdout.splitlines():
            print(f"| {mode} {line}")
    print("load average: " + ", ".join(f"{load:.2f}" for load in os.getloadavg()))


if __name__ == "__main__":
    main()
