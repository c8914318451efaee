"""The ``digest`` command: a thin layer of argument parsing over the library.

Exit codes: 0 success, 1 an operational failure (one line on stderr),
2 a usage error, 75 another run holds the lock.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy.engine import Engine

from digest import __version__
from digest.errors import DigestError, UsageError
from digest.ingest import Clock, DumpResult, ingest_inbox, ingest_paths
from digest.settings import DEFAULT_CONFIG_NAME, Settings, default_config_text, load_settings
from digest.store import open_store

Handler = Callable[[argparse.Namespace, "Context"], int]


class Context:
    """What a command needs from outside: settings, the store, the clock, the streams."""

    def __init__(self, args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> None:
        self.args = args
        self.stdout = stdout
        self.stderr = stderr
        self.clock = Clock()
        self._settings: Settings | None = None
        self._engine: Engine | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.args.config)
        return self._settings

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = open_store(self.settings.database_url)
        return self._engine

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
        return f"{result.path}: duplicate (already ingested, nothing changed)"
    extra = f", {result.layout}" if result.layout else ""
    if result.listing_date:
        extra += f", listed {result.listing_date.isoformat()}"
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
        for result in failed:
            ctx.stderr.write(f"digest: {result.error}\n")
    return 1 if failed else 0


def cmd_init(args: argparse.Namespace, ctx: Context) -> int:
    """Write a commented digest.toml (unless one exists) and make the data folders."""
    target = Path(args.config or DEFAULT_CONFIG_NAME)
    if target.exists() and not args.force:
        ctx.say(f"{target} exists; kept it (use --force to overwrite)")
    else:
        target.write_text(default_config_text(), encoding="utf-8")
        ctx.say(f"wrote {target}")
    settings = load_settings(target)
    for folder in settings.folders():
        folder.mkdir(parents=True, exist_ok=True)
    open_store(settings.database_url).dispose()
    ctx.say(f"data folder {settings.data_dir} ready")
    return 0


def cmd_ingest(args: argparse.Namespace, ctx: Context) -> int:
    """Ingest dump files or folders (or the inbox) and report each dump."""
    if not args.paths and not args.inbox:
        raise UsageError("ingest needs at least one PATH, or --inbox")
    results: list[DumpResult] = []
    if args.inbox:
        results += ingest_inbox(
            ctx.engine, ctx.settings.inbox, clock=ctx.clock, progress=ctx.progress()
        )
    if args.paths:
        results += ingest_paths(
            ctx.engine,
            [Path(p) for p in args.paths],
            clock=ctx.clock,
            progress=ctx.progress(),
            defer_index=args.defer_index,
        )
    return report_dumps(ctx, results, args.json)


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
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
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
    return parser


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None) -> int:
    """Run the command line; returns the exit code."""
    out = stdout or sys.stdout
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
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
        code: int = args.handler(args, ctx)
        return code
    except DigestError as exc:
        sys.stderr.write(f"digest: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("digest: interrupted\n")
        return 130
    finally:
        ctx.close()
