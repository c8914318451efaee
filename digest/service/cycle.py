"""One full cycle: fetch sources, ingest the inbox, compose, send, publish feeds.

Every step is safe to repeat: fetching is conditional, ingest is keyed by
content hash, composing skips subscribers already served this period, and
delivery sends only what the outbox still holds. Running the same period twice
therefore sends nothing the second time.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Collection, Generator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection, Engine

from digest.clock import period_of
from digest.deliver import loops
from digest.deliver.message import MessageBuilder
from digest.deliver.plan import Plan, due_plans, owed_at, owed_plans, record_plans
from digest.deliver.processes import in_processes, senders_for
from digest.deliver.send import (
    Claim,
    Delivered,
    prepare_papers,
    record_transport,
    send_outbox,
)
from digest.deliver.transports import Transport, transport_label
from digest.errors import DigestError
from digest.feeds.kept_entries import FILE as KEPT_ENTRIES
from digest.feeds.publish import publish_feeds
from digest.ingest.dumps import DumpResult, ingest_inbox
from digest.ingest.fetch import FetchResult, fetch_sources
from digest.logs import run_context
from digest.rank.workers import give_back_memory
from digest.service.keys import site_keys
from digest.service.leaving import Copies, sweep_mail_files
from digest.service.preview import digest_view
from digest.service.runlock import process_alive
from digest.service.subscriptions import checked, upsert_subscriber
from digest.service.wiring import links_of, sender_of, transport_of
from digest.settings import Settings
from digest.store import claims, plan_rows, runs
from digest.store.engine import plan_lock, reading, transaction
from digest.store.outbox import counts as outbox_counts
from digest.store.outbox import pending_reason
from digest.store.papers import index_papers
from digest.store.subscribers import list_subscribers

log = logging.getLogger("digest.run")

OUTBOX_BATCH = 1_000  # digests claimed and sent at a time
# How long a sender's claims hold without news from it: long enough for the slowest message
# (a mail server's timeouts and retries); a sender that died leaves its digests this long.
SEND_LEASE = timedelta(minutes=5)


def new_claim(lease: timedelta = SEND_LEASE) -> Claim:
    """A sender's name, unique among every host's (host, pid and a random tail), and lease."""
    return Claim(f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}", lease)


@dataclass
class RunReport:
    """What a run did, as ``run --json`` prints it."""

    run_id: int | None
    period: date
    dry_run: bool
    sources: list[FetchResult] = field(default_factory=list)
    dumps: list[DumpResult] = field(default_factory=list)
    composed: dict[str, int] = field(default_factory=dict)
    delivered: Delivered = field(default_factory=Delivered)
    outbox: dict[str, int] = field(default_factory=dict)
    feeds: dict[str, int] = field(default_factory=dict)
    previews: list[dict[str, Any]] = field(default_factory=list)
    pending_reason: str | None = None  # why digests are still waiting, when some are

    def figures(self) -> dict[str, Any]:
        """The run's numbers (stored with the run and printed by ``--json``)."""
        return {
            "papers_new": sum(d.new for d in self.dumps),
            "dumps": {
                status: sum(1 for d in self.dumps if d.status == status)
                for status in ("ok", "duplicate", "failed")
            },
            "sources": {r.url: r.status for r in self.sources},
            "digests": {
                "composed": self.composed.get("pending", 0),
                "sent": self.delivered.sent,
                "skipped": self.composed.get("skipped", 0),
                "failed": self.delivered.failed,
                "deferred": self.delivered.deferred,
                "withdrawn": self.delivered.withdrawn,
                "pending": self.outbox.get("pending", 0) + self.outbox.get("sending", 0),
            },
            "bounced": self.delivered.bounced,
            "set_aside": [
                {"email": address, "reason": reason} for address, reason in self.delivered.set_aside
            ],
            "feeds": self.feeds,
            "stopped": self.delivered.stopped,
            "gave_up": self.delivered.gave_up,
            "transport_error": self.delivered.transport_error,
            "pending_reason": self.pending_reason,
        }

    def as_json(self) -> dict[str, Any]:
        """The contract: ``digests`` with ``sent``, ``skipped``, ``failed``; dumps as ingest prints them."""
        data = self.figures()
        data.update(
            run_id=self.run_id,
            period=self.period.isoformat(),
            dry_run=self.dry_run,
            dumps_detail=[d.as_json() for d in self.dumps],
        )
        if self.dry_run:
            data["previews"] = self.previews
        return data


