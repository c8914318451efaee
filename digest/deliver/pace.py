"""The site's sending pace: ``smtp_rate`` messages a second to the mail server from every
sender of the store together, whatever process or host it runs on.

Turns to send are booked in the store (``store.counters.book_turns``: one atomic upsert
that moves the end of the turns booked so far), so no two senders hold the same moment.
A sender books them in blocks, not one at a time: a booking is a write transaction, one
database round trip and a commit, and one per message would cost as much as the message
at a high rate (at 1,000 a second, a thousand commits a second across the senders).

How big a block is:

- at most the turns of ``BLOCK_SECONDS`` (0.1 s) at the rate, and at least one: at the
  settings' highest rate (10,000 a second) a sender books ten times a second, at 10 a
  second it books each turn (a round trip per message costs nothing there);
- it starts at one turn and doubles each time a block is used up, so a sender that sends
  one message (a confirmation email) books one turn, and a busy one reaches the full
  block within a few bookings;
- a turn not taken within ``BLOCK_SECONDS`` of its moment (the sender's connections were
  all busy: a slow mail server) is dropped, not used late, and the next block is as big
  as what was used of the last. So turns used late never add up to a burst beside the
  other senders' current ones: in any span of time the senders together send at most the
  rate times that span, plus one block.

A block a sender books and does not use (its pass ended) is lost to the others: at most
``BLOCK_SECONDS`` of the site's rate per pass. The wait is this host's clock against the
moments booked, as the senders' leases are: the hosts' clocks are kept in step (NTP).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

from sqlalchemy.engine import Engine

from digest.store.counters import book_turns

BLOCK_SECONDS = 0.1  # the most a block of turns spans, and how late a turn may be taken


class SharedPace:
    """At most ``rate`` sends a second (0: no limit) from every sender of the store
    together; ``wait`` returns when this sender's next turn has come."""

    def __init__(
        self,
        engine: Engine,
        rate: float,
        *,
        name: str = "send",
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.engine = engine
        self.rate = rate
        self.name = name
        self.clock = clock
        self.sleep = sleep
        self.most = max(1, math.floor(rate * BLOCK_SECONDS))
        self.late = max(BLOCK_SECONDS, 1 / rate) if rate > 0 else 0.0
        self.turns: deque[float] = deque()
        self.size = 0  # the turns of the last block booked
        self.used = 0  # how many of them were taken
        self.bookings = 0
        self._lock: asyncio.Lock | None = None

    async def wait(self) -> None:
        """Take the next turn, booking a block first when none is left; sleep until it."""
        if self.rate <= 0:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one booking at a time; the sleep is outside
            now = self.clock()
            while self.turns and self.turns[0] < now - self.late:
                self.turns.popleft()  # too late to take: another sender's turns come now
            if not self.turns:
                await self._book(now)
            at = self.turns.popleft()
            self.used += 1
        if at > now:
            await self.sleep(at - now)

    async def _book(self, now: float) -> None:
        if self.size and self.used >= self.size:
            size = min(self.most, self.size * 2)
        else:
            size = min(self.most, max(1, self.used))
        # in a thread: the event loop (the web front's, or a pass's connections) goes on
        start, end = await asyncio.to_thread(
            book_turns, self.engine, self.rate, size, now, self.name
        )
        self.bookings += 1
        self.size, self.used = size, 0
        step = (end - start) / size
        self.turns.extend(start + step * n for n in range(size))
