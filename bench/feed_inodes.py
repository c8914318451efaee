"""Feed-sized files replaced day after day, three ways, on the disk of ``--folder``.

Run by hand (not in CI):  python bench/feed_inodes.py [--files 10000] [--rounds 4]
                                                      [--folder DIR] [--pause SECONDS]

Each way replaces the same ``--files`` files of about 30 KB ``--rounds`` times, each
round as a run of the feeds step does (every file written first, then every one put in
place), in its own folder under ``--folder`` (default: a new one under the system's
temporary folder; put it on the disk the feeds live on):

- ``new file``: each written to a new file, then renamed over the old one (the old
  inode freed): the code before the spares.
- ``spare emptied``: the old file kept as a spare (swapped out with ``RENAME_EXCHANGE``);
  the next round takes it, opens it with ``O_TRUNC`` (its blocks freed) and writes it anew.
- ``spare written over``: the same, but written over from the start and cut to the new
  length after (``digest/feeds/staged.py``): no block freed but a shorter file's tail.

Rounds one and two of the spare ways make the files and then the spares (new inodes
both); from round three on they write over the spares. The sizes move a little from
round to round, as feeds do. Each round starts after a ``sync`` (and ``--pause``); it
prints the wall time and the process's user and system CPU.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from digest.feeds import exchange

WAYS = ("new file", "spare emptied", "spare written over")
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_round(folder: int, names: list[str], data: bytes, way: str) -> list[tuple[str, str]]:
    """Every file written under its temporary name: a new file or its name's spare."""
    written = []
    for name in names:
        temp, spare = f".{name}.tmp", f".{name}.spare"
        fd = -1
        if way != "new file":
            try:
                os.rename(spare, temp, src_dir_fd=folder, dst_dir_fd=folder)
                emptied = os.O_TRUNC if way == "spare emptied" else 0
                fd = os.open(temp, os.O_WRONLY | os.O_NOFOLLOW | emptied, dir_fd=folder)
            except FileNotFoundError:
                fd = -1
        if fd < 0:
            fd = os.open(temp, _CREATE, 0o644, dir_fd=folder)
            old = 0
        else:
            old = os.fstat(fd).st_size
        os.write(fd, data)
        if old > len(data) and way == "spare written over":
            os.ftruncate(fd, len(data))
        os.close(fd)
        written.append((temp, name))
    return written


def put_round(folder: int, written: list[tuple[str, str]], way: str) -> None:
    """Every file put in place: renamed over the old one, or swapped with it."""
    for temp, name in written:
        if way == "new file":
            os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
            continue
        try:
            swapped = exchange.exchange(folder, temp, name)
        except FileNotFoundError:
            swapped = False
        if swapped:
            os.rename(temp, f".{name}.spare", src_dir_fd=folder, dst_dir_fd=folder)
        else:
            os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--folder", type=Path)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds after each sync")
    args = parser.parse_args()
    if not exchange.available():
        raise SystemExit("this system has no renameat2: only the first way would run")
    base = Path(tempfile.mkdtemp(prefix="digest-bench-inodes-", dir=args.folder))
    names = [f"{n:032x}.atom" for n in range(args.files)]
    try:
        for way in WAYS:
            path = base / way.replace(" ", "-")
            path.mkdir()
            folder = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            for turn in range(args.rounds):
                data = os.urandom(1_000) * (30 + turn % 3 * 2)  # 30, 32 or 34 KB
                os.sync()
                time.sleep(args.pause)
                before = resource.getrusage(resource.RUSAGE_SELF)
                started = time.perf_counter()
                put_round(folder, write_round(folder, names, data, way), way)
                wall = time.perf_counter() - started
                after = resource.getrusage(resource.RUSAGE_SELF)
                print(
                    f"  {way:<20} round {turn + 1}: {wall:6.2f} s"
                    f" (user {after.ru_utime - before.ru_utime:.2f} s,"
                    f" system {after.ru_stime - before.ru_stime:.2f} s;"
                    f" load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
            os.close(folder)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