def interrupt_dead_runs(engine: Engine, run_ids: Sequence[int] | None = None) -> int:
    """Mark runs still ``running`` whose process is gone as ``interrupted`` (see
    ``runs.interrupt_dead``); returns how many were marked."""
    return runs.interrupt_dead(engine, run_ids)


def _start_run(engine: Engine, period: date, now: datetime, kind: str = "run") -> int:
    interrupt_dead_runs(engine)  # we hold the run lock: any run still "running" died
    return runs.start(engine, period=period, now=now, kind=kind)


def _finish_run(
    engine: Engine, run_id: int, report: RunReport, now: datetime, error: str | None
) -> None:
    # A run that could not send is no "ok" run, though nothing broke: health and status
    # must say so while the digests wait.
    if error is None and report.delivered.gave_up:
        error = f"could not send: {report.delivered.gave_up}"
    status = "failed" if error else ("stopped" if report.delivered.stopped else "ok")
    runs.finish(
        engine, run_id, status=status, figures=json.dumps(report.figures()), error=error, now=now
    )


def publish_site_feeds(
    settings: Settings,
    engine: Engine,
    *,
    now: datetime,
    changed: Collection[int] | None = None,
    processes: int | None = None,
) -> dict[str, int]:
    """The site's feeds, as the settings place and name them: the private feeds' files only
    when the settings say so (``Settings.private_feed_files``: ``all``, or ``auto`` on an
    SQLite store; ``digest serve`` with the web front settles ``auto`` as ``public``). On a
    PostgreSQL store, which several hosts may share, the public feed is the one file: its
    planner writes it, and the web front serves the private feeds live."""
    return publish_feeds(
        engine,
        folder=settings.feeds_dir,
        base_url=settings.base_url,
        site_name=settings.site_name,
        limit=settings.feed_items,
        key=site_keys(settings, engine, now).signing,
        now=now,
        changed=changed,
        processes=processes,
        private=settings.private_feed_files,
        keep=settings.data_dir / KEPT_ENTRIES,
    )


