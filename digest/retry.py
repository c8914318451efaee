"""Failures worth another try, and how long to wait before it: shared by fetching and sending."""

from __future__ import annotations

import random
from collections.abc import Callable

Backoff = Callable[[int], float]  # retry number (0 for the first retry) → seconds to wait


class TryAgain(Exception):
    """An attempt failed in a way another attempt may not.

    ``kind`` says what failed, in the caller's words (a fetch status; ``lost``,
    ``connect`` or ``recipient`` for mail). ``retry_after`` is the server's own
    wait in seconds, ``http_status`` its answer, ``nbytes`` what arrived before the
    failure. ``stale``: a pooled connection turned out to be dead, which is no fault
    of this attempt.
    """

    def __init__(
        self,
        reason: str,
        *,
        kind: str = "",
        retry_after: float | None = None,
        http_status: int | None = None,
        nbytes: int = 0,
        stale: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        self.retry_after = retry_after
        self.http_status = http_status
        self.nbytes = nbytes
        self.stale = stale


def backoff(base: float, cap: float, *, jitter: bool = False) -> Backoff:
    """Wait ``base * 2**n`` before retry ``n``, at most ``cap``; with ``jitter``, a random
    50–100 % of that, so a pool of senders does not retry in step."""

    def delay(attempt: int) -> float:
        wait = min(cap, base * 2.0**attempt)
        return wait * random.uniform(0.5, 1.0) if jitter else wait

    return delay
