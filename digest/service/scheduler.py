"""The engine of ``digest serve``: APScheduler 3 running the digest and the poll, stopped cleanly.

Two jobs share one worker thread, so a poll (fetch sources, ingest) and a
digest run never overlap inside the process; the run lock keeps them apart from
cron or a manual ``digest run``. Under ``serve`` that thread is the main thread
(:class:`MainThreadExecutor`): a run forks worker processes (feeds, ranking), and
a process forked from another thread dies on exit on Python 3.11. Both jobs are ``coalesce=True`` and
``max_instances=1``: however many fires were missed, one run makes up for them,
and a fire while the same job is still going is dropped, not queued.

Catch-up policy, in two parts:

* While the service is up but wakes late (a suspended VM, a clock jump, a digest
  queued behind a long poll) the digest still runs once if it is at most
  ``DIGEST_MISFIRE_GRACE`` late; later than that it is skipped and the next
  scheduled run carries its papers, since a digest holds everything first seen
  since the subscriber's previous one.
* A run missed while the service was down: at start-up, if today's scheduled
  time (in the configured time zone) has passed and the last successful run's
  period is not today, the digest runs once right away (``needs_catch_up``).
  A run missed on an earlier day is not made up before today's scheduled time;
  today's run covers it.

``serve`` turns SIGTERM and SIGINT into an orderly stop: it sets ``stop_event``
(which a run checks between messages, so it ends between two sends with nothing
half-recorded), lets the job in flight finish, then returns 0.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
from collections.abc import Callable, Sequence
from datetime import date, datetime, time, timedelta, tzinfo
from types import FrameType
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from apscheduler.executors.base import BaseExecutor, run_job  # type: ignore[import-untyped]
from apscheduler.executors.pool import ThreadPoolExecutor  # type: ignore[import-untyped]
from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]
from apscheduler.schedulers.base import BaseScheduler  # type: ignore[import-untyped]
from apscheduler.schedulers.blocking import BlockingScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.base import BaseTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

from digest.cron import crontab_trigger
from digest.errors import AlreadyRunning, ConfigError, DigestError
from digest.logs import run_context

log = logging.getLogger("digest.scheduler")

DIGEST_JOB = "digest"
POLL_JOB = "poll"
HOURS_JOB = "hours"
# The readers' own hours are looked at every quarter hour, not every hour: a reader's 08:00
# is 02:30 UTC in India and 20:15 UTC in Nepal, and they should not wait most of an hour.
HOURS_MINUTES = "0,15,30,45"
DIGEST_MISFIRE_GRACE = timedelta(hours=6)
CATCH_UP_DELAY = timedelta(seconds=1)  # after the start-up poll, so the catch-up sees its files


class Service(Protocol):
    """Something else living in the ``serve`` process (the web app, later)."""

    def start(self) -> None:
        """Begin serving; must return promptly (run in a thread if needed)."""

    def stop(self) -> None:
        """Stop serving; called once on shutdown, before the scheduler is stopped."""


def _zone(tz: str | tzinfo) -> tzinfo:
    try:
        return ZoneInfo(tz) if isinstance(tz, str) else tz
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"setting timezone ({tz!r}) is not a known time zone") from exc


def needs_catch_up(
    last_run_period: date | None, now: datetime, tz: str | tzinfo, schedule: str
) -> bool:
    """Whether start-up should run the digest now: today's slot has passed and today has no run."""
    zone = _zone(tz)
    local = now.astimezone(zone) if now.tzinfo else now.replace(tzinfo=zone)
    today = local.date()
    if last_run_period is not None and last_run_period >= today:
        return False
    midnight = datetime.combine(today, time(), zone)
    first: datetime | None = crontab_trigger(schedule, zone).get_next_fire_time(None, midnight)
    return first is not None and first <= local


class MainThreadExecutor(BaseExecutor):  # type: ignore[misc]
    """Runs the scheduler's jobs on the thread that calls :meth:`run_next`, one at a time, in
    the order they fell due; jobs still waiting at shutdown are dropped."""

    def __init__(self) -> None:
        super().__init__()
        self._due: queue.SimpleQueue[tuple[Any, list[datetime]]] = queue.SimpleQueue()

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        self._due.put((job, run_times))

    def run_next(self, timeout: float) -> bool:
        """Run the next job that fell due, waiting up to ``timeout`` seconds for one."""
        try:
            job, run_times = self._due.get(timeout=timeout)
        except queue.Empty:
            return False
        # run_job records a job's exception as an event, as the pool executors do
        events = run_job(job, job._jobstore_alias, run_times, self._logger.name)
        self._run_job_success(job.id, events)
        return True


def _guarded(kind: str, job: Callable[[], object]) -> Callable[[], None]:
    """``job`` with its outcome logged; a failure must not take the scheduler down."""

    def run() -> None:
        with run_context(f"{kind}-{datetime.now().strftime('%Y%m%dT%H%M%S')}"):
            try:
                job()
            except AlreadyRunning as exc:
                log.warning("%s skipped: %s", kind, exc)
            except DigestError as exc:
                log.error("%s failed: %s", kind, exc)
            except Exception:
                log.exception("%s crashed", kind)

    run.__name__ = f"{kind}_job"
    return run


