"""The papers in and the digest out: ``ingest``, ``papers``, ``run``, ``preview``, ``search``."""

from __future__ import annotations

import argparse
import logging
import threading
from datetime import date, timedelta
from pathlib import Path

from digest.cli.arguments import given
from digest.cli.context import Context, log_setup, stop_on_signals
from digest.cli.output import report_dumps
from digest.errors import DigestError, UsageError

RENDERINGS = (".html", ".txt", ".eml")  # what ``preview --out`` can write


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

    rows = recent_listings(ctx.reader, given(args.limit, "listings_limit"))
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


def papers_usage(args: argparse.Namespace, ctx: Context) -> int:
    raise UsageError("papers needs an action: listings or remove (see digest papers --help)")


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
        ctx.reader, args.query, limit=given(args.limit, "limit"), progress=progress
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


def cmd_run(args: argparse.Namespace, ctx: Context) -> int:
    """One full cycle: fetch, ingest the inbox, compose, send, publish feeds."""
    from digest.service.cycle import ensure_sample_subscribers, run_cycle, run_lines
    from digest.service.runlock import hold_run_lock
    from digest.settings.model import link_warnings

    settings = ctx.settings
    log_setup(ctx, args.verbose)
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
        with hold_run_lock(settings, stop=stop) as held, stop_on_signals(stop):
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
