"""Processes for the benches: Postfix's smtp-sink on loopback, what a child process used
(``wait4``), the CPU of the machine and of a database server's processes, and the outbox
drained by ``digest worker --no-plan`` processes."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa

from digest.store.engine import reading
from digest.store.outbox import counts as outbox_counts


class Store(Protocol):
    """A store set up for a bench (``cycle.Bench``)."""

    folder: Path
    environ: dict[str, str]
    settings: Any
    engine: Any


# --- processes: the mail sink, CPU and memory --------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"smtp-sink did not start on port {port}")


@dataclass
class Reaped:
    """A child process's CPU seconds (user + system, its own waited-for children included)
    and largest resident set (of it or any one of those children), from ``wait4``."""

    cpu: float
    maxrss_kb: int
    status: int


def reap(process: subprocess.Popen[Any]) -> Reaped:
    """Wait for ``process`` with ``wait4``: its exit status and what it used."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return Reaped(usage.ru_utime + usage.ru_stime, usage.ru_maxrss, process.returncode)


def sink_path() -> str | None:
    """Where Postfix's ``smtp-sink`` is, if installed."""
    sink = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    return sink if Path(sink).exists() else None


@contextmanager
def smtp_sink() -> Iterator[tuple[int, list[Reaped]]]:
    """Postfix's ``smtp-sink`` on a free loopback port; its port, and (once left) what it
    used, appended to the list."""
    sink = sink_path()
    if sink is None:
        raise SystemExit("smtp-sink not found: apt-get install postfix")
    port = free_port()
    process = subprocess.Popen(
        [sink, "-u", "nobody", f"127.0.0.1:{port}", "1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    used: list[Reaped] = []
    try:
        wait_for_port(port)
        yield port, used
    finally:
        process.terminate()
        used.append(reap(process))


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields) - idle) / ticks, sum(fields) / ticks


def server_backends_cpu(database: str) -> dict[int, float]:
    """CPU seconds so far of each database server process serving ``database`` (found by
    its process title)."""
    found: dict[int, float] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").split()
            # "postgres: USER DATABASE HOST(PORT) STATE", with "CLUSTER:" after "postgres:"
            # on Debian's clusters
            if not title or title[0] != b"postgres:" or database.encode() not in title[1:4]:
                continue
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[int(entry.name)] = (int(stat[11]) + int(stat[12])) / ticks
    return found


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


WORKER = (sys.executable, "-m", "digest", "worker", "--no-plan", "--every", "1")


# --- sending with worker processes ------------------------------------------------------


@dataclass
class Sent:
    """How N sender processes drained the outbox."""

    messages: int
    seconds: float  # from starting the senders until the outbox was empty
    sending: float  # from the first message marked sent until the last
    failed: int
    senders: list[Reaped]
    sink: Reaped
    backends: float  # the database server's CPU for this database (0 for SQLite)
    machine_busy: float  # CPU seconds the whole machine was busy meanwhile (other jobs too)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def send_with_workers(
    bench: Store, senders: int, connections: int, batch: int, *, own_sessions: bool = True
) -> Sent:
    """Drain the outbox with ``senders`` ``digest worker --no-plan`` processes sending over
    SMTP to a sink on loopback; returns when the outbox holds nothing waiting."""
    database = sa.engine.make_url(bench.settings.database_url).database or ""
    server = not bench.settings.database_url.startswith("sqlite")
    with smtp_sink() as (port, sink_used):
        env = {
            **os.environ,
            **bench.environ,
            "DIGEST_MAIL_TRANSPORT": f"smtp://127.0.0.1:{port}",
            "DIGEST_SMTP_CONNECTIONS": str(connections),
        }
        env.pop("DIGEST_CONFIG", None)
        backends_before = server_backends_cpu(database) if server else {}
        busy_before, _ = machine_cpu()
        started = time.perf_counter()
        workers = [
            subprocess.Popen(
                [*WORKER, "--batch", str(batch)],
                env=env,
                cwd=bench.folder,
                stdout=subprocess.DEVNULL,
                stderr=(bench.folder / f"worker-{n}.log").open("w"),
                # A session of its own, as a service unit or another host would be: Linux
                # shares the CPU among sessions first (autogroups), so senders in this
                # one would split this session's share on a busy machine between them.
                start_new_session=own_sessions,
            )
            for n in range(senders)
        ]
        try:
            first, last, found = _wait_drained(bench, workers)
        finally:
            backends = server_backends_cpu(database) if server else {}
            busy_after, _ = machine_cpu()
            for worker in workers:
                if worker.poll() is None:
                    worker.send_signal(signal.SIGTERM)
            reaped = [reap(worker) for worker in workers]
    return Sent(
        messages=found["sent"],
        seconds=last - started,
        sending=last - first,
        failed=found["failed"],
        senders=reaped,
        sink=sink_used[0],
        backends=sum(cpu - backends_before.get(pid, 0.0) for pid, cpu in backends.items()),
        machine_busy=busy_after - busy_before,
    )


def _wait_drained(
    bench: Store, workers: list[subprocess.Popen[bytes]]
) -> tuple[float, float, dict[str, int]]:
    """Poll the outbox until nothing waits; (first sent, drained) times and the counts."""
    first = 0.0
    while True:
        time.sleep(0.1)
        with reading(bench.engine) as conn:
            found = outbox_counts(conn)
            conn.rollback()
        now = time.perf_counter()
        if found["sent"] and not first:
            first = now
        if not found["pending"] and not found["sending"]:
            return first or now, now, found
        dead = [w for w in workers if w.poll() is not None]
        if dead:
            log = (bench.folder / "worker-0.log").read_text()[-2000:]
            raise SystemExit(f"a sender exited ({dead[0].returncode}) before the end:\n{log}")
