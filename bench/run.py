"""A whole `digest run` at two numbers of readers: CPU and peak memory per additional reader.

Run by hand (not in CI), with Postfix's ``smtp-sink`` installed:

    python bench/run.py [--readers 1000 5000] [--papers 40000] [--daily 5000] [--seed 7]
                        [--database URL] [--dumps PATH ...]
                        [--baseline CHECKOUT] [--rounds N] [--keep] [--under FOLDER]

For each number of readers, a store set up as bench/cycle.py sets it up (``--papers``
back-filled synthetic papers, the readers, a ``--daily``-paper daily dump in the inbox;
the same papers and day at every size), a settings file naming it and ``smtp-sink`` on
loopback, then the real command line, ``python -m digest --config FILE run --json``, as a
process of its own: it ingests the dump, ranks, records and sends every digest over SMTP
and writes the feeds. Each run's CPU seconds (user + system, from ``wait4``: the command
and every process it forked and waited for), its peak resident memory (``wait4``'s
largest single process, and the sum over the process tree sampled every 20 ms), and
then the slope between the two sizes: CPU milliseconds and KB of peak memory per
additional reader. ``--baseline CHECKOUT``: this script on another checkout's code and on
this one's, in turns, ``--rounds`` times, and the figures side by side with ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cycle import set_up  # bench/cycle.py
from match import REPO, add_dumps_argument  # bench/match.py
from senders import smtp_sink  # bench/senders.py
from sides import Variant  # bench/sides.py


@dataclass
class Measured:
    """One whole run of the command."""

    readers: int
    wall: float
    user: float
    system: float
    maxrss_kb: int  # the largest single process (wait4)
    tree_kb: int  # the most the process tree held at once (sampled)
    report: dict[str, Any]

    @property
    def cpu(self) -> float:
        return self.user + self.system


def tree_rss_kb(root: int) -> int:
    """Resident KB of ``root`` and every process below it now (from /proc: each thread's
    list of the children it started, then each process's resident pages)."""
    page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page_kb
        except (OSError, ValueError):
            continue  # it ended meanwhile
    return total


class TreeSampler:
    """The largest resident total of a process tree, sampled in a thread."""

    def __init__(self, root: int, every: float = 0.02) -> None:
        self.root, self.every, self.peak = root, every, 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.done.wait(self.every):
            self.peak = max(self.peak, tree_rss_kb(self.root))

    def stop(self) -> int:
        self.done.set()
        self.thread.join()
        return self.peak


def settings_file(folder: Path, environ: dict[str, str], port: int) -> Path:
    """The run's settings, as an operator writes them."""
    values = {
        "data_dir": environ["DIGEST_DATA_DIR"],
        "database_url": environ["DIGEST_DATABASE_URL"],
        "base_url": environ["DIGEST_BASE_URL"],
        "mail_transport": f"smtp://127.0.0.1:{port}",
        "mail_from": "Paper Digest <digest@papers.example.org>",
    }
    path = folder / "digest.toml"
    path.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items()))
    return path


def run_command(folder: Path, config: Path, readers: int) -> Measured:
    """``digest run`` on the store in ``folder``, as its own process; what it cost."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    command = [sys.executable, "-m", "digest", "--config", str(config), "run", "--json"]
    with (folder / "run.out").open("w+") as out, (folder / "run.err").open("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, cwd=folder, stdout=out, stderr=err)
        sampler = TreeSampler(process.pid)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        tree = sampler.stop()
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        output, errors = out.read(), err.read()
    if process.returncode:
        raise SystemExit(f"digest run exited {process.returncode}:\n{errors[-3000:]}")
    report = json.loads(output)
    return Measured(readers, wall, usage.ru_utime, usage.ru_stime, usage.ru_maxrss, tree, report)


def measure(args: argparse.Namespace) -> None:
    """Each number of readers on a store of its own, one after the other. The files of
    every run are removed only after the last: a file system reuses the inodes freed
    lately more slowly (ext4 looks past each one), so removing a run's tens of thousands
    of feed files made the next run's new files cost more system time than its own."""
    found: list[Measured] = []
    folders: list[Path] = []
    if args.under is not None:
        args.under.mkdir(parents=True, exist_ok=True)
    try:
        with smtp_sink() as (port, sink_used):
            for readers in args.readers:
                folder = Path(tempfile.mkdtemp(prefix="digest-run-", dir=args.under))
                folders.append(folder)
                bench = set_up(
                    papers=args.papers,
                    readers=readers,
                    daily=args.daily,
                    seed=args.seed,
                    dumps=args.dumps,
                    database=args.database,
                    folder=folder,
                    say=lambda line: None,
                )
                try:
                    bench.engine.dispose()  # the command has the store to itself
                    config = settings_file(bench.folder, bench.environ, port)
                    measured = run_command(bench.folder, config, readers)
                finally:
                    bench.close()
                found.append(measured)
                print_run(measured)
    finally:
        if not args.keep:
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)
    print(f"smtp-sink: {sink_used[0].cpu:.2f} CPU-s for every run (not counted above)")
    print_slope(found[0], found[-1])


