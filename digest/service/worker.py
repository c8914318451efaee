"""``digest worker``: send the outbox, and plan on the schedule, until stopped.

Any number of workers, on any number of hosts sharing one PostgreSQL, run side by
side. Each is a sender of its own (``store.claims``: the digests it claims are
its alone until its lease runs out). Each also plans when the schedule says the
day's digest is due and no run has done it yet (``needs_catch_up``, as ``digest
serve`` catches up): under the run lock, so one worker plans while the others
go on sending, and under the planners' transaction lock, so a planner that lost
its run lock still writes each reader's digest once. Fetching the sources is part
of planning: the listings land in the planner's inbox and go straight into the
database, where every host's senders find what was planned from them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from digest.deliver import loops
from digest.deliver.send import Claim
from digest.errors import AlreadyRunning, DigestError
from digest.service.cycle import OUTBOX_BATCH, SEND_LEASE, deliver_outbox, new_claim, run_cycle
from digest.service.runlock import hold_run_lock
from digest.service.scheduler import needs_catch_up
from digest.settings import Settings
from digest.store import claims, runs

log = logging.getLogger("digest.worker")

SEND_EVERY = timedelta(seconds=30)  # how often an idle worker looks at the outbox again


def plan_if_due(settings: Settings, engine: Engine, *, clock: Callable[[], datetime]) -> bool:
    """Plan today's digests if the schedule says they are due and no run planned them yet;
    True when this worker planned. Another planner at work is no failure: it plans."""
    now = clock()
    if not needs_catch_up(runs.last_ok_period(engine), now, settings.timezone, settings.schedule):
        return False
    lost = threading.Event()  # a lost run lock stops this plan, not the worker's sending
    try:
        with hold_run_lock(settings, stop=lost) as held:
            run_cycle(settings, engine, clock=clock, guard=held.check, send=False)
    except AlreadyRunning:
        return False
    log.info("planned", extra={"period": now.date().isoformat()})
    return True


def run_worker(
    settings: Settings,
    engine: Engine,
    *,
    clock: Callable[[], datetime],
    stop: threading.Event,
    lease: timedelta = SEND_LEASE,
    every: timedelta = SEND_EVERY,
    plan: bool = True,
    batch: int = OUTBOX_BATCH,
) -> int:
    """Send (and plan when due) until ``stop`` is set; returns 0. A failure of one pass (the
    database or the mail server away) is logged and the next pass tries again."""
    claim: Claim = new_claim(lease)
    claims.register(engine, claim.sender, host=socket.gethostname(), pid=os.getpid(), now=clock())
    log.info("worker started", extra={"sender": claim.sender})
    try:
        while not stop.is_set():
            try:
                if plan:
                    plan_if_due(settings, engine, clock=clock)
                if not stop.is_set():
                    loops.run(
                        deliver_outbox(
                            settings,
                            engine,
                            None,
                            clock=clock,
                            stop=stop,
                            claim=claim,
                            own=False,
                            batch=batch,
                        )
                    )
                claims.heartbeat(engine, claim.sender, at=clock(), lease=lease)
            except DigestError as exc:
                log.warning("worker pass failed", extra={"error": str(exc)})
            stop.wait(every.total_seconds())
    finally:
        try:
            claims.unregister(engine, claim.sender)
        except DigestError as exc:
            log.warning("sender left registered", extra={"error": str(exc)})
    log.info("worker stopped", extra={"sender": claim.sender})
    return 0
