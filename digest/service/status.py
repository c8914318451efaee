"""``digest status``: what the store holds, how the last runs went, what needs a look."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection, Engine

from digest.cron import crontab_trigger
from digest.deliver.transports import transport_label
from digest.service.runlock import lock_holder, uses_advisory_lock
from digest.settings import Settings
from digest.settings.model import link_warnings
from digest.store import claims
from digest.store.engine import reading, store_label
from digest.store.outbox import counts as outbox_counts
from digest.store.outbox import pending_reason, recent_failures, transport_state
from digest.store.papers import counts as paper_counts
from digest.store.runs import INTERRUPTED, interrupt_dead, last_finished
from digest.store.runs import recent as recent_runs
from digest.store.runs import unfinished as unfinished_runs
from digest.store.sources import all_states, recent_dumps
from digest.store.subscribers import count_by_status
from digest.store.unsent import waiting_ages

RECENT_RUNS = 5
BOUNCE_WINDOW = timedelta(days=7)
# How long digests still to send have waited, as /metrics counts them (the last: longer).
AGES = (
    ("under_1h", timedelta(hours=1)),
    ("1h_to_12h", timedelta(hours=12)),
    ("12h_to_1d", timedelta(days=1)),
    ("1d_to_3d", timedelta(days=3)),
    ("over_3d", None),
)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass(frozen=True)
class Sending:
    """Whether mail is going out: what the last run could not send, how long digests have
    waited, and the one reason (if any) that makes the installation unhealthy."""

    could_not_send: str | None  # why the last finished run stopped sending
    oldest_age: timedelta | None  # of the digest that has waited longest
    by_age: dict[str, int]  # digests still to send, by how long they have waited
    too_long: int  # of them, those waiting longer than ``max_pending_hours``
    max_pending: timedelta

    @property
    def problem(self) -> str | None:
        """Why sending is unhealthy, in a sentence; None when it is not."""
        if self.could_not_send:
            return f"the last run could not send: {self.could_not_send}"
        if self.too_long:
            hours = self.max_pending.total_seconds() / 3600
            return (
                f"{self.too_long} digest(s) waiting longer than {hours:g} h"
                f" (the oldest for {_hours(self.oldest_age)})"
            )
        return None


def _hours(age: timedelta | None) -> str:
    return "0 h" if age is None else f"{age.total_seconds() / 3600:.1f} h"


def sending_state(conn: Connection, now: datetime, max_pending_hours: float) -> Sending:
    """How sending stands now (``problem``: why it is unhealthy)."""
    limit = timedelta(hours=max_pending_hours)
    bounds = [bound for _, bound in AGES if bound is not None]
    oldest, total, older = waiting_ages(conn, now, [*bounds, limit])
    *older_than, too_long = older
    by_age: dict[str, int] = {}
    previous = total  # "older than each bound" to "between one bound and the next"
    for (label, _), more in zip(AGES, [*older_than, 0], strict=True):
        by_age[label] = previous - more
        previous = more
    last = last_finished(conn)
    could_not_send = None
    if last is not None:
        try:
            figures = json.loads(last.figures)
        except ValueError:
            figures = {}
        gave_up = figures.get("gave_up") if isinstance(figures, dict) else None
        could_not_send = str(gave_up) if gave_up else None
    return Sending(
        could_not_send,
        None if oldest is None else max(now - oldest, timedelta(0)),
        by_age,
        too_long,
        limit,
    )


def collect_status(
    settings: Settings, engine: Engine, now: datetime, *, store_exists: bool = True
) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (also the ``--json`` output).

    ``store_exists`` False: ``engine`` is an empty stand-in for a store not made yet.
    """
    local = now.astimezone(settings.tz)
    with reading(engine) as conn:
        papers, new_today, newest = paper_counts(conn, now - timedelta(days=1))
        runs = recent_runs(conn, RECENT_RUNS)
        # read before looking at the lock: a run starting after this is not among them
        unfinished = unfinished_runs(conn)
        dumps = recent_dumps(conn, RECENT_RUNS)
        sources = all_states(conn)
        failed = recent_failures(conn, now - BOUNCE_WINDOW)
        sending = sending_state(conn, now, settings.max_pending_hours)
        outbox = outbox_counts(conn)
        mail = transport_state(conn, transport_label(settings.mail_transport))
        waiting = outbox["pending"] + outbox["sending"]
        reason = pending_reason(conn) if waiting else None
        conn.rollback()
    subscribers = count_by_status(engine)
    trigger = crontab_trigger(settings.schedule, settings.tz)
    next_run = trigger.get_next_fire_time(None, local)
    holder = lock_holder(settings)
    interrupted: set[int] = set()
    if holder is None and unfinished and not uses_advisory_lock(settings.database_url):
        # Nobody holds the lock, yet these say "running": their process died (kill -9).
        interrupted = set(unfinished)
        interrupt_dead(engine, unfinished)
    senders = claims.senders(engine)
    warnings = link_warnings(settings)
    if local.weekday() < 5 and new_today == 0 and papers:
        warnings.append("no new papers in the last 24 hours on a weekday")
    warnings += _store_warnings(failed, subscribers, sources, mail, interrupted)
    waiting = outbox["pending"] + outbox["sending"]
    if waiting:
        warnings.append(
            f"{waiting} digest(s) waiting to be sent ({reason});"
            f" the oldest for {_hours(sending.oldest_age)}"
        )
    if sending.problem:
        warnings.append(sending.problem)
    return {
        # which installation this is: run from another folder, without the service's
        # environment, a command reads another (often empty) store
        "config": None if settings.config_path is None else str(settings.config_path),
        "store": store_label(settings.database_url),
        "papers": {"total": papers, "new_last_24h": new_today, "newest_first_seen": _iso(newest)},
        "subscribers": subscribers,
        "digests": outbox,
        "failed_digests": [{"period": str(p), "email": e, "error": err} for p, e, err in failed],
        "sending": _sending_json(sending, settings.max_pending_hours),
        "runs": [_run_json(run, run.id in interrupted) for run in runs],
        "dumps": [
            {
                "name": d.name,
                "layout": d.layout,
                "ingested_at": _iso(d.ingested_at),
                "entries": d.entries,
                "new": d.new,
            }
            for d in dumps
        ],
        "sources": [
            {
                "url": source.url,
                "status": source.last_status,
                "last_fetch_at": _iso(source.last_fetch_at),
                "last_new_at": _iso(source.last_new_at),
                "error": source.last_error,
            }
            for source in sources
        ],
        "schedule": {
            "cron": settings.schedule,
            "timezone": settings.timezone,
            "next_run": _iso(next_run),
        },
        "running": None if holder is None else holder.to_json(),
        "senders": [sender.to_json(now) for sender in senders],
        "store_exists": store_exists,
        "transport": None if mail is None else _transport_json(mail),
        "warnings": warnings,
    }


