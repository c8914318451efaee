"""A web worker's garbage collector, kept off the request path.

A worker keeps what it made for many requests: each paper's feed entries, the feeds'
validators and bodies, the name index; some hundreds of thousands of objects once it has
answered a few thousand private feeds. CPython's collector looks at every one of them in
each full pass (one each time the long-lived objects grew by a quarter), and the worker
answers nothing meanwhile: 0.1 to 2 s on a busy machine, the slowest of its requests.

After a full pass, every object left is in use; those are frozen (``gc.freeze``), so the
next full pass looks only at what became long-lived since. Full passes then cost little,
and come after every ``FULL_AFTER`` passes over the middle generation (CPython's 10 let a
worker making feed entries promote some 130,000 objects between two, 0.1 s of CPU to look
at; after every other one, a fifth of that). A frozen object that is
dropped is still freed at once by its reference count; only one dropped inside a
reference cycle (a closed connection's protocol and transport, say) waits for the pass
over everything that runs every ``WHOLE_EVERY`` seconds, the frozen objects handed back
to the collector first.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

WHOLE_EVERY = 3600.0  # seconds between passes over every object, frozen ones too
FULL_AFTER = 1  # a full pass after more than this many passes over the middle generation


class Collector:
    """Freezes what a full pass found in use; every ``whole_every`` seconds lets the next
    full pass look at everything again."""

    def __init__(
        self, whole_every: float = WHOLE_EVERY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.whole_every = whole_every
        self.clock = clock
        self.last_whole = clock()
        self.installed = False
        self.thresholds = gc.get_threshold()

    def install(self) -> None:
        """Collect and freeze what start-up made (modules, templates, the store's metadata),
        then freeze after every full pass."""
        if self.installed:
            return
        gc.collect()
        gc.freeze()
        self.last_whole = self.clock()
        self.thresholds = gc.get_threshold()
        gc.set_threshold(self.thresholds[0], self.thresholds[1], FULL_AFTER)
        gc.callbacks.append(self._after)
        self.installed = True

    def uninstall(self) -> None:
        """The collector as it was: no callback, nothing frozen."""
        if not self.installed:
            return
        gc.callbacks.remove(self._after)
        gc.set_threshold(*self.thresholds)
        gc.unfreeze()
        self.installed = False

    def _after(self, phase: str, info: dict[str, Any]) -> None:
        if phase != "stop" or info["generation"] != 2:
            return
        if self.clock() - self.last_whole >= self.whole_every:
            self.last_whole = self.clock()
            gc.unfreeze()  # the next full pass looks at every object
        else:
            gc.freeze()


_worker = Collector()


def keep_off_requests() -> Collector:
    """Install the collector of this process (a ``digest web`` worker) once."""
    _worker.install()
    return _worker
