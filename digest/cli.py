"""The ``digest`` command: a thin layer of argument parsing over the library.

Exit codes: 0 success, 1 an operational failure (one line on stderr),
2 a usage error, 75 another run holds the lock.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

from digest import __version__
from digest.errors import AlreadyRunning, DigestError, UsageError, WriteError

# The rest of digest loads inside the command that needs it: `digest --version` and `--help`
# start in a few hundredths of a second, `digest status` without numpy or the scheduler.
if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from digest.service.keys import KeyState
    from digest.service.listings import Clock, DumpResult
    from digest.service.subscriptions import Saved
    from digest.settings import Settings
    from digest.settings.options import Option

Handler = Callable[[argparse.Namespace, "Context"], int]
RENDERINGS = (".html", ".txt", ".eml")  # what ``preview --out`` can write


class Context:
    """What a command needs from outside: settings, the store, the clock, the streams."""

    def __init__(self, args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> None:
        self.args = args
        self.stdout = stdout
        self.stderr = stderr
        self._clock: Clock | None = None
        self._settings: Settings | None = None
        self._engine: Engine | None = None

    @property
    def clock(self) -> Clock:
        if self._clock is None:
            from digest.service.listings import Clock

            self._clock = Clock()
        return self._clock

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from digest.settings import load_settings

            self._settings = load_settings(self.args.config)
        return self._settings

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from digest.service.install import open_store

            self._engine = open_store(self.settings.database_url)
        return self._engine

    @property
    def store_exists(self) -> bool:
        from digest.service.install import store_exists

        return store_exists(self.settings.database_url)

    @property
    def reader(self) -> Engine:
        """The store for a command that only reads: one not made yet reads as an empty one
        (in memory), so a look at a fresh installation creates no files."""
        if self._engine is None and not self.store_exists:
            from digest.service.install import open_store

            self._engine = open_store("sqlite://")
        return self.engine

    def now(self) -> datetime:
        return datetime.now(UTC)

    def emit_json(self, data: dict[str, Any]) -> None:
        self.stdout.write(json.dumps(data, indent=2, default=str) + "\n")

    def say(self, line: str) -> None:
        self.stdout.write(line + "\n")

    def progress(self) -> Callable[[str, int], None] | None:
        """A progress line on stderr, only for a person watching a terminal."""
        if getattr(self.args, "json", False) or not self.stderr.isatty():
            return None
        started = datetime.now(UTC)

        def show(path: str, count: int) -> None:
            elapsed = max((datetime.now(UTC) - started).total_seconds(), 1e-6)
            self.stderr.write(f"\r{path}: {count:,} papers ({count / elapsed:,.0f}/s)")
            self.stderr.flush()

        return show

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


def _dump_line(result: DumpResult) -> str:
    if result.status == "failed":
        return f"{result.path}: failed: {result.error}"
    if result.status == "duplicate":
        extra = "".join(f"; {warning}" for warning in result.warnings)
        return f"{result.path}: duplicate (already ingested, nothing changed){extra}"
    extra = f", {result.layout}" if result.layout else ""
    if result.listing_date:
        extra += f", listed {result.listing_date.isoformat()}"
    extra += "".join(f"; {warning}" for warning in result.warnings)
    return (
        f"{result.path}: ok, {result.entries} entries, {result.new} new, {result.seen} seen{extra}"
    )


def report_dumps(ctx: Context, results: list[DumpResult], as_json: bool) -> int:
    """Print the per-dump lines (or JSON); exit 1 when any dump failed."""
    failed = [r for r in results if r.status == "failed"]
    if as_json:
        ctx.emit_json(
            {
                "dumps": [r.as_json() for r in results],
                "new": sum(r.new for r in results),
                "failed": len(failed),
            }
        )
    else:
        if ctx.progress() is not None:
            ctx.stderr.write("\r\033[K")
        for result in results:
            ctx.say(_dump_line(result))
        if not results:
            ctx.say("no dumps to ingest")
        for result in results:
            for warning in result.warnings:
                ctx.stderr.write(f"digest: warning: {result.path}: {warning}\n")
        for result in failed:
            ctx.stderr.write(f"digest: {result.error}\n")
    return 1 if failed else 0


def cmd_init(args: argparse.Namespace, ctx: Context) -> int:
    """Write a commented digest.toml (unless one exists) and make the data folders."""
    from digest.files import write_private
    from digest.service.install import make_install
    from digest.settings import load_settings
    from digest.settings.load import DEFAULT_CONFIG_NAME, default_config_text

    target = Path(args.config or DEFAULT_CONFIG_NAME)
    if target.exists() and not args.force:
        ctx.say(f"{target} exists; kept it (use --force to overwrite)")
    else:
        try:
            # 0600: the file is where an SMTP password or the secret key usually goes
            write_private(target, default_config_text().encode())
        except OSError as exc:
            raise WriteError(f"cannot write {target}: {exc.strerror}") from None
        ctx.say(f"wrote {target}")
    settings = load_settings(target)
    make_install(settings)
    ctx.say(f"data folder {settings.data_dir} ready")
    return 0


def cmd_ingest(args: argparse.Namespace, ctx: Context) -> int:
    """Ingest dump files or folders (or the inbox) and report each dump."""
    from digest.service.listings import ingest_dumps

    if not args.paths and not args.inbox:
        raise UsageError("ingest needs at least one PATH, or --inbox")
    results = ingest_dumps(
        ctx.engine,
        inbox=ctx.settings.inbox if args.inbox else None,
        paths=[Path(p) for p in args.paths],
        clock=ctx.clock,
        progress=ctx.progress(),
        defer_index=args.defer_index,
    )
    return report_dumps(ctx, results, args.json)


def cmd_papers_listings(args: argparse.Namespace, ctx: Context) -> int:
    """The listings ingested, newest first, with the ids ``papers remove`` takes."""
    from digest.service.listings import listing_json, listing_line, recent_listings

    rows = recent_listings(ctx.reader, _given(args.limit, "listings_limit"))
    if args.json:
        ctx.emit_json({"listings": [listing_json(row) for row in rows]})
        return 0
    for row in rows:
        ctx.say(listing_line(row))
    if not rows:
        ctx.say("no listings ingested")
    return 0


def cmd_papers_remove(args: argparse.Namespace, ctx: Context) -> int:
    """Take a listing back: its papers no other listing had are deleted, and kept out of
    every digest not yet sent."""
    from digest.service.listings import removal_lines, take_back

    if not ctx.store_exists:
        raise UsageError("no store yet: nothing was ingested, so there is nothing to remove")
    removal = take_back(ctx.engine, args.listing, ctx.now(), dry_run=args.dry_run)
    if args.json:
        ctx.emit_json({**removal.as_json(), "dry_run": args.dry_run})
    else:
        for line in removal_lines(removal, dry_run=args.dry_run):
            ctx.say(line)
    return 0


def _papers_usage(args: argparse.Namespace, ctx: Context) -> int:
    raise UsageError("papers needs an action: listings or remove (see digest papers --help)")


def _saved_lines(saved: Saved) -> list[str]:
    """What ``subscribe`` did: a new subscriber, or the interests before and after."""
    from digest.service.subscriptions import interests_of, join_interests

    row = saved.row
    interests = interests_of(row)
    if saved.action == "subscribed":
        return [f"subscribed {row.email} ({len(interests)} interests, {row.status})"]
    status = row.status
    if saved.status_before != row.status:
        status = f"was {saved.status_before}, now {row.status}"
    lines = [f"{saved.action} {row.email} ({status})"]
    if interests == saved.interests_before:
        return [*lines, f"  interests unchanged: {join_interests(interests)}"]
    return [
        *lines,
        f"  interests before: {join_interests(saved.interests_before)}",
        f"  interests now:    {join_interests(interests)}",
    ]


def cmd_subscribe(args: argparse.Namespace, ctx: Context) -> int:
    """Add a subscriber (or replace their interests and limits)."""
    from digest.service.subscriptions import operator_patch, save_subscribers, subscriber_json

    given = {  # an option not given takes the subscriber's default (operator_patch)
        name: value
        for name, value in (
            ("max_items", args.max_items),
            ("min_score", args.min_score),
            ("frequency", args.frequency),
            ("digest_hour", args.hour),
        )
        if value is not None
    }
    patch = operator_patch(
        args.email,
        args.interest or [],
        send_empty=args.send_empty,
        **given,
    )  # before the store is opened: a refused command creates nothing
    (saved,) = save_subscribers(ctx.engine, [patch], now=ctx.now(), resubscribe=args.resubscribe)
    if args.json:
        before = None
        if saved.status_before is not None:
            before = {"status": saved.status_before, "interests": saved.interests_before}
        ctx.emit_json(
            {"subscriber": subscriber_json(saved.row), "action": saved.action, "before": before}
        )
    else:
        for line in _saved_lines(saved):
            ctx.say(line)
    return 0


def cmd_unsubscribe(args: argparse.Namespace, ctx: Context) -> int:
    """Stop all mail to a subscriber (their history is kept), by address or by link token."""
    from digest.service.keys import site_keys
    from digest.service.leaving import Copies, take_feed_down
    from digest.service.subscriptions import check_token, set_status

    address = args.email.strip()
    if not address:
        raise UsageError("unsubscribe: EMAIL|TOKEN is empty")
    keys = site_keys(ctx.settings, ctx.engine, ctx.now())
    if "@" not in address:  # the token of an unsubscribe link or mail ("unsubscribe 12.ab34...")
        token = address.split()[-1].rstrip("/").rpartition("/")[2]  # or the link itself
        found = check_token(ctx.engine, keys.verifying, token)
        if found is None:
            shown = address if len(address) <= 40 else address[:39] + "…"
            raise UsageError(
                f"unsubscribe: EMAIL|TOKEN {shown!r} is neither an address"
                " nor a valid unsubscribe token"
            )
        address = found.email
    row = set_status(ctx.engine, address, "unsubscribed")
    take_feed_down(Copies.of(ctx.settings, keys.verifying), row)  # the live one now answers 410
    ctx.say(f"unsubscribed {row.email}")
    return 0


def cmd_feedback(args: argparse.Namespace, ctx: Context) -> int:
    """Record a reader's vote on a paper they were sent: more like this (up), not for me (down)."""
    from digest.service.votes import give_feedback

    given = give_feedback(ctx.engine, args.email, args.paper, args.vote, ctx.now())
    said = "more like this" if given.vote == "up" else "not for me"
    again = " (unchanged)" if given.before == given.vote else ""
    ctx.say(f"{given.subscriber.email}: {said}: {given.paper.title} [{given.paper.key}]{again}")
    return 0


