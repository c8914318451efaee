"""The ASGI app: routes of every web module, the error pages, security headers, the body
cap and an access log that never holds a token."""

from __future__ import annotations

import importlib.resources
import logging
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Message, Receive, Scope, Send

from digest.service.install import open_store
from digest.service.keys import site_keys
from digest.settings import Settings, load_settings
from digest.web import browse, collector, health, live, subscription, votes
from digest.web.render import http_error, server_error
from digest.web.security import BodyLimit, HttpMiddleware, SecurityHeaders, redact
from digest.web.state import WebState, utc_now

access_log = logging.getLogger("digest.web.access")


class AccessLog(HttpMiddleware):
    """One line per request: method, path with its token redacted, status, milliseconds."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500

        async def noting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting)
        finally:
            access_log.info(
                "%s %s %d %.1fms",
                scope["method"],
                redact(scope["path"]),
                status,
                (time.perf_counter() - started) * 1000,
            )


def _stylesheet() -> bytes:
    return (importlib.resources.files("digest.templates") / "web" / "web.css").read_bytes()


def _static_css(_request: Request) -> Response:
    return Response(
        _stylesheet(),
        media_type="text/css",
        headers={"cache-control": "public, max-age=86400"},
    )


def create_app(
    settings: Settings,
    engine: Engine | None = None,
    *,
    now: Callable[[], datetime] | None = None,
) -> Starlette:
    """The web front over ``settings``' store (or ``engine``, already open)."""
    store = engine if engine is not None else open_store(settings.database_url)
    clock = now or utc_now
    state = WebState(
        settings=settings,
        engine=store,
        now=clock,
        reload_keys=lambda: site_keys(settings, store, state.now()),
    )
    routes: list[BaseRoute] = [
        Route("/static/web.css", _static_css, methods=["GET", "HEAD"]),
        *browse.routes,
        *subscription.routes,
        *live.routes,
        *health.routes,
        *votes.routes,
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(AccessLog),
            Middleware(SecurityHeaders),
            Middleware(BodyLimit),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.state.digest = state
    return app


def app_from_environment() -> Starlette:
    """The app of ``digest web --workers N``: each worker reads the settings itself
    (``DIGEST_CONFIG`` and ``DIGEST_*``, as the command line did), and keeps the garbage
    collector's full passes short (``digest.web.collector``)."""
    app = create_app(load_settings(None))
    collector.keep_off_requests()
    return app