def _store_warnings(
    failed: list[Any],
    subscribers: dict[str, int],
    sources: list[Any],
    mail: dict[str, Any] | None,
    interrupted: set[int],
) -> list[str]:
    """What the store says needs a look: failed digests, bounces, sources, mail, runs."""
    warnings: list[str] = []
    if failed:
        warnings.append(f"{len(failed)} digest(s) failed in the last 7 days")
    if subscribers["bounced"]:
        warnings.append(f"{subscribers['bounced']} subscriber(s) bounced")
    for source in sources:
        if source.last_status not in ("ok", "not-modified", ""):
            warnings.append(
                f"source {source.url}: {source.last_status} ({source.last_error or 'no detail'})"
            )
    if mail and mail["last_error"]:
        warnings.append(
            f"mail transport failing since {_iso(mail['failing_since'])}: {mail['last_error']}"
        )
    if interrupted:
        warnings.append(f"{len(interrupted)} run(s) interrupted (their process ended)")
    return warnings


def _sending_json(sending: Sending, max_pending_hours: float) -> dict[str, Any]:
    return {
        "problem": sending.problem,
        "last_run_could_not_send": sending.could_not_send,
        "oldest_pending_age_seconds": None
        if sending.oldest_age is None
        else int(sending.oldest_age.total_seconds()),
        "pending_by_age": sending.by_age,
        "max_pending_hours": max_pending_hours,
    }


