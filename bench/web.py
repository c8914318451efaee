"""The web front under load: `digest web` (uvicorn) against nginx serving a static file,
both on loopback, measured by wrk in one run.

Run by hand (not in CI; needs wrk and nginx):

    python bench/web.py [--papers 1000000] [--subscribers 100000] [--cache DIR]
                        [--workers 2] [--seconds 10] [--connections 8] [--warm-seconds 60]
                        [--cases NAME,...] [--baseline CHECKOUT [--rounds N]]

The store (papers over the last five years, subscribers each sent two digests of ten
papers) is built with bulk inserts and kept under ``--cache`` (default: a folder in the
temp directory), so a second run starts at once. Then, for each case, wrk runs twice:
closed loop (``--connections`` connections, each sending its next request when the last
is answered; wrk has no fixed-rate mode) and paced near 500 requests/s (each connection
waits between requests, wrk's ``delay()``). Cases: a private feed answered 304, a private
feed rendered (every request a subscriber not asked for before) twice: first with each
worker's entries still to make (as after a restart), then with them made (each worker
first answers other readers' feeds of the same papers for ``--warm-seconds``, unmeasured:
a day's papers go to many readers), a paper page, the "try it" preview, a subscribe POST
(CSRF cookie and field fetched once; mail to a file:// transport), and nginx serving a
static file of the size of a rendered private feed. ``--cases`` runs only the cases whose
name holds one of the words given. ``--baseline CHECKOUT`` runs this script on that
checkout's code and on this one's in turns (``--rounds`` times each, on the same store),
then prints both side by side with their ratios.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlencode

import httpx
import sqlalchemy as sa
from match import args_for_turns, in_turns  # bench/match.py

from digest.settings import load_settings
from digest.store.engine import open_store, transaction
from digest.store.models import Subscriber
from digest.store.papers import index_papers, insert_papers
from digest.tokens import feed_name

REPO = Path(__file__).resolve().parents[1]
SECRET = "bench-web-secret-key-0123456789abcdef"
DAYS = 5 * 365
STAMP = "%Y-%m-%d %H:%M:%S.%f"  # how the store keeps times on SQLite
PACED_RATE = 500


def vocabulary() -> list[str]:
    """Words of the listing dumps (the real ones when beside the repo, else the examples)."""
    folders = [REPO.parent / "shared" / "dumps", REPO / "examples" / "dumps"]
    words: set[str] = set()
    for folder in folders:
        for path in sorted(folder.glob("*.txt")) if folder.is_dir() else []:
            words.update(re.findall(r"[a-z][a-z-]{2,}", path.read_text(encoding="utf-8").lower()))
        if len(words) > 500:
            break
    return sorted(words)


def build_store(data: Path, papers: int, subscribers: int, seed: int) -> None:
    """A store of ``papers`` papers and ``subscribers`` subscribers, by bulk inserts."""
    rng = random.Random(seed)
    words = vocabulary()
    rng.shuffle(words)
    # Zipf-like word frequencies; cumulative once (choices would redo it every call)
    cumulative = list(itertools.accumulate(1 / (rank + 2.7) for rank in range(len(words))))
    url = f"sqlite:///{data / 'digest.db'}"
    engine = open_store(url)
    now = datetime.now(UTC)
    started = time.perf_counter()
    batch = 50_000
    with transaction(engine) as conn:
        conn.exec_driver_sql("UPDATE ingest_sequence SET value = 1")
        for first in range(0, papers, batch):
            rows = []
            for i in range(first, min(first + batch, papers)):
                title = " ".join(
                    rng.choices(words, cum_weights=cumulative, k=rng.randint(6, 14))
                ).capitalize()
                abstract = " ".join(
                    rng.choices(words, cum_weights=cumulative, k=rng.randint(120, 200))
                )
                seen = now - timedelta(days=DAYS * (papers - i) / papers)
                ident = f"{2000 + i // 90000:04d}.{i % 90000:05d}"
                rows.append(
                    {
                        "key": f"arxiv:{ident}",
                        "title_key": title.lower(),
                        "arxiv_id": ident,
                        "title": title,
                        "abstract": abstract + ".",
                        "authors": "A. Author, B. Author",
                        "url": f"https://huggingface.co/papers/{ident}",
                        "listing_date": seen.date(),
                        "revised": None,
                        "first_seen": seen,
                        "last_seen": seen,
                        "seq": 1,
                    }
                )
            insert_papers(conn, rows)
            print(f"\r  papers: {first + len(rows):,}", end="", file=sys.stderr)
        print(file=sys.stderr)
        conn.exec_driver_sql(
            "UPDATE paper SET times_seen = 2 + id % 3 WHERE id % 7 = 0 AND id > ?",
            (papers - papers // 200,),
        )
        index_papers(conn)
    print(f"  papers and search index: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    topical = words[200:3000]
    with transaction(engine) as conn:
        conn.execute(
            sa.insert(Subscriber),
            [
                {
                    "email": f"reader{n}@example.org",
                    "interests": json.dumps(rng.sample(topical, rng.randint(1, 4))),
                    "token_salt": secrets.token_hex(16),
                    "created_at": now - timedelta(days=30),
                    "status": "active",
                    "seen_upto": 1,
                }
                for n in range(subscribers)
            ],
        )
    engine.dispose()
    # Two sent digests of ten papers each per subscriber: what their private feed shows.
    raw = sqlite3.connect(data / "digest.db")
    with raw:
        digests = []
        items = []
        digest_id = 0
        for sid in range(1, subscribers + 1):
            for day in (2, 1):
                digest_id += 1
                sent = (now - timedelta(days=day)).strftime(STAMP)
                period = (now - timedelta(days=day)).date().isoformat()
                digests.append(
                    (digest_id, sid, period, "sent", f"<b{digest_id}@bench>", 1, sent, sent)
                )
                for rank in range(1, 11):
                    pid = papers - rng.randrange(min(papers, 20_000))
                    hits = json.dumps(
                        [{"interest": "bench", "terms": [], "fields": [], "score": 1}]
                    )
                    items.append((digest_id, sid, pid, rank, 1.0, hits))
        raw.executemany(
            "INSERT INTO digest (id, subscriber_id, period, status, message_id, attempts,"
            " created_at, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            digests,
        )
        raw.executemany(
            "INSERT OR IGNORE INTO digestitem (digest_id, subscriber_id, paper_id, rank, score,"
            " matched) VALUES (?, ?, ?, ?, ?, ?)",
            items,
        )
    raw.close()
    print(f"  store built in {time.perf_counter() - started:.0f} s", file=sys.stderr)


@dataclass
class Result:
    """What wrk reported for one case."""

    case: str
    mode: str
    rate: float
    p50: float
    p99: float
    non_2xx: int


def _ms(value: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if found is None:  # no request finished
        return float("nan")
    number, unit = found.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def wrk(url: str, script: Path, seconds: int, connections: int) -> tuple[float, float, float, int]:
    """requests/s, p50 ms, p99 ms, and failures (non-2xx/3xx answers, timeouts after 10 s)
    of one wrk run."""
    threads = min(2, connections)
    done = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    out = done.stdout
    if done.stderr.strip():  # a script wrk could not load: it would measure GET / instead
        raise SystemExit(f"wrk could not use {script}: {done.stderr.strip()}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50, p99 = (
        _ms(found.group(1))
        if (found := re.search(rf"^\s+{q}%\s+(\S+)", out, re.M))
        else float("nan")
        for q in (50, 99)
    )
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    timeouts = re.search(r"timeout (\d+)", out)
    failed = (int(bad.group(1)) if bad else 0) + (int(timeouts.group(1)) if timeouts else 0)
    return rate, p50, p99, failed


def lua(requests: list[tuple[str, str, dict[str, str], str]], delay_ms: float = 0) -> str:
    """A wrk script sending ``requests`` (method, path, headers, body) round-robin."""

    def string(value: str) -> str:
        return "[==[" + value + "]==]"

    # Requests are formatted in init(): wrk knows the Host header only once a thread starts.
    lines = ["local specs = {}"]
    for method, path, headers, body in requests:
        heads = ", ".join(f"[ {string(k)} ] = {string(v)}" for k, v in headers.items())
        lines.append(
            f"specs[#specs + 1] = {{{string(method)}, {string(path)}, {{{heads}}},"
            f" {string(body) if body else 'nil'}}}"
        )
    lines += [
        "local reqs = {}",
        "local n = 0",
        "function setup(thread) thread:set('offset', math.random(#specs)) end",
        "function init(args)",
        "  n = tonumber(offset) or 0",
        "  for i, s in ipairs(specs) do",
        "    s[3]['Host'] = wrk.host .. ':' .. wrk.port",
        "    reqs[i] = wrk.format(s[1], s[2], s[3], s[4])",
        "  end",
        "end",
        "function request() n = n + 1; return reqs[(n % #reqs) + 1] end",
    ]
    if delay_ms:
        lines.append(f"function delay() return {delay_ms:.0f} end")
    return "\n".join(lines) + "\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not answer")


def start_nginx(folder: Path, port: int, size: int) -> subprocess.Popen[bytes]:
    """nginx, unprivileged, serving one static file of ``size`` bytes at /feed.atom."""
    root = folder / "nginx"
    (root / "www").mkdir(parents=True, exist_ok=True)
    (root / "www" / "feed.atom").write_bytes(b"x" * size)
    config = root / "nginx.conf"
    config.write_text(
        f"""worker_processes 2;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {root}/body; proxy_temp_path {root}/proxy;
  fastcgi_temp_path {root}/fastcgi; uwsgi_temp_path {root}/uwsgi; scgi_temp_path {root}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{ root {root}/www; default_type application/atom+xml; }}
  }}
}}
""",
        encoding="utf-8",
    )
    return subprocess.Popen(["nginx", "-c", str(config), "-p", str(root), "-g", "daemon off;"])


_ROW = re.compile(
    r"^\| (.+?) \| (.+?) \| ([\d,.]+|nan) \| ([\d.]+|nan) \| ([\d.]+|nan) \| (\d+) \|$", re.M
)


def side_by_side(baseline: Path, rest: list[str], rounds: int) -> None:
    """This script on the baseline's code and on this checkout's, in turns, on one store."""
    found: dict[str, list[dict[tuple[str, str], tuple[float, float]]]] = {
        "baseline": [],
        "this checkout": [],
    }
    loads: dict[str, list[str]] = {"baseline": [], "this checkout": []}
    for name, output in in_turns(baseline, rounds, rest, script=Path(__file__).resolve()):
        found[name].append(
            {
                (case, mode): (float(rate.replace(",", "")), float(p99))
                for case, mode, rate, _, p99, _ in _ROW.findall(output)
            }
        )
        load = re.search(r"^load average: (.*)$", output, re.M)
        loads[name].append(load.group(1) if load else "?")
    print("\n| round | case | mode | baseline | this checkout | ratio (rate / p99) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for turn in range(rounds):
        old, new = found["baseline"][turn], found["this checkout"][turn]
        for (case, mode), (rate, p99) in old.items():
            if (case, mode) not in new:
                continue
            now, now_p99 = new[case, mode]
            print(
                f"| {turn + 1} | {case} | {mode} | {rate:,.0f}/s, p99 {p99:.1f} ms |"
                f" {now:,.0f}/s, p99 {now_p99:.1f} ms | {now / rate:.2f}x / {now_p99 / p99:.2f}x |"
            )
    for turn in range(rounds):
        print(
            f"round {turn + 1}: load average after the baseline {loads['baseline'][turn]},"
            f" after this checkout {loads['this checkout'][turn]}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--papers", type=int, default=1_000_000)
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "digest-bench-web"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--warm-seconds", type=int, default=60, help="other feeds asked before 'rendered'"
    )
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--cases", default="", help="only the cases whose name holds one of these (comma-separated)"
    )
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT")
    parser.add_argument("--rounds", type=int, default=1, help="turns each with --baseline")
    args = parser.parse_args()
    if args.baseline:
        side_by_side(args.baseline, args_for_turns(sys.argv[1:]), args.rounds)
        return
    # stopped by a signal, still stop the server, nginx and wrk (``finally`` below)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(1))

    data = args.cache / f"store-{args.papers}-{args.subscribers}"
    if not (data / "digest.db").exists():
        print(f"building the store in {data} ...", file=sys.stderr)
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        build_store(data, args.papers, args.subscribers, args.seed)
    run = Path(tempfile.mkdtemp(prefix="digest-bench-web-"))
    run.chmod(0o755)  # nginx's workers (another user when started as root) read from it
    port, nginx_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update(
        DIGEST_DATA_DIR=str(data),
        DIGEST_SECRET_KEY=SECRET,
        DIGEST_BASE_URL=base,
        DIGEST_WEB_HOST="127.0.0.1",
        DIGEST_WEB_PORT=str(port),
        DIGEST_WEB_WORKERS=str(args.workers),
        DIGEST_MAIL_TRANSPORT=f"file://{run / 'outbox'}",
        DIGEST_LOG_FORMAT="json",
    )
    settings = load_settings(environ=env, cwd=run)
    key = settings.secret_key.encode()  # DIGEST_SECRET_KEY above signs every link
    raw = sqlite3.connect(data / "digest.db")
    salts = raw.execute("SELECT id, token_salt FROM subscriber WHERE status = 'active'").fetchall()
    paper_keys = [k for (k,) in raw.execute("SELECT key FROM paper ORDER BY random() LIMIT 5000")]
    raw.close()
    rng = random.Random(args.seed)
    rng.shuffle(salts)
    feeds = [f"/feeds/private/{feed_name(key, ident, salt)}.atom" for ident, salt in salts]

    log = (run / "web.log").open("w")
    web = subprocess.Popen(
        [sys.executable, "-m", "digest", "web"], env=env, cwd=run, stdout=log, stderr=log
    )
    nginx = None
    try:
        wait_for(f"{base}/healthz")
        client = httpx.Client(base_url=base, timeout=60)
        # warm: the store's statistics, the name index of each worker
        for _ in range(2 * args.workers):
            client.get("/", params={"try": "language model"})
            client.get(feeds[0])
        hot = feeds[:200]
        etags = {path: client.get(path).headers["etag"] for path in hot}
        size = len(client.get(hot[0]).content)
        nginx = start_nginx(run, nginx_port, size)
        wait_for(f"http://127.0.0.1:{nginx_port}/feed.atom")
        front = client.get("/")
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', front.text)
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        topics = [
            "language model", "diffusion", '"reinforcement learning"', "speech recognition",
            "graph neural", "segment*", "retrieval -survey", "vision OR image", "federated",
            "agents", "code generation", "robot*",
        ]  # fmt: skip
        cases: list[tuple[str, str, list[tuple[str, str, dict[str, str], str]]]] = [
            ("private feed, 304", base, [("GET", p, {"If-None-Match": etags[p]}, "") for p in hot]),
            (
                "private feed, rendered, entries to make",
                base,
                [("GET", p, {}, "") for p in feeds[200:10_200]],
            ),
            (
                "private feed, rendered",
                base,
                [("GET", p, {}, "") for p in feeds[10_200:30_200]],
            ),
            (
                "paper page",
                base,
                [("GET", f"/papers/{quote(k, safe='')}", {}, "") for k in paper_keys],
            ),
            (
                "try it preview",
                base,
                [
                    ("GET", "/?" + urlencode({"try": "\n".join(rng.sample(topics, 2))}), {}, "")
                    for _ in range(50)
                ],
            ),
            (
                "subscribe POST",
                base,
                [
                    (
                        "POST",
                        "/subscribe",
                        {
                            "Content-Type": "application/x-www-form-urlencoded",
                            "Cookie": cookie,
                            # many readers behind the proxy (127.0.0.1, trusted), not one
                            # client tripping the per-client limit
                            "X-Forwarded-For": f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}",
                        },
                        urlencode(
                            {
                                "csrf": csrf.group(1) if csrf else "",
                                "email": f"new{n}@example.org",
                                "interests": "diffusion",
                            }
                        ),
                    )
                    for n in range(5_000)
                ],
            ),
            (
                "nginx, static file of that size",
                f"http://127.0.0.1:{nginx_port}",
                [("GET", "/feed.atom", {}, "")],
            ),
        ]
        # (closed-loop connections, paced rate, paced connections) by case; the preview and
        # the subscribe POST are not meant for hundreds a second
        loads = {"try it preview": (2, 5, 2), "subscribe POST": (4, 20, 2)}
        if args.cases:
            chosen = [part.strip() for part in args.cases.split(",") if part.strip()]
            cases = [case for case in cases if any(part in case[0] for part in chosen)]
        results: list[Result] = []
        for name, url, requests in cases:
            closed, rate_wanted, paced = loads.get(name, (args.connections, PACED_RATE, 10))
            script = run / "case.lua"
            script.write_text(lua(requests), encoding="utf-8")
            # Unmeasured, on every worker: the name index and the store's statistics built,
            # and for the 304s each feed rendered once (its validators kept).
            slow = name in {"private feed, 304", "try it preview"}
            warm = (30 if name == "try it preview" else max(10, args.seconds)) if slow else 3
            if name == "private feed, rendered":
                # other readers' feeds: each worker makes the entries of the papers they share
                others = [("GET", p, {}, "") for p in feeds[40_200:70_000]]
                (run / "warm.lua").write_text(lua(others), encoding="utf-8")
                wrk(url, run / "warm.lua", args.warm_seconds, args.connections)
            elif name != "private feed, rendered, entries to make":
                wrk(url, script, warm, args.connections)
            rate, p50, p99, bad = wrk(url, script, args.seconds, closed)
            results.append(Result(name, f"closed loop, {closed} conn", rate, p50, p99, bad))
            print(results[-1], file=sys.stderr, flush=True)
            # the rendered feeds of the closed loop are cached now: the paced run asks for
            # others (the list from its other end, or feeds none asked for yet)
            fresh = requests[::-1] if name.startswith("private feed, rendered") else requests
            if name == "private feed, rendered":
                fresh = [("GET", p, {}, "") for p in feeds[30_200:40_200]]
            delay = max(paced * 1000 / rate_wanted - (p50 if p50 == p50 else 0), 0)
            script.write_text(lua(fresh, delay), encoding="utf-8")
            rate, p50, p99, bad = wrk(url, script, args.seconds, paced)
            results.append(
                Result(name, f"paced ~{rate_wanted}/s, {paced} conn", rate, p50, p99, bad)
            )
            print(results[-1], file=sys.stderr, flush=True)
        print(
            f"store: {args.papers:,} papers, {args.subscribers:,} subscribers; digest web with"
            f" {args.workers} workers; wrk {args.seconds} s per run; rendered feed {size:,} bytes"
        )
        print("| case | mode | requests/s | p50 ms | p99 ms | failed |")
        print("| --- | --- | --- | --- | --- | --- |")
        for r in results:
            print(
                f"| {r.case} | {r.mode} | {r.rate:,.0f} | {r.p50:.1f} | {r.p99:.1f} | {r.non_2xx} |"
            )
        print("load average: " + ", ".join(f"{load:.2f}" for load in os.getloadavg()))
    finally:
        web.send_signal(signal.SIGTERM)
        try:
            web.wait(timeout=30)
        except subprocess.TimeoutExpired:
            web.kill()
        if nginx is not None:
            nginx.send_signal(signal.SIGQUIT)
            nginx.wait(timeout=30)
        log.close()
        print(f"(logs in {run})", file=sys.stderr)


if __name__ == "__main__":
    main()