def run_cycle(
    settings: Settings,
    engine: Engine,
    *,
    clock: Callable[[], datetime],
    period: date | None = None,
    dry_run: bool = False,
    transport: Transport | None = None,
    stop: threading.Event | None = None,
    fetch: bool = True,
    guard: Callable[[], None] | None = None,
    send: bool = True,
    claim: Claim | None = None,
    hours_only: bool = False,
    ran_before: datetime | None = None,
) -> RunReport:
    """Run one whole cycle.

    With ``period``, every subscriber is planned for that date. Without, the readers with
    an hour of their own whose hour has come are planned for their own dates, and (unless
    ``hours_only``: a run between the site's scheduled ones) every other reader for today
    in the configured zone, the run's ``period``. ``ran_before``: when the schedule last
    ran, if known better than the runs table knows it.

    ``guard`` raises when the run lock was lost (``LockInfo.check``): the run then stops
    before its next step. ``send`` False: plan only (ingest, compose, the public feed) and
    leave the outbox to the senders."""
    check = guard or (lambda: None)
    now = clock()
    explicit = period
    period = period or period_of(now, settings.tz)
    if ran_before is None:
        ran_before = runs.last_started(engine)
    if dry_run:
        return _dry_run(
            settings,
            engine,
            period=period,
            now=now,
            explicit=explicit is not None,
            hours_only=hours_only,
            ran_before=ran_before,
        )
    run_id = _start_run(engine, period, now, kind="hours" if hours_only else "run")
    report = RunReport(run_id, period, dry_run=False)
    error: str | None = None
    with run_context(run_id):
        try:
            log.info("run started", extra={"period": period.isoformat()})
            if fetch and settings.sources:
                report.sources = fetch_sources(
                    settings.sources,
                    settings.inbox,
                    engine,
                    now=now,
                    timeout=settings.fetch_timeout,
                    max_bytes=settings.fetch_max_bytes,
                )
            report.dumps = ingest_inbox(engine, settings.inbox, clock=clock)
            with transaction(engine) as conn:
                index_papers(conn)
            keys = site_keys(settings, engine, now)
            check()
            with plan_rows.planning(engine) as conn:
                # the planners' lock first: no ingest commits under us, and a planner on
                # another host waits, then finds these readers served
                plan_lock(conn)
                composed_at = clock()  # "new" goes by ingest sequence, not by this
                # Planned and recorded a batch of readers at a time, all in this transaction.
                with closing(
                    _plans(
                        settings,
                        conn,
                        period=period if explicit is not None else None,
                        site_period=period,
                        now=composed_at,
                        hours_only=hours_only,
                        ran_before=ran_before,
                        take_in=True,
                    )
                ) as plans:
                    report.composed = record_plans(
                        conn,
                        plans,
                        period=period,
                        now=composed_at,
                        key=keys.signing,
                        mail_from=settings.mail_from,
                        run_id=run_id,
                    )
            log.info("composed", extra={"composed": report.composed})
            # What planning freed, handed back before the senders fork from this process.
            between_steps(engine)
            check()
            if send:
                report.delivered = deliver_in_processes(
                    settings, engine, transport, clock=clock, stop=stop, claim=claim
                )
                between_steps(engine)
                log.info(
                    "delivered",
                    extra={"sent": report.delivered.sent, "failed": report.delivered.failed},
                )
                check()
            report.feeds = publish_site_feeds(
                settings, engine, now=clock(), changed=report.delivered.sent_to
            )
            # the mail files of readers deleted since (on the web front, maybe on another host)
            sweep_mail_files(engine, Copies.of(settings, keys.verifying))
            with reading(engine) as conn:
                report.outbox = outbox_counts(conn)
                if report.outbox["pending"] + report.outbox["sending"]:
                    report.pending_reason = _why_pending(report.delivered) or pending_reason(conn)
                conn.rollback()
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            _finish_run(engine, run_id, report, clock(), error)
            log.info("run finished", extra={"error": error})
    return report


def between_steps(engine: Engine) -> None:
    """Between a run's steps: the store's page cache of what the step read and the memory
    the step freed handed back to the system, so that the processes the next step forks
    (senders, feed writers) do not each start with them."""
    plan_rows.release_cache(engine)
    give_back_memory(collect=True)


def _plans(
    settings: Settings,
    conn: Connection,
    *,
    period: date | None,
    now: datetime,
    hours_only: bool,
    ran_before: datetime | None,
    take_in: bool,
    site_period: date | None = None,
) -> Generator[Plan, None, None]:
    """The plans of a run (``take_in``) or a dry run, made a batch of readers at a time:
    every reader owed ``period`` when one was given, else those due at ``now`` (the readers
    without an hour of their own for ``site_period``, unless ``hours_only``)."""
    if period is not None:
        return owed_plans(conn, period=period, take_in=take_in, news_days=settings.news_days)
    return due_plans(
        conn,
        now=now,
        site_zone=settings.tz,
        site_period=None if hours_only else site_period,
        take_in=take_in,
        news_days=settings.news_days,
        ran_before=ran_before,
    )


def _why_pending(delivered: Delivered) -> str | None:
    if delivered.gave_up:
        return delivered.gave_up
    if delivered.stopped:
        return "the run was asked to stop before sending them"
    return None


