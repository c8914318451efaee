"""``/healthz`` for load balancers and ``/metrics`` for Prometheus.

Healthy means the database answers and the digest has run: the last run that ended
``ok`` finished less than ``STALE_PERIODS`` schedule periods ago. The period is the
longest gap between the schedule's next few times (so a weekdays-only schedule is not
stale on a Monday morning). A store where no run was ever recorded is healthy, waiting
for its first run; one whose runs all failed is not.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from digest.clock import as_utc
from digest.cron import crontab_trigger
from digest.store import runs
from digest.store.engine import reading
from digest.store.outbox import counts as outbox_counts
from digest.store.papers import count as paper_count
from digest.store.subscribers import count_by_status
from digest.web.state import WebState, state_of

STALE_PERIODS = 2
_FIRES = 8  # fire times looked at for the schedule's longest gap


def schedule_period(schedule: str, timezone: str, now: datetime) -> timedelta:
    """The longest gap between the schedule's next few fire times."""
    trigger = crontab_trigger(schedule, timezone)
    times: list[datetime] = []
    previous = None
    moment = now
    for _ in range(_FIRES):
        fire = trigger.get_next_fire_time(previous, moment)
        if fire is None:
            break
        times.append(fire)
        previous, moment = fire, fire + timedelta(seconds=1)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    return max(gaps, default=timedelta(days=1))


def _period(state: WebState) -> timedelta:
    found = state.caches.get("schedule_period")
    if found is None:
        settings = state.settings
        found = state.caches["schedule_period"] = schedule_period(
            settings.schedule, settings.timezone, state.now()
        )
    assert isinstance(found, timedelta)
    return found


def _json(data: dict[str, Any], status: int) -> Response:
    return Response(
        json.dumps(data, indent=1) + "\n",
        status_code=status,
        media_type="application/json",
        headers={"cache-control": "no-store"},
    )


def healthz(request: Request) -> Response:
    """Database reachable and the last successful run recent enough: 200, else 503."""
    state = state_of(request)
    now = state.now()
    stale_after = _period(state) * STALE_PERIODS
    data: dict[str, Any] = {
        "database": "ok",
        "stale_after_seconds": int(stale_after.total_seconds()),
        "schedule": state.settings.schedule,
    }
    try:
        with reading(state.engine) as conn:
            last_ok = runs.last_finished(conn, status="ok")
            last_any = runs.last_finished(conn)
            conn.rollback()
    except Exception as exc:  # whatever keeps the store from answering is what this reports
        data.update(status="database unreachable", database=f"error: {exc}".splitlines()[0])
        return _json(data, 503)
    finished = as_utc(last_ok.finished_at) if last_ok is not None else None
    data["last_ok_run"] = finished.isoformat() if finished else None
    data["last_ok_run_age_seconds"] = int((now - finished).total_seconds()) if finished else None
    data["last_run_status"] = last_any.status if last_any is not None else None
    if finished is None:
        healthy = last_any is None
        data["status"] = "waiting for the first run" if healthy else "no successful run"
    else:
        healthy = now - finished <= stale_after
        data["status"] = "ok" if healthy else "stale"
    return _json(data, 200 if healthy else 503)


def _metric(name: str, kind: str, help_text: str, lines: Iterable[str]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *lines]


def metrics(request: Request) -> Response:
    """Papers, subscribers by status, the last run, the outbox by status, sends by result:
    the Prometheus text format."""
    state = state_of(request)
    engine = state.engine
    with reading(engine) as conn:
        papers = paper_count(conn)
        last_any = runs.last_finished(conn)
        last_ok = runs.last_finished(conn, status="ok")
        figures = runs.figures_of_finished(conn)
        conn.rollback()
    subscribers = count_by_status(engine)
    outbox = outbox_counts(engine)
    sends = {"sent": 0, "failed": 0, "deferred": 0, "bounced": 0}
    for text in figures:
        try:
            run = json.loads(text)
        except ValueError:
            continue
        digests = run.get("digests", {}) if isinstance(run, dict) else {}
        for result in ("sent", "failed", "deferred"):
            value = digests.get(result, 0)
            sends[result] += value if isinstance(value, int) else 0
        bounced = run.get("bounced", []) if isinstance(run, dict) else []
        sends["bounced"] += len(bounced) if isinstance(bounced, list) else 0
    out: list[str] = []
    out += _metric("digest_papers", "gauge", "Papers in the store.", [f"digest_papers {papers}"])
    out += _metric(
        "digest_subscribers",
        "gauge",
        "Subscribers by status.",
        [f'digest_subscribers{{status="{k}"}} {v}' for k, v in subscribers.items()],
    )
    if last_any is not None:
        out += _metric(
            "digest_last_run_timestamp_seconds",
            "gauge",
            "When the last finished run ended (Unix time).",
            [f"digest_last_run_timestamp_seconds {as_utc(last_any.finished_at).timestamp():.0f}"],
        )
        out += _metric(
            "digest_last_run_ok",
            "gauge",
            "1 when the last finished run ended ok, else 0.",
            [f"digest_last_run_ok {1 if last_any.status == 'ok' else 0}"],
        )
    if last_ok is not None:
        out += _metric(
            "digest_last_ok_run_timestamp_seconds",
            "gauge",
            "When the last run that ended ok finished (Unix time).",
            [f"digest_last_ok_run_timestamp_seconds {as_utc(last_ok.finished_at).timestamp():.0f}"],
        )
    out += _metric(
        "digest_outbox_digests",
        "gauge",
        "Digests in the outbox by status.",
        [f'digest_outbox_digests{{status="{k}"}} {v}' for k, v in outbox.items()],
    )
    out += _metric(
        "digest_sends_total",
        "counter",
        "Digests sent, failed for good, deferred and bounced, over all runs.",
        [f'digest_sends_total{{result="{k}"}} {v}' for k, v in sends.items()],
    )
    return Response(
        "\n".join(out) + "\n",
        media_type="text/plain; version=0.0.4; charset=utf-8",
        headers={"cache-control": "no-store"},
    )


routes: list[BaseRoute] = [
    Route("/healthz", healthz, methods=["GET", "HEAD"]),
    Route("/metrics", metrics, methods=["GET"]),
]
