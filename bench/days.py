"""A site's later days for bench/run.py: each day's dump of new papers, and the clock of a
command moved to that day with libfaketime (the command line has no clock of its own).

libfaketime is preloaded into the command (``LD_PRELOAD``) with ``FAKETIME="@YYYY-MM-DD
HH:MM:SS"``: the clock starts at that moment and runs on. Forked processes share the
library's state, so the ranking workers, senders and feed writers a run forks read the same
moved clock, and threads do too; ``FAKETIME_DONT_RESET=1`` keeps a process started anew
(exec) on the same running clock instead of starting it again.
"""

from __future__ import annotations

import glob
import os
import random
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from cycle import write_daily  # bench/cycle.py
from match import Generator, dump_files, real_papers  # bench/match.py

INSTALL = "apt-get install faketime (Debian's libfaketime; apt-get update first if needed)"
# When each day's run starts, UTC: after the day's dump is posted (06:00, bench/cycle.py).
RUN_AT = time(7, 0)
# Each day's arXiv-like ids start 10 "months" after the day before's: no two days share one.
ID_STEP = 10


def faketime_library() -> str:
    """The path of ``libfaketime.so.1``: from dpkg's list of the package's files, else the
    usual places; a clear exit when it is not installed."""
    found: list[str] = []
    if shutil.which("dpkg"):
        for package in ("libfaketime", "faketime"):
            listed = subprocess.run(
                ["dpkg", "-L", package], capture_output=True, text=True, check=False
            )
            found += [p for p in listed.stdout.split() if p.endswith("/libfaketime.so.1")]
    for pattern in (
        "/usr/lib/*/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
        "/usr/local/lib/faketime/libfaketime.so.1",
    ):
        found += sorted(glob.glob(pattern))
    for path in found:
        if Path(path).is_file():
            return path
    raise SystemExit(f"--days needs libfaketime to move the command's clock: {INSTALL}")


def first_day() -> date:
    """The first day's date when none is given: tomorrow (UTC), after the set-up's
    readers joined (yesterday) and its daily dump was posted (today)."""
    return datetime.now(UTC).date() + timedelta(days=1)


def day_moment(first: date, day: int) -> datetime:
    """When the run of ``day`` (1 for the first) starts."""
    return datetime.combine(first + timedelta(days=day - 1), RUN_AT, tzinfo=UTC)


def clock_environ(library: str, moment: datetime) -> dict[str, str]:
    """What moves a command's clock to ``moment`` (added to its environment)."""
    return {
        "LD_PRELOAD": library,
        # read in the local zone, as this process's is the command's
        "FAKETIME": moment.astimezone().strftime("@%Y-%m-%d %H:%M:%S"),
        "FAKETIME_DONT_RESET": "1",
    }


def check_clock(library: str, moment: datetime) -> None:
    """A Python under the moved clock, a forked child of it and a thread of it read
    ``moment``'s day: else the figures would be of some other day."""
    probe = (
        "import datetime as d, os, threading\n"
        "now = lambda: d.datetime.now(d.UTC).isoformat()\n"
        "seen = [now()]\n"
        "t = threading.Thread(target=lambda: seen.append(now())); t.start(); t.join()\n"
        "r, w = os.pipe()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.write(w, now().encode()); os._exit(0)\n"
        "os.waitpid(pid, 0); seen.append(os.read(r, 100).decode())\n"
        "print(' '.join(seen))\n"
    )
    env = {**os.environ, **clock_environ(library, moment)}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False
    )
    seen = done.stdout.split()
    day = moment.date().isoformat()
    if done.returncode or len(seen) != 3 or not all(s.startswith(day) for s in seen):
        raise SystemExit(
            f"libfaketime ({library}) did not move the clock to {day}: read {seen or '-'}"
            f" {done.stderr[-500:]}"
        )


class LaterDays:
    """Each later day's dump of ``daily`` new papers: the generator of bench/cycle.py's
    daily dump (the same vocabulary and topics), drawn from a seed of its own for each day,
    so every checkout gets the same days; new ids, new titles."""

    def __init__(self, *, papers: int, daily: int, seed: int, dumps: list[Path] | None) -> None:
        self.papers, self.daily, self.seed = papers, daily, seed
        self.real = real_papers(dump_files(dumps))

    def write(self, inbox: Path, day: int, moment: datetime) -> Path:
        """Day ``day``'s dump (2 and on; the set-up wrote the first) in ``inbox``."""
        generator = Generator(random.Random(self.seed), self.real)
        generator.rng.seed(f"bench/run.py day {day} of seed {self.seed}", version=2)
        path = inbox / f"daily-day{day}.json"
        write_daily(
            path,
            generator,
            self.papers + (day - 1) * self.daily,
            self.daily,
            now=moment,
            ids_from=2500 + (day - 1) * ID_STEP,
        )
        return path
