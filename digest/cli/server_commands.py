"""The commands that run until stopped: ``serve`` (the schedule and the web front),
``web`` (the web front alone) and ``worker`` (sending, and planning on the schedule)."""

from __future__ import annotations

import argparse
import logging
import threading
from datetime import datetime, timedelta

from digest.cli.context import Context, log_setup, stop_on_signals
from digest.errors import AlreadyRunning


def cmd_serve(args: argparse.Namespace, ctx: Context) -> int:
    """Run the scheduler until SIGTERM/SIGINT: the digest on its schedule, polls in between."""

    from digest.service.cycle import (
        ensure_sample_subscribers,
        last_run_period,
        poll_once,
        readers_due,
        run_cycle,
    )
    from digest.service.runlock import hold_run_lock
    from digest.service.scheduler import serve
    from digest.settings.model import link_warnings

    settings = ctx.settings
    log_setup(ctx, True)
    log = logging.getLogger("digest.serve")
    for warning in link_warnings(settings):
        log.warning(warning)
    engine = ctx.engine
    ensure_sample_subscribers(settings, engine, now=ctx.now())
    stop = threading.Event()

    looked: list[datetime] = []  # when the readers' own hours were last looked at

    def looking() -> datetime | None:
        before = looked[-1] if looked else None
        looked[:] = [ctx.clock()]
        return before

    def guarded_run(skipped: str, *, hours_only: bool, ran_before: datetime | None) -> None:
        """One run under the run lock, stopped if the lock is lost; skipped while another
        holds it."""
        try:
            with hold_run_lock(settings, stop=stop) as held:
                run_cycle(
                    settings,
                    engine,
                    clock=ctx.clock,
                    stop=stop,
                    guard=held.check,
                    hours_only=hours_only,
                    ran_before=ran_before,
                )
        except AlreadyRunning as exc:
            log.warning("%s skipped: %s", skipped, exc)

    def run_job() -> None:
        guarded_run("digest run", hours_only=False, ran_before=looking())

    def poll_job() -> None:
        try:
            with hold_run_lock(settings):
                poll_once(settings, engine, clock=ctx.clock)
        except AlreadyRunning:
            pass  # a run is ingesting right now

    def hours_job() -> None:
        before = looking()
        if not readers_due(settings, engine, now=ctx.clock(), ran_before=before):
            return  # the usual quarter hour: nobody's hour has come, and no run is recorded
        guarded_run("run for the readers' hours", hours_only=True, ran_before=before)

    services = []
    if not args.no_web:
        from digest.web.server import WebServer  # the web stack loads only where it runs

        services.append(WebServer(settings, engine))
        if settings.feed_files == "auto":  # the web front serves the private feeds live
            settings = settings.model_copy(update={"feed_files": "public"})
    return serve(
        services=services,
        schedule=settings.schedule,
        timezone=settings.timezone,
        poll_minutes=settings.poll_minutes,
        run_job=run_job,
        poll_job=poll_job,
        stop_event=stop,
        last_period=lambda: last_run_period(engine),
        hours_job=hours_job,
    )


def cmd_worker(args: argparse.Namespace, ctx: Context) -> int:
    """Send the outbox, and plan on the schedule, until SIGTERM/SIGINT (then exit 0)."""
    from digest.service.worker import run_worker

    settings = ctx.settings
    log_setup(ctx, True)
    stop = threading.Event()
    with stop_on_signals(stop):
        return run_worker(
            settings,
            ctx.engine,
            clock=ctx.clock,
            stop=stop,
            lease=timedelta(seconds=args.lease),
            every=timedelta(seconds=args.every),
            plan=not args.no_plan,
            batch=args.batch,
        )


def cmd_web(args: argparse.Namespace, ctx: Context) -> int:
    """Serve the web front alone, until SIGTERM/SIGINT; the digest runs elsewhere."""

    from digest.web.server import run_web

    settings = ctx.settings
    if args.host is not None:
        settings = settings.model_copy(update={"web_host": args.host})
    if args.port is not None:
        settings = settings.model_copy(update={"web_port": args.port})
    log_setup(ctx, True)
    ctx.engine  # noqa: B018 -- creates or migrates the store once, before any worker starts

    def say(line: str) -> None:
        ctx.say(line)
        ctx.stdout.flush()  # under systemd or a pipe, seen now and not at exit

    return run_web(settings, say)