def deliver_in_processes(
    settings: Settings,
    engine: Engine,
    transport: Transport | None,
    *,
    clock: Callable[[], datetime],
    stop: threading.Event | None,
    claim: Claim | None = None,
) -> Delivered:
    """Send the outbox as ``deliver_outbox`` does; a large one from forked processes (a
    core each, ``senders_for``), each a sender of its own sharing ``smtp_connections``, when
    the configured transport is used and no sender was named: the first batch from here,
    the rest from them."""
    batch = OUTBOX_BATCH
    if transport is None and claim is None:
        with reading(engine) as conn:
            waiting = outbox_counts(conn)["pending"]
            conn.rollback()
        processes = senders_for(waiting)
    else:
        processes = 1
    if processes <= 1:
        return loops.run(
            deliver_outbox(settings, engine, transport, clock=clock, stop=stop, claim=claim)
        )
    # The first batch from here: what the builder works out once per paper (most of a day's
    # papers are in one batch) is then the senders' too, inherited, not worked out again.
    builder = MessageBuilder(sender_of(settings))
    total = loops.run(
        deliver_outbox(
            settings, engine, None, clock=clock, stop=stop, batch=batch, builder=builder, batches=1
        )
    )
    if total.stopped or total.gave_up:
        return total
    # What each paper of the rest shows to all its readers, worked out here once (the first
    # batch met about 60% of a day's papers) and inherited, not once in each sender.
    prepare_papers(engine, builder, settings.base_url)
    share = settings.model_copy(
        update={"smtp_connections": max(1, settings.smtp_connections // processes)}
    )

    def send(own_stop: threading.Event) -> Delivered:
        engine.dispose(close=False)  # the parent's connections stay the parent's
        return loops.run(
            deliver_outbox(
                share, engine, None, clock=clock, stop=own_stop, batch=batch, builder=builder
            )
        )

    log.info("sending from processes", extra={"processes": processes, "waiting": waiting})
    total.add(in_processes(processes, send, stop))
    return total


async def deliver_outbox(
    settings: Settings,
    engine: Engine,
    transport: Transport | None,
    *,
    clock: Callable[[], datetime],
    stop: threading.Event | None,
    claim: Claim | None = None,
    own: bool = True,
    batch: int = OUTBOX_BATCH,
    builder: MessageBuilder | None = None,
    batches: int | None = None,
) -> Delivered:
    """Send the outbox over the configured transport, as one of any number of senders
    (``claim``: who; a new name when None), and remember how it fared. ``own``: the sender
    is registered for this pass alone (a worker registers itself once for all its passes).
    ``builder``: one that built messages before (its shared parts kept); ``batches``: at
    most that many batches."""
    claim = claim or new_claim()
    free_dead_senders(engine)
    if own:
        claims.register(
            engine, claim.sender, host=socket.gethostname(), pid=os.getpid(), now=clock()
        )
    try:
        sender = sender_of(settings)
        total = await send_outbox(
            engine,
            transport,
            builder or MessageBuilder(sender),
            links_of(settings, engine, clock()),
            open_transport=lambda: transport_of(settings, engine),
            sender_addr=sender.from_addr,
            concurrency=settings.smtp_connections,
            clock=clock,
            stop=stop,
            batch=batch,
            claim=claim,
            batches=batches,
        )
    finally:
        if own:
            try:
                claims.unregister(engine, claim.sender)
            except DigestError as exc:  # the database is away: the row ages out
                log.warning("sender left registered", extra={"error": str(exc)})
    record_transport(engine, transport_label(settings.mail_transport), total, clock())
    return total


def free_dead_senders(engine: Engine) -> int:
    """Give back at once the claims of senders on this host whose process is gone (a run
    killed with -9): no need to wait out their lease. Their host and process are read from
    the ``sender`` table (a sender's name is only unique, not parsed); a holder without a
    row is left to its lease. Returns how many senders."""
    host = socket.gethostname()
    freed = 0
    for holder in claims.holders(engine):
        if holder.host != host or holder.pid is None or holder.pid == os.getpid():
            continue
        if not process_alive(holder.pid):
            claims.release(engine, holder.name)
            freed += 1
    return freed


def _dry_run(
    settings: Settings,
    engine: Engine,
    *,
    period: date,
    now: datetime,
    explicit: bool = True,
    hours_only: bool = False,
    ran_before: datetime | None = None,
) -> RunReport:
    """Compose and render what a run would send, recording and sending nothing."""
    report = RunReport(None, period, dry_run=True)
    links = links_of(settings, engine, now)  # a fresh install's dry run: a store in memory
    builder = MessageBuilder(sender_of(settings))
    with (
        reading(engine) as conn,
        closing(
            _plans(
                settings,
                conn,
                period=period if explicit else None,
                site_period=period,
                now=now,
                hours_only=hours_only,
                ran_before=ran_before,
                take_in=False,
            )
        ) as plans,
    ):
        for plan in plans:
            sub = plan.subscriber
            when = plan.period or period
            if not plan.ranked and not sub.send_empty:
                report.composed["skipped"] = report.composed.get("skipped", 0) + 1
                continue
            report.composed["pending"] = report.composed.get("pending", 0) + 1
            view = digest_view(
                conn, links, sub, period=when, ranked=plan.ranked, mail_from=settings.mail_from
            )
            size = len(builder.build(view, now))
            report.previews.append({"email": sub.email, "papers": len(plan.ranked), "bytes": size})
        conn.rollback()
    return report


def ensure_sample_subscribers(settings: Settings, engine: Engine, *, now: datetime) -> int:
    """Add the settings file's [[subscribers]] that the store does not know yet."""
    if not settings.sample_subscribers:
        return 0  # the usual case: no need to read every subscriber before every run
    added = 0
    known = {row.email for row in list_subscribers(engine)}
    for sample in settings.sample_subscribers:
        patch = checked(sample)
        if patch.email not in known:
            upsert_subscriber(engine, patch, now=now)
            added += 1
    return added


def readers_due(
    settings: Settings, engine: Engine, *, now: datetime, ran_before: datetime | None = None
) -> int:
    """How many readers with an hour of their own are due a digest at ``now`` (reads only:
    the hourly check that starts a run only when someone is due)."""
    with reading(engine) as conn:
        due = owed_at(conn, now=now, site_zone=settings.tz, ran_before=ran_before)
        conn.rollback()
    return len(due)


def last_run_period(engine: Engine) -> date | None:
    """The period of the newest run that finished well (for the scheduler's catch-up)."""
    return runs.last_ok_period(engine)


def poll_once(
    settings: Settings, engine: Engine, *, clock: Callable[[], datetime]
) -> list[DumpResult]:
    """Between runs: fetch the sources and ingest whatever reached the inbox."""
    if settings.sources:
        fetch_sources(
            settings.sources,
            settings.inbox,
            engine,
            now=clock(),
            timeout=settings.fetch_timeout,
            max_bytes=settings.fetch_max_bytes,
        )
    return ingest_inbox(engine, settings.inbox, clock=clock)


def run_lines(report: RunReport, settings: Settings) -> list[str]:
    """A run's summary for a person."""
    figures = report.figures()
    digests = figures["digests"]
    lines = [f"{'dry run' if report.dry_run else 'run'} for {report.period.isoformat()}"]
    for source in report.sources:
        lines.append(f"source {source.url}: {source.status}")
    for dump in report.dumps:
        if dump.status == "failed":
            lines.append(f"dump {dump.path}: failed: {dump.error}")
        else:
            lines.append(f"dump {dump.path}: {dump.status}, {dump.new} new of {dump.entries}")
        lines.extend(f"dump {dump.path}: {warning}" for warning in dump.warnings)
    if report.dry_run:
        lines.append(
            f"would send {digests['composed']} digest(s), skip {digests['skipped']} (nothing recorded)"
        )
        for preview in report.previews:
            lines.append(
                f"  {preview['email']}: {preview['papers']} papers, {preview['bytes']:,} bytes"
            )
        return lines
    why = f" ({report.pending_reason})" if digests["pending"] and report.pending_reason else ""
    lines.append(
        f"digests: {digests['sent']} sent, {digests['skipped']} skipped, {digests['failed']} failed,"
        f" {digests['pending']} still pending{why}"
    )
    if digests["withdrawn"]:
        lines.append(
            f"withdrawn: {digests['withdrawn']} waiting digest(s) of subscribers who left since"
        )
    for address in figures["bounced"]:
        lines.append(f"bounced: {address}")
    for item in figures["set_aside"]:
        lines.append(f"set aside: {item['email']}: {item['reason']}")
    if settings.mail_transport.startswith("file://"):
        lines.append(f"emails: {settings.mail_transport[len('file://') :]}")
    lines.append(
        f"feeds: {settings.feeds_dir} ({report.feeds.get('written', 0)} written,"
        f" {report.feeds.get('unchanged', 0)} unchanged)"
    )
    if report.delivered.stopped:
        lines.append("stopped before the outbox was empty; the next run sends the rest")
    if report.delivered.gave_up:
        lines.append(f"gave up sending: {report.delivered.gave_up}; the next run tries again")
    return lines
