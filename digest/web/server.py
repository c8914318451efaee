"""Serving the app with uvicorn: alone (``digest web``) or in a thread beside the scheduler
(``digest serve``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn
from sqlalchemy.engine import Engine
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

from digest.errors import ConfigError
from digest.settings import Settings
from digest.web import collector
from digest.web.app import create_app

log = logging.getLogger("digest.web")


class _Config(uvicorn.Config):
    """uvicorn's settings, and how long a client has to send a request's headers."""

    header_timeout = 10.0


class HeaderDeadline(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 connection, closed when a request's headers do not arrive in time.

    uvicorn (0.55) has no such limit: a connection that sends nothing, or half a request
    line, is kept for good, so a few hundred slow clients hold every file descriptor. The
    clock starts when the connection is made and again when the first byte of a later
    request arrives; headers complete stop it. Idle time between requests is uvicorn's
    keep-alive timeout.
    """

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.header_timeout = getattr(config, "header_timeout", _Config.header_timeout)
        self.header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_timer()

    def data_received(self, data: bytes) -> None:
        if self.header_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._start_header_timer()  # the first bytes of the next request
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._stop_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _start_header_timer(self) -> None:
        self.header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _stop_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _headers_too_slow(self) -> None:
        self.header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def _config(settings: Settings, app: object, **extra: object) -> uvicorn.Config:
    config = _Config(
        app,  # type: ignore[arg-type]
        http=HeaderDeadline,
        host=settings.web_host,
        port=settings.web_port,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        # Our own access log (digest.web.access) redacts tokens; uvicorn's would not.
        access_log=False,
        log_config=None,
        lifespan="off",
        server_header=False,
        **extra,  # type: ignore[arg-type]
    )
    config.header_timeout = settings.web_header_timeout
    return config


def listen(settings: Settings) -> socket.socket:
    """The listening socket of the web front, or a ConfigError naming the address.

    Made with the TCP protocol number: asyncio turns Nagle's algorithm off only on sockets
    that say they are TCP, and with it on, a small response written in two parts waits
    for the client's delayed ACK (40 ms a request).
    """
    family = socket.AF_INET6 if ":" in settings.web_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.web_host, settings.web_port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"the web front cannot listen on {settings.web_host}:{settings.web_port}:"
            f" {exc.strerror or exc} (settings web_host, web_port)"
        ) from None
    sock.set_inheritable(True)
    return sock


class _Foreground(uvicorn.Server):
    """uvicorn in the foreground, where SIGTERM/SIGINT is an orderly stop with exit code 0
    (uvicorn itself raises the signal again once it has shut down)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {
            sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class WebServer:
    """The web front in a thread of this process; a ``Service`` of ``digest serve``."""

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.server = uvicorn.Server(_config(settings, create_app(settings, engine)))
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        sock = listen(self.settings)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, name="web", daemon=True
        )
        self.thread.start()
        log.info(
            "web front listening",
            extra={"host": self.settings.web_host, "port": self.settings.web_port},
        )

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=15)


def listening_url(settings: Settings) -> str:
    """Where the web front answers, as a browser is given it."""
    host = f"[{settings.web_host}]" if ":" in settings.web_host else settings.web_host
    return f"http://{host}:{settings.web_port}"


def run_web(settings: Settings, say: Callable[[str], None] = print) -> int:
    """Serve the web front in the foreground until SIGTERM/SIGINT (``digest web``); ``say``
    tells where, once the socket is bound."""
    if settings.web_workers == 1:
        sock = listen(settings)
        say(f"listening on {listening_url(settings)}")
        app = create_app(settings)
        collector.keep_off_requests()  # this process only serves: see digest.web.collector
        _Foreground(_config(settings, app)).run(sockets=[sock])
        return 0
    if settings.config_path is not None:
        os.environ["DIGEST_CONFIG"] = str(settings.config_path)
    config = _config(
        settings,
        "digest.web.app:app_from_environment",
        factory=True,
        workers=settings.web_workers,
    )
    # The workers share our socket (uvicorn's own would leave Nagle's algorithm on).
    sock = listen(settings)
    say(f"listening on {listening_url(settings)} ({settings.web_workers} workers)")
    Multiprocess(config, sockets=[sock]).run()
    return 0
