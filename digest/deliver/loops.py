"""The event loop a sending pass runs on: uvloop's where it is installed, else asyncio's own.

A pass spends a sixth or so of its CPU in the loop and the transport (waking the
connections' tasks, reading the server's replies, writing each message): uvloop does that
work in C, and took it from 224–231 µs to 175–184 µs a message (``bench/loops.py``;
bench/README.md, "The senders on uvloop"). The web front runs on it already (uvicorn picks
it); it is a dependency wherever it builds (not on Windows), and without it a pass runs on
asyncio's loop as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's new loop, when it can be imported; None: asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``main`` run to its end on a new loop (``loop_factory``'s), closed after, as
    ``asyncio.run`` runs it."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
