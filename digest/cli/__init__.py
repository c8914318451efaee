"""The ``digest`` command: a thin layer of argument parsing over the library.

Exit codes: 0 success, 1 an operational failure (one line on stderr),
2 a usage error, 75 another run holds the lock.

``parser`` reads the arguments; each command is a function of ``admin_commands``,
``run_commands``, ``subscriber_commands`` or ``server_commands`` that takes the parsed
arguments and a ``Context`` (``context``), and prints through it (``output``).
The rest of digest loads inside the command that needs it: `digest --version` and `--help`
start in a few hundredths of a second, `digest status` without numpy or the scheduler.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from digest.cli.context import Context
from digest.cli.parser import build_parser, dash_values
from digest.errors import DigestError, UsageError


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None) -> int:
    """Run the command line; returns the exit code."""
    out = stdout or sys.stdout
    parser = build_parser()
    try:
        args = parser.parse_args(dash_values(sys.argv[1:] if argv is None else argv))
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