def _run_json(run: Any, interrupted: bool) -> dict[str, Any]:
    return {
        "id": run.id,
        "period": str(run.period) if run.period else None,
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "status": "interrupted" if interrupted else run.status,
        "figures": json.loads(run.figures),
        "error": INTERRUPTED if interrupted else run.error,
    }


def _transport_json(mail: dict[str, Any]) -> dict[str, Any]:
    return {
        "transport": mail["transport"],
        "last_error": mail["last_error"],
        "failing_since": _iso(mail["failing_since"]),
        "last_failure_at": _iso(mail["last_failure_at"]),
        "last_ok_at": _iso(mail["last_ok_at"]),
    }


def status_lines(data: dict[str, Any]) -> list[str]:
    """The status as text for a person."""
    papers, subs, digests = data["papers"], data["subscribers"], data["digests"]
    lines = [
        f"papers: {papers['total']:,} ({papers['new_last_24h']:,} new in the last 24 h)",
        "subscribers: " + ", ".join(f"{n} {status}" for status, n in subs.items()),
        "digests: " + ", ".join(f"{n} {status}" for status, n in digests.items()),
        f"next run: {data['schedule']['next_run']} ({data['schedule']['cron']} {data['schedule']['timezone']})",
    ]
    if data["running"]:
        lines.append(
            f"running now: pid {data['running']['pid']} since {data['running']['started_at']}"
        )
    for sender in data.get("senders", []):
        where = f"pid {sender['pid']} on {sender['host']}" if sender["pid"] else "gone"
        heard = sender["heartbeat_age_s"]
        lease = sender["lease_left_s"]
        lines.append(
            f"sender {sender['name']} ({where}): {sender['sent']} sent,"
            f" {sender['claims']} claimed"
            + (f", heard from {heard:.0f} s ago" if heard is not None else "")
            + (
                ""
                if lease is None
                else f", lease {'ends in' if lease >= 0 else 'ran out'} {abs(lease):.0f} s"
                + ("" if lease >= 0 else " ago")
            )
        )
    for run in data["runs"]:
        figures = run["figures"].get("digests", {})
        why = f" ({run['error']})" if run["error"] else ""
        lines.append(
            f"run {run['id']} {run['period']} {run['status']}: "
            f"{figures.get('sent', 0)} sent, {figures.get('skipped', 0)} skipped, "
            f"{figures.get('failed', 0)} failed, {run['figures'].get('papers_new', 0)} new papers"
            f"{why}"
        )
    for source in data["sources"]:
        lines.append(f"source {source['url']}: {source['status']} at {source['last_fetch_at']}")
    mail = data["transport"]
    if mail and mail["last_error"]:
        lines.append(
            f"mail {mail['transport']}: failing since {mail['failing_since']}"
            f" (last {mail['last_failure_at']}): {mail['last_error']}"
        )
    elif mail:
        lines.append(f"mail {mail['transport']}: ok at {mail['last_ok_at']}")
    for warning in data["warnings"]:
        lines.append(f"warning: {warning}")
    lines.append(f"config: {data['config'] or 'none (the defaults and DIGEST_* variables)'}")
    if data.get("store_exists", True):
        lines.append(f"store: {data['store']}")
    else:
        lines.append(
            f"store: not made yet at {data['store']} (init, ingest, subscribe or run make it)"
        )
    return lines