def _key_line(key: KeyState) -> str:
    """One key as ``digest keys list`` shows it."""
    when = f"signs from {key.signs_from:%Y-%m-%d %H:%M:%S} UTC" if key.state == "waits" else ""
    if key.state == "retired" and key.retired_at is not None:
        when = f"since {key.retired_at:%Y-%m-%d %H:%M:%S} UTC"
    made = f"made {key.created_at:%Y-%m-%d %H:%M:%S} UTC"
    return f"{key.id:>4}  {key.fingerprint}  {key.state:<9} {made}  {when}".rstrip()


def cmd_keys(args: argparse.Namespace, ctx: Context) -> int:
    """The site's signing keys: list them, add a new one that signs, retire an old one."""
    from digest.service.keys import KEY_NOTICE, list_keys, retire, rotate_key

    settings, now = ctx.settings, ctx.now()
    if args.action != "retire" and args.id is not None:
        raise UsageError(f"keys {args.action}: takes no ID")
    if args.action == "retire" and args.id is None:
        raise UsageError("keys retire: give the ID of the key to retire (see digest keys list)")
    if args.action == "list":
        shown = list_keys(settings, ctx.engine, now)
    elif args.action == "rotate":
        shown = [rotate_key(settings, ctx.engine, now, at_once=args.at_once)]
    else:
        shown = [retire(settings, ctx.engine, args.id, now)]
    if args.json:
        ctx.emit_json(
            {"keys": [key.as_json() for key in shown], "secret_key_set": bool(settings.secret_key)}
        )
        return 0
    for key in shown:
        ctx.say(_key_line(key))
    if args.action == "rotate" and not args.at_once:
        minutes = int(KEY_NOTICE.total_seconds() // 60)
        ctx.say(
            f"the new key signs in {minutes} minutes, once every host has read it;"
            " the others verify until you retire them"
        )
    if settings.secret_key:
        ctx.say("secret_key is set: it signs new links; the keys here only verify")
    return 0


def cmd_subscribers(args: argparse.Namespace, ctx: Context) -> int:
    """List subscribers, or import/export them as CSV."""
    from digest.files import write_private
    from digest.service.subscriptions import (
        export_csv,
        interests_of,
        join_interests,
        list_subscribers,
        read_csv,
        save_subscribers,
        subscriber_json,
    )

    if args.import_csv:
        try:
            text = Path(args.import_csv).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--import {args.import_csv}: cannot read it ({exc})") from None
        patches = read_csv(text)
        saved = save_subscribers(ctx.engine, patches, now=ctx.now(), resubscribe=args.resubscribe)
        actions = {action: 0 for action in ("subscribed", "updated", "resubscribed")}
        for item in saved:
            actions[item.action] += 1
        done = ", ".join(f"{n} {action}" for action, n in actions.items() if n)
        if args.json:
            ctx.emit_json({"imported": len(saved), "path": args.import_csv, **actions})
        else:
            ctx.say(f"imported {len(saved)} subscribers from {args.import_csv} ({done or 'none'})")
        return 0
    if args.resubscribe:
        raise UsageError("subscribers: --resubscribe goes with --import")
    if args.json and args.export_csv == "-":
        raise UsageError("subscribers: --export - writes CSV to stdout; --json cannot go with it")
    rows = list_subscribers(ctx.reader, status=args.status)
    if args.export_csv:
        target = args.export_csv
        if target == "-":
            export_csv(rows, ctx.stdout)
        else:
            out = io.StringIO(newline="")
            count = export_csv(rows, out)
            try:
                write_private(Path(target), out.getvalue().encode("utf-8"))  # every address
            except OSError as exc:
                raise DigestError(f"--export {target}: cannot write it ({exc})") from None
            if args.json:
                ctx.emit_json({"exported": count, "path": target})
            else:
                ctx.say(f"exported {count} subscribers to {target}")
        return 0
    if args.json:
        ctx.emit_json({"subscribers": [subscriber_json(row) for row in rows]})
        return 0
    for row in rows:
        ctx.say(f"{row.email}\t{row.status}\t{join_interests(interests_of(row))}")
    if not rows:
        ctx.say("no subscribers")
    return 0


def _period(args: argparse.Namespace, ctx: Context) -> date:
    """``--period``, or today in the settings' time zone. A day after tomorrow is refused: no
    paper of it has been seen, and a run for it would take today's papers from its readers."""
    from digest.clock import period_of

    today = period_of(ctx.now(), ctx.settings.tz)
    if not getattr(args, "period", None):
        return today
    try:
        period = date.fromisoformat(args.period)
    except ValueError:
        raise UsageError(f"--period must be YYYY-MM-DD, not {args.period!r}") from None
    if period > today + timedelta(days=1):
        raise UsageError(
            f"--period {period.isoformat()} is in the future (today is {today.isoformat()}"
            f" in {ctx.settings.timezone}); give today or an earlier day"
        )
    return period


def cmd_preview(args: argparse.Namespace, ctx: Context) -> int:
    """Show (or render to a file) what a subscriber's next digest would hold."""
    from digest.files import write_private
    from digest.service.preview import preview_digest

    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() not in RENDERINGS:
        kind = f"a {out.suffix} file" if out.suffix else "a file without an extension"
        raise UsageError(f"--out {args.out}: cannot render {kind}; use .html, .txt or .eml")
    period = _period(args, ctx)
    preview = preview_digest(
        ctx.settings,
        ctx.reader,
        args.email,
        period=period,
        now=ctx.now(),
        whole_store=args.all,
        render=None if out is None else out.suffix.lower(),
    )
    papers = preview.papers
    if out is not None and preview.rendered is not None:
        try:
            write_private(out, preview.rendered)  # 0600: its manage link can export or delete
        except OSError as exc:
            raise DigestError(f"--out {args.out}: cannot write it ({exc})") from None
    if args.json:
        ctx.emit_json({"email": preview.email, "period": period.isoformat(), "papers": papers})
        return 0
    if preview.empty_store:
        ctx.say("the store is empty: no papers to rank yet (ingest a listing first: digest ingest)")
    elif not papers and args.all:
        ctx.say("no paper in the store matches this subscriber's interests")
    elif not papers:
        ctx.say(
            "nothing new for this subscriber yet (papers count once first seen after they joined;"
            " try --all to rank the whole store)"
        )
    for rank, paper in enumerate(papers, 1):
        why = "; ".join(
            f"{hit['interest']} [{', '.join(hit['terms'])}]" for hit in paper["matched"]
        )
        ctx.say(f"{rank:2}. {paper['score']:6.2f}  {paper['title']}\n      why: {why}")
    if args.out:
        ctx.say(f"wrote {args.out}")
    return 0


def cmd_search(args: argparse.Namespace, ctx: Context) -> int:
    """Search the whole store with the interest language."""
    from digest.service.preview import search_papers

    progress = ctx.progress()
    papers = search_papers(
        ctx.reader, args.query, limit=_given(args.limit, "limit"), progress=progress
    )
    if progress is not None:
        ctx.stderr.write("\r\033[K")
    if args.json:
        ctx.emit_json({"query": args.query, "papers": papers})
        return 0
    for rank, paper in enumerate(papers, 1):
        ctx.say(f"{rank:2}. {paper['score']:6.2f}  {paper['title']}")
    if not papers:
        ctx.say("no papers match")
    return 0


def _log_setup(ctx: Context, verbose: bool) -> None:
    from digest.logs import setup_logging

    setup_logging(ctx.settings.log_format, logging.INFO if verbose else logging.WARNING)


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` for the block; a second signal acts as it normally would.

    A run stops between two messages, so ``systemctl stop`` or Ctrl-C never leaves a
    digest half-recorded (and sent twice by the next run).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {
        signum: signal.getsignal(signum) or signal.SIG_DFL
        for signum in (signal.SIGTERM, signal.SIGINT)
    }

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()
        for signum_, handler in previous.items():
            signal.signal(signum_, handler)

    for signum in previous:
        signal.signal(signum, on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def cmd_run(args: argparse.Namespace, ctx: Context) -> int:
    """One full cycle: fetch, ingest the inbox, compose, send, publish feeds."""
    from digest.service.cycle import ensure_sample_subscribers, run_cycle, run_lines
    from digest.service.runlock import hold_run_lock
    from digest.settings.model import link_warnings

    settings = ctx.settings
    _log_setup(ctx, args.verbose)
    warnings = link_warnings(settings)
    for warning in warnings:
        logging.getLogger("digest.run").warning(warning)
    period = _period(args, ctx) if args.period else None
    hours = bool(args.hours)
    if args.dry_run:
        # Writes nothing: no store, key or folder is made; a fresh installation is shown as
        # its first run would see it (the settings file's subscribers in a store in memory).
        if not ctx.store_exists:
            ensure_sample_subscribers(settings, ctx.reader, now=ctx.now())
        report = run_cycle(
            settings, ctx.reader, clock=ctx.clock, period=period, dry_run=True, hours_only=hours
        )
    else:
        ensure_sample_subscribers(settings, ctx.engine, now=ctx.now())
        stop = threading.Event()
        with hold_run_lock(settings, stop=stop) as held, _stop_on_signals(stop):
            report = run_cycle(
                settings,
                ctx.engine,
                clock=ctx.clock,
                period=period,
                stop=stop,
                guard=held.check,
                hours_only=hours,
            )
    if args.json:
        ctx.emit_json({**report.as_json(), "warnings": warnings})
    else:
        for line in run_lines(report, settings):
            ctx.say(line)
    # A bounce or an address set aside concerns one subscriber and is no failed run; these
    # are (one line on stderr, exit 1)
    problems = []
    failed_dumps = sum(1 for d in report.dumps if d.status == "failed")
    if failed_dumps:
        problems.append(f"{failed_dumps} dump(s) failed")
    delivered = report.delivered
    failed = delivered.failed - len(delivered.bounced) - len(delivered.set_aside)
    if failed:
        problems.append(f"{failed} digest(s) failed for good")
    if delivered.gave_up:
        pending = report.figures()["digests"]["pending"]
        problems.append(f"sending stopped: {delivered.gave_up}; {pending} digest(s) still pending")
    if problems:
        ctx.stderr.write(f"digest: {'; '.join(problems)}; see digest status\n")
        return 1
    return 0


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
    _log_setup(ctx, True)
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


def _positive(text: str) -> float:
    """A number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text!r}")
    return value


def cmd_worker(args: argparse.Namespace, ctx: Context) -> int:
    """Send the outbox, and plan on the schedule, until SIGTERM/SIGINT (then exit 0)."""
    from digest.service.worker import run_worker

    settings = ctx.settings
    _log_setup(ctx, True)
    stop = threading.Event()
    with _stop_on_signals(stop):
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
    _log_setup(ctx, True)
    ctx.engine  # noqa: B018 -- creates or migrates the store once, before any worker starts

    def say(line: str) -> None:
        ctx.say(line)
        ctx.stdout.flush()  # under systemd or a pipe, seen now and not at exit

    return run_web(settings, say)


def cmd_status(args: argparse.Namespace, ctx: Context) -> int:
    """Papers, subscribers, runs, outbox, sources, schedule and warnings."""
    from digest.service.status import collect_status, status_lines

    exists = ctx.store_exists
    data = collect_status(ctx.settings, ctx.reader, ctx.now(), store_exists=exists)
    if args.json:
        ctx.emit_json(data)
    else:
        for line in status_lines(data):
            ctx.say(line)
    return 0


def cmd_backup(args: argparse.Namespace, ctx: Context) -> int:
    """Copy the SQLite store to a new file while digest keeps running."""
    from digest.service.install import backup

    source, size = backup(ctx.settings, Path(args.file))
    if args.json:
        ctx.emit_json({"store": source, "backup": args.file, "bytes": size})
    else:
        ctx.say(f"backed up {source} to {args.file} ({size:,} bytes)")
    return 0


def _option(name: str) -> Option:
    """How an argument is checked: as a setting, or a search's or listing's limit."""
    from digest.settings.model import OPTIONS
    from digest.settings.options import Option

    if name == "limit":
        return Option("limit", int, 20, "Most papers a search shows.", low=1, high=1000)
    if name == "listings_limit":
        return Option("limit", int, 50, "Most listings shown.", low=1, high=100_000)
    return next(option for option in OPTIONS if option.name == name)


def _given(value: Any, name: str) -> Any:
    """The argument, or its default from the table (read only now: the parser loads none)."""
    return _option(name).default if value is None else value


def _bounded(name: str) -> Callable[[str], Any]:
    """An argument type that checks a value the way the settings table does."""

    def parse(text: str) -> Any:
        try:
            return _option(name).parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{exc}, not {text!r}") from None

    return parse


class _Choices(Sequence[str]):
    """Choices kept by a lower module, read when a value is checked or help is shown, so
    that building the parser loads nothing of the store."""

    def __init__(self, module: str, name: str) -> None:
        self.module = module
        self.name = name

    def _values(self) -> tuple[str, ...]:
        return tuple(getattr(importlib.import_module(self.module), self.name))

    def __getitem__(self, index: Any) -> Any:
        return self._values()[index]

    def __len__(self) -> int:
        return len(self._values())

    def __contains__(self, value: object) -> bool:
        return value in self._values()


def _subscriber_field(name: str) -> Callable[[str], Any]:
    """An argument type that checks a value by the declaration of a subscriber's field."""

    def parse(text: str) -> Any:
        from digest.service.subscriptions import check_field

        try:
            return check_field(name, text)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(
                f"{str(exc).partition(') ')[2]}, not {text!r}"
            ) from None

    return parse


def _dash_values(argv: Sequence[str]) -> list[str]:
    """``--interest -survey`` as written: argparse takes a value starting with '-' for an
    option and stops, so such a value is attached (``--interest=-survey``)."""
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--":
            out.append(arg)
            out.extend(args)
            break
        if arg == "--interest":
            value = next(args, None)
            if value is not None and value.startswith("-") and not value.startswith("--"):
                out.append(f"{arg}={value}")
                continue
            out.append(arg)
            if value is not None:
                out.append(value)
            continue
        out.append(arg)
    return out


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, kept in step with the README."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="settings file (default: $DIGEST_CONFIG, else ./digest.toml if present)",
    )
    parser = _Parser(
        prog="digest",
        description="Daily digest of new research papers: ingest listings, rank, email, feeds.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"digest {__version__}")
    # every subcommand parser raises UsageError too, so a bad flag is exit code 2, not SystemExit
    commands: Any = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(
            name, parents=[common], help=help_text, description=help_text
        )
        sub.set_defaults(handler=handler)
        return sub

    sub = command("init", cmd_init, "write a commented digest.toml and the data folders")
    sub.add_argument("--force", action="store_true", help="overwrite an existing digest.toml")

    sub = command("ingest", cmd_ingest, "ingest listing dumps (files or folders)")
    sub.add_argument("paths", nargs="*", metavar="PATH", help="dump files or folders of dumps")
    sub.add_argument(
        "--inbox",
        action="store_true",
        help="ingest the inbox, moving files to processed/ or failed/",
    )
    sub.add_argument(
        "--defer-index",
        action="store_true",
        help="leave the search index to the next search or run (fastest for back-fills)",
    )
    sub.add_argument("--json", action="store_true", help="print one JSON object")

    sub = command("papers", _papers_usage, "the listings ingested; take a bad one back")
    papers: Any = sub.add_subparsers(dest="papers_command", metavar="ACTION", parser_class=_Parser)
    for name, handler, help_text in (
        ("listings", cmd_papers_listings, "the listings ingested, newest first, with their ids"),
        (
            "remove",
            cmd_papers_remove,
            "take a listing back: the papers only it brought are deleted and kept out of"
            " digests not yet sent; papers other listings also had stay",
        ),
    ):
        action = papers.add_parser(name, parents=[common], help=help_text, description=help_text)
        action.set_defaults(handler=handler)
        if name == "listings":
            action.add_argument(
                "--limit",
                type=_bounded("listings_limit"),
                help="most listings shown (1 to 100000; 50)",
            )
        else:
            action.add_argument(
                "--listing",
                required=True,
                metavar="FILE|ID",
                help="the listing: its id (digest papers listings), or the file ingested",
            )
            action.add_argument(
                "--dry-run", action="store_true", help="say what would be removed; change nothing"
            )
        action.add_argument("--json", action="store_true", help="print one JSON object")

    sub = command("subscribe", cmd_subscribe, "add a subscriber or change their interests")
    sub.add_argument("email", metavar="EMAIL")
    sub.add_argument(
        "--interest",
        action="append",
        metavar="EXPR",
        help='an interest, e.g. "federated learning", diffus*, -survey, title:llm ^2 (repeatable)',
    )
    sub.add_argument(
        "--max-items",
        type=_subscriber_field("max_items"),
        help="most papers per digest (1 to 1000; 20)",
    )
    sub.add_argument(
        "--min-score",
        type=_subscriber_field("min_score"),
        help="least score a paper needs (0 to 10000; 0)",
    )
    sub.add_argument(
        "--frequency",
        metavar="daily|weekly",
        choices=_Choices("digest.service.subscriptions", "FREQUENCIES"),
        help="how often they get a digest (daily; weekly ones go out on Mondays)",
    )
    sub.add_argument(
        "--hour",
        type=_subscriber_field("digest_hour"),
        metavar="H",
        help="hour of their digest, 0 to 23 in their time zone (kept; default: the site's schedule)",
    )
    sub.add_argument(
        "--send-empty", action="store_true", help='send a "nothing new" mail instead of skipping'
    )
    sub.add_argument(
        "--resubscribe",
        action="store_true",
        help="make an address that unsubscribed or bounced active again (only if they asked)",
    )
    sub.add_argument("--json", action="store_true", help="print one JSON object")

    sub = command("unsubscribe", cmd_unsubscribe, "stop mail to a subscriber")
    sub.add_argument(
        "email", metavar="EMAIL|TOKEN", help="an address, or the token of an unsubscribe link"
    )

    sub = command("feedback", cmd_feedback, "record a reader's vote on a paper: up or down")
    sub.add_argument("email", metavar="EMAIL")
    sub.add_argument("paper", metavar="PAPER", help="the paper's key or arXiv id")
    sub.add_argument(
        "vote",
        metavar="up|down",
        choices=_Choices("digest.service.votes", "VOTES"),
        help="up: more like this; down: not for me",
    )

    sub = command(
        "keys",
        cmd_keys,
        "the site's signing keys: list them, rotate to a new one, retire an old one by ID",
    )
    sub.add_argument("action", choices=("list", "rotate", "retire"))
    sub.add_argument("id", nargs="?", type=int, metavar="ID", help="the key to retire")
    sub.add_argument(
        "--at-once",
        action="store_true",
        help="rotate: the new key signs now, not in 5 minutes (a site of one process)",
    )
    sub.add_argument("--json", action="store_true", help="print one JSON object")

    sub = command("subscribers", cmd_subscribers, "list subscribers; import or export CSV")
    sub.add_argument(
        "--status",
        metavar="STATUS",
        choices=_Choices("digest.service.subscriptions", "STATUSES"),
        help="only the subscribers of this status: %(choices)s",
    )
    sub.add_argument("--json", action="store_true", help="print one JSON object")
    sub.add_argument("--import", dest="import_csv", metavar="CSV", help="add or update from CSV")
    sub.add_argument(
        "--resubscribe",
        action="store_true",
        help="with --import: let addresses that left become active again (only if they asked)",
    )
    sub.add_argument("--export", dest="export_csv", metavar="CSV", help="write CSV ('-': stdout)")

    sub = command("preview", cmd_preview, "show the next digest of a subscriber without sending")
    sub.add_argument("email", metavar="EMAIL")
    sub.add_argument("--out", metavar="FILE", help="also render it: .html, .txt or .eml")
    sub.add_argument(
        "--all", action="store_true", help="rank the newest papers of the whole store instead"
    )
    sub.add_argument("--period", metavar="YYYY-MM-DD")
    sub.add_argument("--json", action="store_true", help="print one JSON object")

    sub = command("search", cmd_search, "search the store with the interest language")
    sub.add_argument("query", metavar="QUERY")
    sub.add_argument(
        "--limit",
        type=_bounded("limit"),
        help="most papers shown (1 to 1000; 20)",
    )
    sub.add_argument("--json", action="store_true", help="print one JSON object")

    sub = command("run", cmd_run, "one full cycle: fetch, ingest inbox, rank, send, feeds")
    when = sub.add_mutually_exclusive_group()
    when.add_argument(
        "--period",
        metavar="YYYY-MM-DD",
        help="the day to send for, to every subscriber (default: today, and each reader"
        " with an hour of their own when it has come, for their own date)",
    )
    when.add_argument(
        "--hours",
        action="store_true",
        help="only the readers whose own hour has come (for a crontab line every quarter"
        " hour; the others wait for the run at the site's time)",
    )
    sub.add_argument(
        "--dry-run", action="store_true", help="compose and render only: send and record nothing"
    )
    sub.add_argument("--verbose", "-v", action="store_true", help="log each step to stderr")
    sub.add_argument("--json", action="store_true", help="print one JSON object")

    sub = command(
        "serve", cmd_serve, "run the web front and the schedule until stopped (SIGTERM/SIGINT)"
    )
    sub.add_argument(
        "--no-web", action="store_true", help="run the schedule only, without the web front"
    )

    sub = command("web", cmd_web, "serve the web front alone until stopped (SIGTERM/SIGINT)")
    sub.add_argument(
        "--host", type=_bounded("web_host"), help="address to listen on (default: web_host)"
    )
    sub.add_argument(
        "--port", type=_bounded("web_port"), help="port to listen on (default: web_port)"
    )

    sub = command("backup", cmd_backup, "copy the SQLite store to a new file, while it runs")
    sub.add_argument("file", metavar="FILE", help="the copy; must not exist yet")
    sub.add_argument("--json", action="store_true", help="print one JSON object")

    sub = command(
        "worker", cmd_worker, "send the outbox, and plan on the schedule, until stopped (SIGTERM)"
    )
    sub.add_argument(
        "--no-plan", action="store_true", help="only send; another host plans (digest run, cron)"
    )
    sub.add_argument(
        "--lease",
        type=_positive,
        default=300,
        metavar="SECONDS",
        help="how long this worker's claims hold without news from it (300)",
    )
    sub.add_argument(
        "--every",
        type=_positive,
        default=30,
        metavar="SECONDS",
        help="how often an idle worker looks at the outbox again (30)",
    )
    sub.add_argument(
        "--batch",
        type=int,
        default=200,
        metavar="N",
        help="digests claimed at a time: smaller spreads a small outbox over more workers (200)",
    )

    sub = command("status", cmd_status, "papers, subscribers, runs, outbox, sources, warnings")
    sub.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None) -> int:
    """Run the command line; returns the exit code."""
    out = stdout or sys.stdout
    parser = build_parser()
    try:
        args = parser.parse_args(_dash_values(sys.argv[1:] if argv is None else argv))
    except UsageError as exc:
        sys.stderr.write(f"{exc}\n")
        return exc.exit_code
    if not hasattr(args, "config"):
        args.config = None
    if args.command is None:
        parser.print_help(out)
        return 2
    ctx = Context(args, out, sys.stderr)
    try:
        if args.command != "init":  # init writes the file it then reads
            ctx.settings  # noqa: B018 -- a bad setting stops every command before it begins
        code: int = args.handler(args, ctx)
        return code
    except DigestError as exc:
        sys.stderr.write(f"digest: {exc}\n")
        if getattr(args, "json", False):  # --json promises one object on stdout, even now
            ctx.emit_json({"error": str(exc), "exit_code": exc.exit_code})
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("digest: interrupted\n")
        return 130
    finally:
        ctx.close()
