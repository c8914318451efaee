"""What a command needs from outside: the settings, the store, the clock, the streams;
and what the long-running commands set up in the process (logging, signals).

The rest of digest loads when a command first asks for it, not when this module loads.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from digest.service.listings import Clock
    from digest.settings import Settings

Handler = Callable[[argparse.Namespace, "Context"], int]


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


def log_setup(ctx: Context, verbose: bool) -> None:
    from digest.logs import setup_logging

    setup_logging(ctx.settings.log_format, logging.INFO if verbose else logging.WARNING)


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
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
