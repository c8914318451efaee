"""A whole `digest run` at two numbers of readers: CPU and peak memory per additional reader.

Run by hand (not in CI), with Postfix's ``smtp-sink`` installed:

    python bench/run.py [--readers 1000 5000] [--papers 40000] [--daily 5000] [--seed 7]
                        [--database URL] [--dumps PATH ...]
                        [--baseline CHECKOUT] [--rounds N] [--keep] [--under FOLDER]
                        [--days N [--first-day YYYY-MM-DD]]

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

``--days N`` (needs libfaketime: ``apt-get install faketime``): a site's later days. Each
store is run through N consecutive days by the same command line, its clock moved to
07:00 UTC of each day (the first: ``--first-day``, tomorrow by default; given to every
checkout of a side by side, so all run the same days), and from the second day on a new
``--daily``-paper dump in the inbox (new ids and titles, drawn from the seed and the day:
bench/days.py). So each reader's private feed fills with the digests of the days before
and the run keeps the feed entries between days, as on a site. Each day's row is printed
(the report's period, the digests sent, CPU, the peaks, and with ``--verbose`` on the
command the wall and CPU seconds of its steps, cut at the log's "composed" and
"delivered" lines: CPU of the command's process and the children it has waited for, read
from /proc when the line appears); the figures and the slope are the last day's, with the
largest anonymous memory (``RssAnon``, sampled: not the pages of mapped files, which count
in ``ru_maxrss`` but are page cache the kernel can drop) of one process and of the tree.
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
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from cycle import set_up  # bench/cycle.py
from days import (  # bench/days.py
    LaterDays,
    check_clock,
    clock_environ,
    day_moment,
    faketime_library,
    first_day,
)
from match import REPO, add_dumps_argument  # bench/match.py
from memory import status_kb  # bench/memory.py
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
    anon_kb: int = 0  # the largest anonymous memory of a single process (sampled)
    tree_anon_kb: int = 0  # the most anonymous memory the process tree held at once
    # wall and CPU seconds from the start to the end of each step seen in the log
    ends: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def cpu(self) -> float:
        return self.user + self.system


def tree_pids(root: int) -> list[int]:
    """``root`` and every process below it now (from /proc: each thread's list of the
    children it started)."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        try:
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue  # it ended meanwhile
        found.append(pid)
    return found


def cpu_so_far(pid: int) -> float | None:
    """CPU seconds of ``pid`` and of the children it has waited for, so far (/proc's
    utime, stime, cutime, cstime)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


# The run's log lines on stderr that end its steps (digest/service/cycle.py).
STEP_ENDS = {"composed": "ingest, rank, record", "delivered": "send"}


class TreeSampler:
    """The largest resident total of a process tree, sampled in a thread; with it the
    largest anonymous memory (``RssAnon``: not the pages of mapped files, which the kernel
    can drop) of one process and of the tree, and, when given the command's stderr, the
    wall and CPU seconds at which each of its steps ended (``STEP_ENDS``)."""

    def __init__(self, root: int, every: float = 0.02, log: Path | None = None) -> None:
        self.root, self.every, self.peak = root, every, 0
        self.anon, self.tree_anon = 0, 0
        self.log, self.read = log, 0
        self.started = time.perf_counter()
        self.ends: dict[str, tuple[float, float]] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.done.wait(self.every):
            rss = anon = 0
            for pid in tree_pids(self.root):
                vm, own = status_kb(pid, "VmRSS", "RssAnon")
                rss, anon = rss + vm, anon + own
                self.anon = max(self.anon, own)
            self.peak = max(self.peak, rss)
            self.tree_anon = max(self.tree_anon, anon)
            if self.log is not None:
                self._step_ends()

    def _step_ends(self) -> None:
        assert self.log is not None
        try:
            with self.log.open("rb") as err:
                err.seek(self.read)
                new = err.read()
        except OSError:
            return
        end = new.rfind(b"\n") + 1
        self.read += end
        for line in new[:end].decode(errors="replace").splitlines():
            for message in STEP_ENDS:
                if message not in self.ends and f'"msg": "{message}"' in line:
                    cpu = cpu_so_far(self.root)
                    if cpu is not None:
                        self.ends[message] = (time.perf_counter() - self.started, cpu)

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


def run_command(
    folder: Path, config: Path, readers: int, clock: dict[str, str] | None = None, name: str = "run"
) -> Measured:
    """``digest run`` on the store in ``folder``, as its own process (with ``clock``'s
    variables, its clock moved and each step logged to stderr: ``--verbose``); what it
    cost. Its output in ``name``.out and .err."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGEST_", "FAKETIME"))}
    env.update(clock or {})
    command = [sys.executable, "-m", "digest", "--config", str(config), "run", "--json"]
    if clock:
        command.append("--verbose")
    log = folder / f"{name}.err"
    with (folder / f"{name}.out").open("w+") as out, log.open("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, cwd=folder, stdout=out, stderr=err)
        sampler = TreeSampler(process.pid, log=log)
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
    return Measured(
        readers,
        wall,
        usage.ru_utime,
        usage.ru_stime,
        usage.ru_maxrss,
        tree,
        report,
        sampler.anon,
        sampler.tree_anon,
        sampler.ends,
    )


def measure(args: argparse.Namespace) -> None:
    """Each number of readers on a store of its own, one after the other. The files of
    every run are removed only after the last: a file system reuses the inodes freed
    lately more slowly (ext4 looks past each one), so removing a run's tens of thousands
    of feed files made the next run's new files cost more system time than its own."""
    found: list[Measured] = []
    folders: list[Path] = []
    if args.under is not None:
        args.under.mkdir(parents=True, exist_ok=True)
    days = Days(args) if args.days > 1 else None
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
                    if days is None:
                        measured = run_command(bench.folder, config, readers)
                    else:
                        measured = days.run(bench.folder, bench.settings.inbox, config, readers)
                finally:
                    bench.close()
                found.append(measured)
                print_run(measured)
                if days is not None:
                    print_last_day(measured, args.days)
    finally:
        if not args.keep:
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)
        elif days is not None:
            print(f"the runs' folders, kept: {' '.join(map(str, folders))}")
    print(f"smtp-sink: {sink_used[0].cpu:.2f} CPU-s for every run (not counted above)")
    if days is not None:
        print_last_day_slope(found[0], found[-1], args.days)
    print_slope(found[0], found[-1])


