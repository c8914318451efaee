"""What ``/healthz`` and ``/metrics`` read from the store: the last runs, how sending goes,
the papers, subscribers and outbox by status, and the sends of every run summed.

Each is one read of the store; the web front turns them into its answer (and a store that
does not answer into a 503).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from digest.clock import as_utc
from digest.service.status import Sending, sending_state
from digest.store import runs
from digest.store.engine import reading
from digest.store.outbox import counts as outbox_counts
from digest.store.papers import count as paper_count
from digest.store.subscribers import count_by_status

SEND_RESULTS = ("sent", "failed", "deferred")  # counted in each run's figures


@dataclass(frozen=True)
class Runs:
    """The last finished run (its end and status) and the last one that ended ok."""

    last_finished: datetime | None
    last_status: str | None
    last_ok: datetime | None

    @property
    def last_ok_run(self) -> bool:
        return self.last_status == "ok"


@dataclass(frozen=True)
class Health:
    """What ``/healthz`` judges by."""

    runs: Runs
    sending: Sending


@dataclass(frozen=True)
class Metrics:
    """What ``/metrics`` shows."""

    papers: int
    subscribers: dict[str, int]
    runs: Runs
    outbox: dict[str, int]
    sending: Sending
    sends: dict[str, int]


def _runs(last_any: Any, last_ok: Any) -> Runs:
    def finished(run: Any) -> datetime | None:
        return None if run is None else as_utc(run.finished_at)

    status = None if last_any is None else str(last_any.status)
    return Runs(finished(last_any), status, finished(last_ok))


def read_health(engine: Engine, now: datetime, max_pending_hours: float) -> Health:
    """The last runs and how sending goes; raises whatever keeps the store from answering."""
    with reading(engine) as conn:
        last_ok = runs.last_finished(conn, status="ok")
        last_any = runs.last_finished(conn)
        sending = sending_state(conn, now, max_pending_hours)
        conn.rollback()
    return Health(_runs(last_any, last_ok), sending)


def _sends(figures: list[str]) -> dict[str, int]:
    """Digests sent, failed, deferred and bounced, summed over every run's figures (a run's
    figures that are not what a run writes count nothing)."""
    sends = {result: 0 for result in SEND_RESULTS} | {"bounced": 0}
    for text in figures:
        try:
            run = json.loads(text)
        except ValueError:
            continue
        digests = run.get("digests", {}) if isinstance(run, dict) else {}
        for result in SEND_RESULTS:
            value = digests.get(result, 0)
            sends[result] += value if isinstance(value, int) else 0
        bounced = run.get("bounced", []) if isinstance(run, dict) else []
        sends["bounced"] += len(bounced) if isinstance(bounced, list) else 0
    return sends


def read_metrics(engine: Engine, now: datetime, max_pending_hours: float) -> Metrics:
    """Every figure ``/metrics`` shows, read at ``now``."""
    with reading(engine) as conn:
        papers = paper_count(conn)
        last_any = runs.last_finished(conn)
        last_ok = runs.last_finished(conn, status="ok")
        figures = runs.figures_of_finished(conn)
        sending = sending_state(conn, now, max_pending_hours)
        outbox = outbox_counts(conn)
        conn.rollback()
    subscribers = count_by_status(engine)
    return Metrics(papers, subscribers, _runs(last_any, last_ok), outbox, sending, _sends(figures))
