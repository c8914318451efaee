"""What every request handler shares: the settings, the store, the site's keys, the clock
and the rate limits, kept on the app (``app.state.digest``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine
from starlette.requests import Request

from digest.service.keys import KEYS_REFRESH
from digest.service.wiring import SharedLimit, shared_limit
from digest.settings import Settings
from digest.tokens import SiteKeys

log = logging.getLogger("digest.web")


def utc_now() -> datetime:
    """The wall clock, in UTC (the site's clock unless a test gives its own)."""
    return datetime.now(UTC)


@dataclass
class WebState:
    """The site's shared state; one per app (per worker process)."""

    settings: Settings
    engine: Engine
    # Read on first use (a site whose database is away still answers /healthz), then again
    # every KEYS_REFRESH seconds: another host may have rotated them.
    reload_keys: Callable[[], SiteKeys]
    keys: SiteKeys | None = None
    now: Callable[[], datetime] = utc_now
    keys_read: float = field(default_factory=time.monotonic)
    # The rate limits by name (per client address, per email address), counted in the store.
    limits: dict[str, SharedLimit] = field(default_factory=dict)
    # Anything a route module caches (rendered feeds, the feed-name index): by its own name.
    caches: dict[str, Any] = field(default_factory=dict)

    def site_keys(self) -> SiteKeys:
        """The keys, read again when the last read is older than ``KEYS_REFRESH``."""
        if self.keys is None:
            self.keys, self.keys_read = self.reload_keys(), time.monotonic()
        elif time.monotonic() - self.keys_read >= KEYS_REFRESH:
            self.keys_read = time.monotonic()
            try:
                self.keys = self.reload_keys()
            # whatever keeps the store from answering (it is away, a driver error): the keys
            # already read still sign and verify
            except Exception as exc:
                log.warning("could not read the site's keys again: %s", exc)
        return self.keys

    @property
    def key(self) -> bytes:
        """The key that signs what the site makes now."""
        return self.site_keys().signing

    @property
    def verifying(self) -> tuple[bytes, ...]:
        """Every key a link or form may have been signed with."""
        return self.site_keys().verifying

    def allow(self, name: str, limit: tuple[int, float], key: str) -> bool:
        """Count one event for ``key`` under the rate limit ``name`` (``limit``: events per
        seconds); False when it is over. Blocks on the store: call it from a thread."""
        if name not in self.limits:
            self.limits[name] = shared_limit(self.engine, name, *limit)
        return self.limits[name].allow(key, self.now().timestamp())


def state_of(request: Request) -> WebState:
    """The shared state of the app serving ``request``."""
    state = request.app.state.digest
    assert isinstance(state, WebState)
    return state


def client_address(request: Request) -> str:
    """The client's address (the proxy's X-Forwarded-For is applied by uvicorn when trusted)."""
    return request.client.host if request.client else "unknown"