def print_run(m: Measured) -> None:
    digests = m.report["digests"]
    if not m.report["papers_new"] or not digests["sent"]:
        raise SystemExit(f"the run sent nothing, the figures measure nothing: {m.report}")
    print(
        f"readers {m.readers:,}: wall {m.wall:.2f} s, CPU {m.cpu:.2f} s (user {m.user:.2f},"
        f" system {m.system:.2f}), peak RSS {m.maxrss_kb / 1024:.0f} MB (largest process),"
        f" {m.tree_kb / 1024:.0f} MB (process tree); {m.report['papers_new']:,} new papers,"
        f" {digests['sent']:,} digests sent, {digests['skipped']:,} skipped,"
        f" {digests['failed']:,} failed"
    )


def print_slope(small: Measured, large: Measured) -> None:
    more = large.readers - small.readers
    if more <= 0:
        return
    cpu = (large.cpu - small.cpu) / more * 1000
    rss = (large.maxrss_kb - small.maxrss_kb) / more
    tree = (large.tree_kb - small.tree_kb) / more
    print(
        f"per additional reader: {cpu:.2f} ms CPU, {rss:.1f} KB peak RSS (largest process),"
        f" {tree:.1f} KB (process tree)  (targets: <= 1.0 ms, <= 10 KB)"
    )
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


_RUN = re.compile(
    r"^readers ([\d,]+): wall ([\d.]+) s, CPU ([\d.]+) s .*?peak RSS (\d+) MB \(largest"
    r" process\), (\d+) MB",
    re.MULTILINE,
)
_SLOPE = re.compile(
    r"^per additional reader: ([-\d.]+) ms CPU, ([-\d.]+) KB .*?, ([-\d.]+) KB", re.MULTILINE
)


def figures(output: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for readers, wall, cpu, rss, tree in _RUN.findall(output):
        found[f"{readers} readers: wall, s"] = float(wall)
        found[f"{readers} readers: CPU, s"] = float(cpu)
        found[f"{readers} readers: peak RSS, MB"] = float(rss)
        found[f"{readers} readers: process tree, MB"] = float(tree)
    slope = _SLOPE.search(output)
    if slope:
        found["CPU ms per additional reader"] = float(slope.group(1))
        found["KB peak RSS per additional reader"] = float(slope.group(2))
        found["KB process tree per additional reader"] = float(slope.group(3))
    return found


def side_by_side(args: argparse.Namespace, rest: list[str]) -> None:
    """This script on the baseline's code and on this checkout's, in turns."""
    from sides import run_variant  # bench/sides.py

    under = Path(tempfile.mkdtemp(prefix="digest-runs-"))  # every run's files, to the end
    kept = ("--under", str(under), "--keep")
    runs = [
        Variant("baseline", args.baseline.resolve(), (*rest, *kept)),
        Variant("this checkout", REPO, (*rest, *kept)),
    ]
    found: dict[str, list[dict[str, float]]] = {v.name: [] for v in runs}
    try:
        for turn in range(1, args.rounds + 1):
            for variant in runs:
                output = run_variant(variant, script=Path(__file__).resolve())
                print(f"--- round {turn}, {variant.name}: {variant.checkout}\n{output}", flush=True)
                found[variant.name].append(figures(output))
    finally:
        if not args.keep:
            shutil.rmtree(under, ignore_errors=True)
    old, new = found["baseline"], found["this checkout"]
    print("\n| figure | baseline | this checkout | ratio |\n| --- | --- | --- | --- |")
    for name in old[0]:
        for turn in range(args.rounds):
            a, b = old[turn].get(name), new[turn].get(name)
            if a is not None and b is not None:
                ratio = f"{b / a:.2f}x" if a > 0 else "-"
                print(f"| {name} (round {turn + 1}) | {a:,.2f} | {b:,.2f} | {ratio} |")
        if args.rounds > 1:
            a = statistics.median(r[name] for r in old if name in r)
            b = statistics.median(r[name] for r in new if name in r)
            ratio = f"{b / a:.2f}x" if a > 0 else "-"
            print(f"| {name} (median) | {a:,.2f} | {b:,.2f} | {ratio} |")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--readers", nargs=2, type=int, default=[1_000, 5_000], metavar=("SMALL", "LARGE")
    )
    parser.add_argument("--papers", type=int, default=40_000, help="papers already in the store")
    parser.add_argument("--daily", type=int, default=5_000, help="papers in the daily dump")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--database",
        default="sqlite",
        metavar="URL",
        help="sqlite (a new file) or a server's URL (a new database on it, dropped after)",
    )
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT")
    parser.add_argument("--rounds", type=int, default=1, help="turns each with --baseline")
    parser.add_argument("--keep", action="store_true", help="keep the files (not the database)")
    parser.add_argument(
        "--under", type=Path, metavar="FOLDER", help="where the runs' folders go (a temporary one)"
    )
    add_dumps_argument(parser)
    args = parser.parse_args()
    if args.baseline:
        rest = []
        skip = False
        for arg in sys.argv[1:]:
            if arg in ("--baseline", "--rounds"):
                skip = True
            elif skip:
                skip = False
            else:
                rest.append(arg)
        side_by_side(args, rest)
        return
    measure(args)


if __name__ == "__main__":
    main()