class Days:
    """``--days``: the same store through consecutive days, each with a new dump in the
    inbox and the command's clock moved to the day (bench/days.py)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.count = args.days
        self.library = faketime_library()
        self.first = args.first_day or first_day()
        check_clock(self.library, day_moment(self.first, 1))
        self.later = LaterDays(
            papers=args.papers, daily=args.daily, seed=args.seed, dumps=args.dumps
        )
        print(
            f"{self.count} days from {self.first.isoformat()}, each run at"
            f" {day_moment(self.first, 1):%H:%M} UTC, its clock moved by {self.library}"
        )

    def run(self, folder: Path, inbox: Path, config: Path, readers: int) -> Measured:
        """Every day's run on the store; the last day's figures."""
        print(DAY_HEAD, flush=True)
        for day in range(1, self.count + 1):
            moment = day_moment(self.first, day)
            if day > 1:
                self.later.write(inbox, day, moment)
            clock = clock_environ(self.library, moment)
            measured = run_command(folder, config, readers, clock, name=f"run-day{day}")
            check_day(measured, moment.date().isoformat())
            print(day_row(day, measured), flush=True)
        return measured


DAY_HEAD = (
    "| day | readers | period | new papers | digests sent | wall | CPU (user + system)"
    " | ingest, rank, record: wall / CPU | send: wall / CPU | feeds and the rest: wall / CPU"
    " | peak RSS, largest process | RssAnon, largest process | process tree | process tree,"
    " RssAnon |\n" + "| --- " * 14 + "|"
)


def steps(m: Measured) -> list[tuple[float, float] | None]:
    """Wall and CPU seconds of each step of the run, from the log's step ends: to
    "composed", to "delivered", and from there to the end (the feeds, then the run's
    last counts); None where the log did not show the step's end."""
    composed, delivered = m.ends.get("composed"), m.ends.get("delivered")
    found: list[tuple[float, float] | None] = [composed]
    found.append(
        (delivered[0] - composed[0], delivered[1] - composed[1]) if composed and delivered else None
    )
    found.append((m.wall - delivered[0], m.cpu - delivered[1]) if delivered else None)
    return found


def day_row(day: int, m: Measured) -> str:
    digests = m.report["digests"]
    cells = [
        str(day),
        f"{m.readers:,}",
        str(m.report["period"]),
        f"{m.report['papers_new']:,}",
        f"{digests['sent']:,}",
        f"{m.wall:.1f} s",
        f"{m.cpu:.2f} s ({m.user:.2f} + {m.system:.2f})",
        *("-" if s is None else f"{s[0]:.1f} / {s[1]:.2f} s" for s in steps(m)),
        f"{m.maxrss_kb / 1024:.0f} MB",
        f"{m.anon_kb / 1024:.0f} MB",
        f"{m.tree_kb / 1024:.0f} MB",
        f"{m.tree_anon_kb / 1024:.0f} MB",
    ]
    return f"| {' | '.join(cells)} |"


