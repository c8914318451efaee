"""What every request handler shares: the settings, the store, the signing key, the clock
and the rate limits, kept on the app (``app.state.digest``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine
from starlette.requests import Request

from digest.settings import Settings
from digest.web.security import RateLimit


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class WebState:
    """The site's shared state; one per app (per worker process)."""

    settings: Settings
    engine: Engine
    key: bytes
    now: Callable[[], datetime] = _utc_now
    # Per client address and per email address: subscribe and resend.
    limits: dict[str, RateLimit] = field(default_factory=dict)
    # Anything a route module caches (rendered feeds, the feed-name index): by its own name.
    caches: dict[str, Any] = field(default_factory=dict)

    def limit(self, name: str, count: int, seconds: float) -> RateLimit:
        """The rate limit ``name``, made on first use."""
        if name not in self.limits:
            self.limits[name] = RateLimit(count, seconds)
        return self.limits[name]


def state_of(request: Request) -> WebState:
    """The shared state of the app serving ``request``."""
    state = request.app.state.digest
    assert isinstance(state, WebState)
    return state


def client_address(request: Request) -> str:
    """The client's address (the proxy's X-Forwarded-For is applied by uvicorn when trusted)."""
    return request.client.host if request.client else "unknown"
