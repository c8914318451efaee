"""The readers: ``subscribe``, ``unsubscribe``, ``feedback`` and ``subscribers``."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from digest.cli.context import Context
from digest.cli.output import saved_lines
from digest.errors import DigestError, UsageError


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
        for line in saved_lines(saved):
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