def check_day(m: Measured, period: str) -> None:
    """The run was of the day asked for, and sent most readers a digest."""
    digests = m.report["digests"]
    if m.report.get("period") != period:
        raise SystemExit(f"the run was of {m.report.get('period')}, not {period}: {m.report}")
    if not m.report["papers_new"] or not digests["sent"]:
        raise SystemExit(f"the run sent nothing, the figures measure nothing: {m.report}")
    if digests["sent"] < 0.9 * m.readers:
        print(f"(of {m.readers:,} readers only {digests['sent']:,} were sent a digest on {period})")


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


def print_last_day(m: Measured, days: int) -> None:
    feeds = steps(m)[2]
    print(
        f"readers {m.readers:,}, day {days} of {days}: anonymous memory {m.anon_kb / 1024:.0f}"
        f" MB (largest process), {m.tree_anon_kb / 1024:.0f} MB (process tree); feeds step"
        ' and the rest (from the log\'s "delivered" to the end): '
        + ("-" if feeds is None else f"wall {feeds[0]:.1f} s, CPU {feeds[1]:.2f} s")
    )


def print_last_day_slope(small: Measured, large: Measured, days: int) -> None:
    more = large.readers - small.readers
    if more <= 0:
        return
    anon = (large.anon_kb - small.anon_kb) / more
    tree = (large.tree_anon_kb - small.tree_anon_kb) / more
    feeds = [steps(small)[2], steps(large)[2]]
    cpu = (feeds[1][1] - feeds[0][1]) / more * 1000 if feeds[0] and feeds[1] else None
    print(
        f"per additional reader, day {days}: anonymous memory {anon:.1f} KB (largest process),"
        f" {tree:.1f} KB (process tree); feeds step and the rest "
        + ("-" if cpu is None else f"{cpu:.2f} ms CPU")
    )


_RUN = re.compile(
    r"^readers ([\d,]+): wall ([\d.]+) s, CPU ([\d.]+) s .*?peak RSS (\d+) MB \(largest"
    r" process\), (\d+) MB",
    re.MULTILINE,
)
_LAST_DAY = re.compile(
    r"^readers ([\d,]+), day \d+ of \d+: anonymous memory (\d+) MB \(largest process\), (\d+)"
    r" MB \(process tree\); .*?(?:wall ([\d.]+) s, CPU ([\d.]+) s)?$",
    re.MULTILINE,
)
_DAY_SLOPE = re.compile(
    r"^per additional reader, day \d+: anonymous memory ([-\d.]+) KB .*?, ([-\d.]+) KB"
    r" \(process tree\); feeds step and the rest (?:([-\d.]+) ms CPU)?",
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
    for readers, anon, tree, wall, cpu in _LAST_DAY.findall(output):
        found[f"{readers} readers: RssAnon, largest process, MB"] = float(anon)
        found[f"{readers} readers: RssAnon, process tree, MB"] = float(tree)
        if cpu:
            found[f"{readers} readers: feeds step and the rest, wall, s"] = float(wall)
            found[f"{readers} readers: feeds step and the rest, CPU, s"] = float(cpu)
    day_slope = _DAY_SLOPE.search(output)
    if day_slope:
        found["KB RssAnon (largest process) per additional reader"] = float(day_slope.group(1))
        found["KB RssAnon (process tree) per additional reader"] = float(day_slope.group(2))
        if day_slope.group(3):
            found["feeds step CPU ms per additional reader"] = float(day_slope.group(3))
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
    parser.add_argument(
        "--days",
        type=int,
        default=1,
        help="consecutive days of the same store, each a new dump and the clock moved to it"
        " (libfaketime); the figures are the last day's",
    )
    parser.add_argument(
        "--first-day",
        type=date.fromisoformat,
        metavar="YYYY-MM-DD",
        help="the first day's date with --days (tomorrow, UTC)",
    )
    add_dumps_argument(parser)
    args = parser.parse_args()
    if args.days < 1:
        parser.error("--days must be 1 or more")
    if args.days > 1:
        faketime_library()  # before anything is set up: a clear exit when it is missing
        if args.first_day is None:  # the same days for every checkout
            args.first_day = first_day()
            sys.argv += ["--first-day", args.first_day.isoformat()]
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
