"""``/healthz`` for load balancers and ``/metrics`` for Prometheus.

Healthy means the database answers, mail goes out, and the digest has run. Mail goes
out when the last run could send (no outage stopped it) and no digest has waited longer
than ``max_pending_hours``. Has run: the last run that ended ``ok`` finished less than
``STALE_PERIODS`` schedule periods ago. The period is the longest gap between the
schedule's next few times (so a weekdays-only schedule is not stale on a Monday morning).
A store where no run was ever recorded is healthy, waiting for its first run; one whose
runs all failed is not. Each 503 says why.

``/metrics`` is for loopback clients (a Prometheus on the same host, or behind the
proxy's own access rules) and for those that send ``metrics_token`` as a bearer token.
"""

from __future__ import annotations

import hmac
import ipaddress
import itertools
import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from digest.cron import crontab_trigger
from digest.service.health import read_health, read_metrics
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
        health = read_health(state.engine, now, state.settings.max_pending_hours)
    except Exception as exc:  # whatever keeps the store from answering is what this reports
        data.update(status="database unreachable", database=f"error: {exc}".splitlines()[0])
        return _json(data, 503)
    finished, sending = health.runs.last_ok, health.sending
    data["last_ok_run"] = finished.isoformat() if finished else None
    data["last_ok_run_age_seconds"] = int((now - finished).total_seconds()) if finished else None
    data["last_run_status"] = health.runs.last_status
    age = sending.oldest_age
    data["oldest_pending_age_seconds"] = int(age.total_seconds()) if age is not None else None
    data["max_pending_hours"] = state.settings.max_pending_hours
    if sending.problem:
        data["reason"] = sending.problem
        data["status"] = (
            "last run could not send" if sending.could_not_send else "digests waiting too long"
        )
        return _json(data, 503)
    if finished is None:
        healthy = health.runs.last_finished is None
        data["status"] = "waiting for the first run" if healthy else "no successful run"
    else:
        healthy = now - finished <= stale_after
        data["status"] = "ok" if healthy else "stale"
    return _json(data, 200 if healthy else 503)


def _metric(name: str, kind: str, help_text: str, lines: Iterable[str]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *lines]


def _refused(request: Request, token: str) -> Response | None:
    """Why this client may not read the metrics (a 403 or 401), or None when it may."""
    host = request.client.host if request.client else ""
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    if not token:
        return Response("metrics are served to loopback only\n", status_code=403)
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return None
    return Response(
        "a bearer token is needed\n",
        status_code=401,
        headers={"www-authenticate": 'Bearer realm="metrics"'},
    )


def metrics(request: Request) -> Response:
    """Papers, subscribers by status, the last run, the outbox by status and by how long
    digests have waited, sends by result: the Prometheus text format."""
    state = state_of(request)
    refused = _refused(request, state.settings.metrics_token)
    if refused is not None:
        return refused
    read = read_metrics(state.engine, state.now(), state.settings.max_pending_hours)
    papers, subscribers, outbox, sending = read.papers, read.subscribers, read.outbox, read.sending
    last = read.runs
    out: list[str] = []
    out += _metric("digest_papers", "gauge", "Papers in the store.", [f"digest_papers {papers}"])
    out += _metric(
        "digest_subscribers",
        "gauge",
        "Subscribers by status.",
        [f'digest_subscribers{{status="{k}"}} {v}' for k, v in subscribers.items()],
    )
    if last.last_finished is not None:
        out += _metric(
            "digest_last_run_timestamp_seconds",
            "gauge",
            "When the last finished run ended (Unix time).",
            [f"digest_last_run_timestamp_seconds {last.last_finished.timestamp():.0f}"],
        )
        out += _metric(
            "digest_last_run_ok",
            "gauge",
            "1 when the last finished run ended ok, else 0.",
            [f"digest_last_run_ok {1 if last.last_ok_run else 0}"],
        )
    if last.last_ok is not None:
        out += _metric(
            "digest_last_ok_run_timestamp_seconds",
            "gauge",
            "When the last run that ended ok finished (Unix time).",
            [f"digest_last_ok_run_timestamp_seconds {last.last_ok.timestamp():.0f}"],
        )
    out += _metric(
        "digest_outbox_digests",
        "gauge",
        "Digests in the outbox by status.",
        [f'digest_outbox_digests{{status="{k}"}} {v}' for k, v in outbox.items()],
    )
    out += _metric(
        "digest_pending_digests",
        "gauge",
        "Digests still to send, by how long they have waited.",
        [f'digest_pending_digests{{age="{k}"}} {v}' for k, v in sending.by_age.items()],
    )
    oldest = sending.oldest_age.total_seconds() if sending.oldest_age is not None else 0
    out += _metric(
        "digest_pending_oldest_age_seconds",
        "gauge",
        "How long the digest waiting longest has waited (0: none waits).",
        [f"digest_pending_oldest_age_seconds {oldest:.0f}"],
    )
    out += _metric(
        "digest_sending_ok",
        "gauge",
        "1 when mail goes out: the last run could send and no digest waits too long.",
        [f"digest_sending_ok {0 if sending.problem else 1}"],
    )
    out += _metric(
        "digest_sends_total",
        "counter",
        "Digests sent, failed for good, deferred and bounced, over all runs.",
        [f'digest_sends_total{{result="{k}"}} {v}' for k, v in read.sends.items()],
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
