"""Serving the app with uvicorn: alone (``digest web``) or in a thread beside the scheduler
(``digest serve``)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator

import uvicorn
from sqlalchemy.engine import Engine
from uvicorn.supervisors import Multiprocess

from digest.errors import ConfigError
from digest.settings import Settings
from digest.web.app import create_app

log = logging.getLogger("digest.web")


def _config(settings: Settings, app: object, **extra: object) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
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
        _Foreground(_config(settings, create_app(settings))).run(sockets=[sock])
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
