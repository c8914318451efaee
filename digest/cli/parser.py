"""The whole command line as argparse reads it, kept in step with the README: each
command, its arguments and the function that runs it."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from digest import __version__
from digest.cli.admin_commands import cmd_backup, cmd_init, cmd_keys, cmd_status
from digest.cli.arguments import Choices, bounded, positive, subscriber_field
from digest.cli.context import Handler
from digest.cli.run_commands import (
    cmd_ingest,
    cmd_papers_listings,
    cmd_papers_remove,
    cmd_preview,
    cmd_run,
    cmd_search,
    papers_usage,
)
from digest.cli.server_commands import cmd_serve, cmd_web, cmd_worker
from digest.cli.subscriber_commands import (
    cmd_feedback,
    cmd_subscribe,
    cmd_subscribers,
    cmd_unsubscribe,
)
from digest.errors import UsageError


def dash_values(argv: Sequence[str]) -> list[str]:
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

    sub = command("papers", papers_usage, "the listings ingested; take a bad one back")
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
                type=bounded("listings_limit"),
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
        type=subscriber_field("max_items"),
        help="most papers per digest (1 to 1000; 20)",
    )
    sub.add_argument(
        "--min-score",
        type=subscriber_field("min_score"),
        help="least score a paper needs (0 to 10000; 0)",
    )
    sub.add_argument(
        "--frequency",
        metavar="daily|weekly",
        choices=Choices("digest.service.subscriptions", "FREQUENCIES"),
        help="how often they get a digest (daily; weekly ones go out on Mondays)",
    )
    sub.add_argument(
        "--hour",
        type=subscriber_field("digest_hour"),
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
        choices=Choices("digest.service.votes", "VOTES"),
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
        choices=Choices("digest.service.subscriptions", "STATUSES"),
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
        type=bounded("limit"),
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
        "--host", type=bounded("web_host"), help="address to listen on (default: web_host)"
    )
    sub.add_argument(
        "--port", type=bounded("web_port"), help="port to listen on (default: web_port)"
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
        type=positive,
        default=300,
        metavar="SECONDS",
        help="how long this worker's claims hold without news from it (300)",
    )
    sub.add_argument(
        "--every",
        type=positive,
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
