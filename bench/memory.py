"""Resident memory of a bench's process and of every process it forks, step by step.

The process's own peak is the kernel's high-water mark (``VmHWM``), reset at each step's
start (``/proc/self/clear_refs``); when that file cannot be written, the largest of the
samples. Forked processes (ranking workers, senders, feed writers) are sampled every
``every`` seconds from /proc: each one's own high-water mark (which counts the pages it
inherited and touched), and the most that this process and all of them held at once
(pages shared after a fork count in each, so that sum overstates what the machine gave).
Resetting the mark also resets what ``getrusage`` says of this process (``ru_maxrss``):
the whole run's peak is the largest of the steps'.
A process that lives less than one sampling interval may be missed.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path


def descendants(root: int) -> list[int]:
    """Every process below ``root`` now (each thread's list of the children it started)."""
    found: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            for task in Path(f"/proc/{pid}/task").iterdir():
                children = [int(c) for c in (task / "children").read_text().split()]
                found.extend(children)
                todo.extend(children)
        except (OSError, ValueError):
            continue  # it ended meanwhile
    return found


def status_kb(pid: int | str, *fields: str) -> list[int]:
    """Fields of ``/proc/PID/status`` in KB (``VmRSS``, ``VmHWM``); 0 for one not there."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return [0 for _ in fields]
    values = dict.fromkeys(fields, 0)
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in values:
            values[name] = int(rest.split()[0])
    return [values[name] for name in fields]


NOT_FORKED = {"smtp-sink"}  # programs the bench starts beside the steps, not forked by them


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def reset_peak() -> bool:
    """Reset this process's ``VmHWM`` to what it holds now; False when it cannot be."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class Peaks:
    """One step's peaks, in MB."""

    parent: float  # this process
    largest_forked: float  # the largest single process forked meanwhile (0: none seen)
    forked: int  # how many forked processes were seen
    together: float  # the most this process and those held at once


class StepMemory:
    """Peaks of resident memory per step: ``start()`` a step, ``done()`` it."""

    def __init__(self, every: float = 0.025) -> None:
        self.every = every
        self.steps: dict[str, Peaks] = {}
        self._lock = threading.Lock()
        self._exact = reset_peak()
        self._sampled_self = 0
        self._forked: dict[int, int] = {}
        self._together = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        me = os.getpid()
        while not self._stop.wait(self.every):
            own = status_kb(me, "VmRSS")[0]
            together = own
            seen: dict[int, int] = {}
            for pid in descendants(me):
                if _name(pid) in NOT_FORKED:
                    continue
                rss, hwm = status_kb(pid, "VmRSS", "VmHWM")
                if rss or hwm:
                    seen[pid] = hwm
                    together += rss
            with self._lock:
                self._sampled_self = max(self._sampled_self, own)
                self._together = max(self._together, together)
                for pid, hwm in seen.items():
                    self._forked[pid] = max(self._forked.get(pid, 0), hwm)

    def start(self) -> None:
        with self._lock:
            self._exact = reset_peak()
            self._sampled_self = 0
            self._forked = {}
            self._together = 0

    def done(self, name: str) -> Peaks:
        own = status_kb("self", "VmHWM")[0] if self._exact else 0
        with self._lock:
            own = max(own, self._sampled_self)
            peaks = Peaks(
                parent=own / 1024,
                largest_forked=max(self._forked.values(), default=0) / 1024,
                forked=len(self._forked),
                together=max(self._together, own) / 1024,
            )
        self.steps[name] = peaks
        self.start()
        return peaks

    def peak(self, upto: str | None = None) -> float:
        """This process's peak over the steps (up to and with ``upto``), in MB."""
        found = 0.0
        for name, peaks in self.steps.items():
            found = max(found, peaks.parent)
            if name == upto:
                break
        return found

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