def build_scheduler(
    *,
    schedule: str,
    timezone: str,
    poll_minutes: int,
    run_job: Callable[[], object],
    poll_job: Callable[[], object],
    blocking: bool = False,
    catch_up: bool = False,
    poll_at_start: bool = True,
    digest_trigger: BaseTrigger | None = None,
    poll_trigger: BaseTrigger | None = None,
    now: datetime | None = None,
    executor: BaseExecutor | None = None,
    hours_job: Callable[[], object] | None = None,
) -> BaseScheduler:
    """A scheduler with the digest job on the cron ``schedule`` and the poll every few minutes.

    ``catch_up`` runs the digest once right after start; the triggers can be replaced in tests.
    ``executor`` runs the jobs (default: one worker thread). ``hours_job``: the run for the
    readers whose own hour has come, every quarter hour (it does nothing when none has).
    """
    zone = _zone(timezone)
    trigger = digest_trigger or crontab_trigger(schedule, zone)
    every = poll_trigger or IntervalTrigger(minutes=poll_minutes, timezone=zone)
    # One worker: a poll and a digest run queue behind each other instead of racing for the lock.
    options: dict[str, Any] = {
        "executors": {"default": executor or ThreadPoolExecutor(max_workers=1)},
        "job_defaults": {"coalesce": True, "max_instances": 1},
        "timezone": zone,
    }
    scheduler: BaseScheduler = (
        BlockingScheduler(**options) if blocking else BackgroundScheduler(**options)
    )
    start = now or datetime.now(zone)
    digest_options: dict[str, Any] = {}
    if catch_up:
        digest_options["next_run_time"] = start + CATCH_UP_DELAY
    scheduler.add_job(
        _guarded("digest", run_job),
        trigger,
        id=DIGEST_JOB,
        name="digest run",
        misfire_grace_time=int(DIGEST_MISFIRE_GRACE.total_seconds()),
        **digest_options,
    )
    poll_options: dict[str, Any] = {}
    if poll_at_start:
        poll_options["next_run_time"] = start
    scheduler.add_job(
        _guarded("poll", poll_job),
        every,
        id=POLL_JOB,
        name="poll sources and inbox",
        # A poll later than one interval is pointless: the next one is due anyway.
        misfire_grace_time=max(1, poll_minutes * 60),
        **poll_options,
    )
    if hours_job is not None:
        scheduler.add_job(
            _guarded("hours", hours_job),
            CronTrigger(minute=HOURS_MINUTES, timezone=zone),
            id=HOURS_JOB,
            name="digests of the readers whose hour has come",
            # Late is fine (a reader's date stays due until their next hour), and the next
            # quarter hour's run would do the same work.
            misfire_grace_time=15 * 60,
            # Soon after start-up (behind the poll and a catch-up), not at the next quarter.
            next_run_time=start + 2 * CATCH_UP_DELAY,
        )
    return scheduler


def serve(
    *,
    schedule: str,
    timezone: str,
    poll_minutes: int,
    run_job: Callable[[], object],
    poll_job: Callable[[], object],
    stop_event: threading.Event | None = None,
    last_period: Callable[[], date | None] | None = None,
    services: Sequence[Service] = (),
    install_signals: bool = True,
    now: Callable[[], datetime] | None = None,
    hours_job: Callable[[], object] | None = None,
) -> int:
    """Run the scheduler (and ``services``) until SIGTERM/SIGINT or ``stop_event``; return 0.

    ``last_period`` gives the period of the last successful run, for the start-up catch-up.
    """
    stop = stop_event or threading.Event()
    zone = _zone(timezone)
    started_at = now() if now else datetime.now(zone)
    catch_up = last_period is not None and needs_catch_up(last_period(), started_at, zone, schedule)
    jobs = MainThreadExecutor()
    scheduler = build_scheduler(
        schedule=schedule,
        timezone=timezone,
        poll_minutes=poll_minutes,
        run_job=run_job,
        poll_job=poll_job,
        catch_up=catch_up,
        executor=jobs,
        hours_job=hours_job,
    )
    received: list[str] = []
    previous: dict[int, Any] = {}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        # Only flag here; the logging and the waiting happen in the main loop below.
        received.append(signal.Signals(signum).name)
        stop.set()
        # A second signal gets the default action, so an operator can still force a stop.
        for signum_ in previous:
            signal.signal(signum_, signal.SIG_DFL)

    if install_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    running: list[Service] = []
    scheduler.start()
    try:
        for service in services:
            service.start()
            running.append(service)
        job = scheduler.get_job(DIGEST_JOB)
        log.info(
            "serving",
            extra={
                "schedule": schedule,
                "timezone": timezone,
                "poll_minutes": poll_minutes,
                "next_digest": job.next_run_time.isoformat() if job else None,
                "catch_up": catch_up,
            },
        )
        # The jobs run here, on the main thread; a timed wait between them keeps it
        # responsive to signals on every platform.
        while not stop.is_set():
            jobs.run_next(timeout=0.5)
    finally:
        stop.set()
        reason = received[0] if received else "stop requested"
        log.info("stopping (%s): waiting for the job in flight", reason)
        for service in reversed(running):
            try:
                service.stop()
            except Exception:
                log.exception("a service failed to stop")
        scheduler.shutdown(wait=True)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        log.info("stopped")
    return 0
