"""A real SMTP server on loopback (aiosmtpd) whose replies a test can script.

The handler can answer the next DATA commands with a 4xx or 5xx (or every one:
an outage), drop the connection in the middle of DATA or right after MAIL FROM,
refuse chosen recipients (or every one), and it counts the connections made to it, so tests can see retries
and connection reuse as the server saw them. It can also be slow: hold every DATA
reply for ``data_delay`` seconds, or until ``data_gate`` is set, so a test can act
while a message is in flight.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

DROP = "drop"  # a scripted reply meaning: close the connection instead of answering
ACCEPT = "accept"  # a scripted reply meaning: take the message as usual
GATE_TIMEOUT = 20.0  # a closed gate opens by itself after this, so a failing test cannot hang


@dataclass
class Received:
    """One message the server accepted, and when (``time.monotonic``)."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    at: float = field(default_factory=time.monotonic)
    tls: bool = False  # came over TLS (STARTTLS, or from the connection's start)


@dataclass
class ScriptedHandler:
    """aiosmtpd handler: accepts mail unless told otherwise."""

    received: list[Received] = field(default_factory=list)
    data_replies: list[str] = field(default_factory=list)  # used up one per DATA
    mail_replies: list[str] = field(default_factory=list)  # used up one per MAIL FROM
    rcpt_replies: dict[str, str] = field(default_factory=dict)  # address -> reply, every time
    every_rcpt: str | None = None  # when set, the reply to every RCPT (a server-wide 4xx)
    every_data: str | None = None  # when set, the reply to every DATA, after data_replies
    connections: int = 0
    data_commands: int = 0
    data_delay: float = 0.0  # seconds each DATA reply waits
    data_gate: threading.Event | None = None  # when set to a cleared event, DATA waits for it
    keep_bodies: bool = True  # False: keep only the headers of what is received (long runs)
    pipelining: bool = False  # offer PIPELINING (RFC 2920); aiosmtpd reads commands in order
    commands: list[str] = field(default_factory=list)  # MAIL, RCPT, DATA as they came
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: Any
    ) -> list[str]:
        session.host_name = hostname
        if not self.pipelining:
            return list(responses)
        return [responses[0], "250-PIPELINING", *responses[1:]]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        self.commands.append("MAIL")
        if self.mail_replies:
            reply = self.mail_replies.pop(0)
            if reply == DROP:
                assert server.transport is not None
                server.transport.close()
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        self.commands.append("RCPT")
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        if self.every_rcpt is not None:
            return self.every_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.commands.append("DATA")
        with self.lock:
            self.data_commands += 1
        if self.data_gate is not None:
            await asyncio.to_thread(self.data_gate.wait, GATE_TIMEOUT)
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        reply = self.data_replies.pop(0) if self.data_replies else (self.every_data or ACCEPT)
        if reply == DROP:
            assert server.transport is not None
            server.transport.close()
        if reply != ACCEPT:
            return reply
        data = envelope.original_content or b""
        if not self.keep_bodies:
            data = data.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
        with self.lock:
            self.received.append(
                Received(
                    envelope.mail_from or "",
                    list(envelope.rcpt_tos),
                    data,
                    tls=session.ssl is not None
                    or (
                        server.transport is not None
                        and server.transport.get_extra_info("ssl_object") is not None
                    ),
                )
            )
        return "250 2.0.0 queued"


class _CountingSMTP(SMTP):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        handler: ScriptedHandler = self.event_handler
        with handler.lock:
            handler.connections += 1
        super().connection_made(transport)


class _Controller(Controller):
    def factory(self) -> SMTP:
        return _CountingSMTP(self.handler, **self.SMTP_kwargs)


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class SMTPServer:
    """A running server: where it listens and its handler."""

    host: str
    port: int
    handler: ScriptedHandler
    controller: Controller
    logins: dict[str, str] = field(default_factory=dict)

    def url(self, user: str = "", password: str = "") -> str:
        """``smtp://`` URL of this server (credentials as given, already encoded)."""
        auth = f"{user}:{password}@" if user else ""
        return f"smtp://{auth}{self.host}:{self.port}"


def start_server(
    logins: dict[str, str] | None = None,
    *,
    smtputf8: bool = False,
    pipelining: bool = False,
    tls: ssl.SSLContext | None = None,
    implicit_tls: bool = False,
) -> SMTPServer:
    """Start a server on a free loopback port; with ``logins``, AUTH is offered and checked;
    with ``smtputf8``, SMTPUTF8 is offered; with ``pipelining``, PIPELINING is; with ``tls``,
    STARTTLS is offered and required before MAIL, or with ``implicit_tls`` every connection
    is TLS from its start (an ``smtps://`` server)."""
    handler = ScriptedHandler(pipelining=pipelining)
    accounts = dict(logins or {})

    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (
            accounts.get(auth_data.login.decode()) == auth_data.password.decode()
        )
        return AuthResult(success=ok, handled=False)  # unhandled: aiosmtpd replies 535 itself

    kwargs: dict[str, Any] = {"enable_SMTPUTF8": smtputf8}
    if logins is not None:
        kwargs.update(authenticator=authenticate, auth_require_tls=False)
    options: dict[str, Any] = {}
    if tls is not None and implicit_tls:
        options["ssl_context"] = tls
    elif tls is not None:
        kwargs.update(tls_context=tls, require_starttls=True)
    controller = _Controller(handler, hostname="127.0.0.1", port=free_port(), **options, **kwargs)
    controller.start()
    handler.connections = 0  # start() makes one connection of its own to see the server is up
    return SMTPServer("127.0.0.1", controller.port, handler, controller, accounts)
