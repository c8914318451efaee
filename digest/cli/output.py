"""What the commands print for a person: a dump's line, what ``subscribe`` did, a key."""

from __future__ import annotations

from typing import TYPE_CHECKING

from digest.cli.context import Context

if TYPE_CHECKING:
    from digest.service.keys import KeyState
    from digest.service.listings import DumpResult
    from digest.service.subscriptions import Saved


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


def saved_lines(saved: Saved) -> list[str]:
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


def key_line(key: KeyState) -> str:
    """One key as ``digest keys list`` shows it."""
    when = f"signs from {key.signs_from:%Y-%m-%d %H:%M:%S} UTC" if key.state == "waits" else ""
    if key.state == "retired" and key.retired_at is not None:
        when = f"since {key.retired_at:%Y-%m-%d %H:%M:%S} UTC"
    made = f"made {key.created_at:%Y-%m-%d %H:%M:%S} UTC"
    return f"{key.id:>4}  {key.fingerprint}  {key.state:<9} {made}  {when}".rstrip()
