"""The installation's own commands: ``init``, ``status``, ``backup`` and ``keys``."""

from __future__ import annotations

import argparse
from pathlib import Path

from digest.cli.context import Context
from digest.cli.output import key_line
from digest.errors import UsageError, WriteError


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
        ctx.say(key_line(key))
    if args.action == "rotate" and not args.at_once:
        minutes = int(KEY_NOTICE.total_seconds() // 60)
        ctx.say(
            f"the new key signs in {minutes} minutes, once every host has read it;"
            " the others verify until you retire them"
        )
    if settings.secret_key:
        ctx.say("secret_key is set: it signs new links; the keys here only verify")
    return 0
