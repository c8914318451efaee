"""Sending built messages: to .eml files, over SMTP through a pool, or into a list for tests.

Every transport has the same small surface (:class:`Transport`): ``send`` one
message to one recipient, ``close``, and ``async with``. ``send`` raises a
:class:`DeliveryError` that says whose problem the failure is:

* ``permanent=True``: the server refused the recipient or the message for good
  (a 5xx to RCPT or DATA), so the caller may mark the address bounced;
* a plain temporary ``DeliveryError``: a 4xx answer to this recipient's RCPT or
  DATA, after the retries; the only kind that costs the digest an attempt;
* :class:`ConnectionLost`: the connection broke (or the server closed it) before
  an answer about the recipient;
* :class:`AddressError`: this transport cannot carry the address at all;
* :class:`TransportError`: the transport itself is unusable (no connection can
  be made, the login or our sender is refused, the outbox folder cannot be
  written): no recipient is at fault, so the caller stops instead of trying everyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import itertools
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self
from urllib.parse import unquote, urlsplit

import aiosmtplib
from aiosmtplib.email import quote_address

from digest.deliver.mail_files import mail_file_name, mail_folder
from digest.deliver.pipelining import Pipelined
from digest.deliver.wire import wire_form
from digest.errors import ConfigError, DeliveryError
from digest.files import make_folder, write_private
from digest.retry import Backoff, TryAgain
from digest.retry import backoff as retry_backoff

Sleep = Callable[[float], Awaitable[None]]
# A pooled connection: aiosmtplib's own, or taken over to pipeline (``deliver.pipelining``).
_Session = aiosmtplib.SMTP | Pipelined


class TransportError(DeliveryError):
    """The transport itself failed (cannot connect, login refused, disk full); nobody's fault."""

    counts = False

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=False)


class ConnectionLost(DeliveryError):
    """The connection broke before the server said anything about the recipient."""

    counts = False

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=False)


class AddressError(DeliveryError):
    """The transport cannot carry this address (it needs SMTPUTF8, or has no IDNA form)."""

    counts = False

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=False)


def envelope_address(address: str) -> tuple[str, bool]:
    """The address as an SMTP envelope carries it: the domain in IDNA (ASCII), and whether
    the local part still needs SMTPUTF8. Raises :class:`AddressError` for a domain IDNA
    cannot encode."""
    local, at, domain = address.rpartition("@")
    if not at:
        raise AddressError(f"not an email address: {address!r}")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise AddressError(f"{address}: the domain has no IDNA form ({exc})") from None
    return f"{local}@{domain}", not local.isascii()


class Transport(Protocol):
    """Where built messages go."""

    async def send(self, sender_addr: str, recipient: str, message: bytes, message_id: str) -> None:
        """Hand over one message for one recipient, or raise DeliveryError."""
        ...

    async def close(self) -> None:
        """Release connections; the transport is not used afterwards."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class _Closing:
    """``async with`` support for the transports below."""

    async def close(self) -> None:
        """Nothing to release by default."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


# --- files ----------------------------------------------------------------------


class FileTransport(_Closing):
    """Writes one ``.eml`` file per message into a folder, atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._counter = itertools.count()
        self._made = False

    async def send(self, sender_addr: str, recipient: str, message: bytes, message_id: str) -> None:
        """Write the message to ``<recipient tag>.<message id>.eml`` (temp file, then
        rename): the tag finds a reader's mail when they delete their data."""
        target = self.directory / mail_file_name(recipient, message_id)
        temp = self.directory / f".{target.name}.{os.getpid()}.{next(self._counter)}.tmp"
        try:
            if not self._made:
                make_folder(self.directory)  # whatever the umask: nobody else may add a message
                self._made = True
            write_private(temp, message)  # its links carry the reader's unsubscribe token
            os.replace(temp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
            # A full disk or a folder we may not write is no recipient's fault.
            raise TransportError(
                f"cannot write to the outbox folder {self.directory}: {exc.strerror or exc}"
            ) from None


# --- a fake for tests -------------------------------------------------------------


@dataclass(frozen=True)
class SentMessage:
    """One message a :class:`RecordingTransport` accepted."""

    sender: str
    recipient: str
    message: bytes
    message_id: str


class RecordingTransport(_Closing):
    """Keeps what it is sent; can fail after N messages or for chosen recipients."""

    def __init__(
        self,
        *,
        fail_after: int | None = None,
        error: DeliveryError | None = None,
        errors: Mapping[str, DeliveryError] | None = None,
    ) -> None:
        self.sent: list[SentMessage] = []
        self.closed = False
        self.fail_after = fail_after
        self.error = error or DeliveryError("recording transport told to fail")
        self.errors = dict(errors or {})

    async def send(self, sender_addr: str, recipient: str, message: bytes, message_id: str) -> None:
        """Record the message, or raise the configured error."""
        if recipient in self.errors:
            raise self.errors[recipient]
        if self.fail_after is not None and len(self.sent) >= self.fail_after:
            raise self.error
        self.sent.append(SentMessage(sender_addr, recipient, message, message_id))

    async def close(self) -> None:
        """Note that the transport was closed."""
        self.closed = True


# --- pacing -----------------------------------------------------------------------


class Pace(Protocol):
    """What spaces the sends: this process's ``RateLimiter``, or the pace every sender of
    the site shares (``deliver.pace.SharedPace``)."""

    async def wait(self) -> None:
        """Return when the next send may start."""
        ...


class RateLimiter:
    """Spaces sends to at most ``rate`` a second across every task sharing it (0: no limit)."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0

    async def wait(self) -> None:
        """Return when the next send may start."""
        if not self._interval:
            return
        now = self._clock()
        # Reserve the slot before sleeping so concurrent callers queue up behind it.
        at = max(now, self._next)
        self._next = at + self._interval
        if at > now:
            await self._sleep(at - now)


# --- SMTP ---------------------------------------------------------------------------


# An address that is a plain dot-atom addr-spec, which aiosmtplib's quoting returns as is
# between angle brackets; any other goes through aiosmtplib's own parsing.
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)


@functools.lru_cache(maxsize=64)
def _quoted_sender(address: str) -> str:
    return quote_address(address)


def _quoted(address: str) -> str:
    """``<address>`` as aiosmtplib quotes an envelope address (ValueError for one that is
    not safe on a command line); a sender's (one for a whole run) is parsed once."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return _quoted_sender(address)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _introduce(smtp: aiosmtplib.SMTP) -> None:
    """EHLO on a connection that has not said it since it was greeted (or upgraded); HELO
    when the server does not know EHLO, as aiosmtplib falls back itself."""
    try:
        await smtp.ehlo()
    except aiosmtplib.SMTPHeloError:
        if not smtp.is_connected:
            raise
        await smtp.helo()


class SMTPTransport(_Closing):
    """Sends over a pool of reused SMTP connections, paced, with retries and back-off."""

    def __init__(
        self,
        hostname: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        use_tls: bool = False,
        start_tls: bool | None = None,
        connections: int = 4,
        rate: float = 0.0,
        pace: Pace | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: Backoff | None = None,
        sleep: Sleep = asyncio.sleep,
        local_hostname: str | None = None,
        pipelining: bool = True,
    ) -> None:
        self.hostname = hostname
        self.port = port
        self._username = username
        self._password = password
        self._use_tls = use_tls
        self._start_tls = start_tls
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff or retry_backoff(0.5, 30.0, jitter=True)
        self._sleep = sleep
        self._local_hostname = local_hostname
        self._pipelining = pipelining  # when the server offers it (False: never, to compare)
        # ``pace``, when given, spaces the sends instead of ``rate`` in this process alone
        self._limiter: Pace = pace or RateLimiter(rate, sleep=sleep)
        self._slots = asyncio.Semaphore(connections)
        self._idle: list[_Session] = []

    def __repr__(self) -> str:  # never shows the password
        return f"SMTPTransport({self.hostname}:{self.port}, user={self._username!r})"

    async def _connect(self) -> _Session:
        if self._local_hostname is None:
            # getfqdn can block on DNS; aiosmtplib would otherwise repeat it per connection.
            fqdn = await asyncio.to_thread(socket.getfqdn)
            self._local_hostname = (
                fqdn if fqdn and fqdn.isascii() and " " not in fqdn else "localhost"
            )
        smtp = aiosmtplib.SMTP(
            hostname=self.hostname,
            port=self.port,
            username=self._username,
            password=self._password,
            use_tls=self._use_tls,
            start_tls=self._start_tls,
            timeout=self._timeout,
            local_hostname=self._local_hostname,
        )
        where = self.where
        try:
            await smtp.connect()
            if smtp.is_ehlo_or_helo_needed:
                # Greeted, but not told who we are: after STARTTLS (which makes both sides
                # forget the EHLO before it, RFC 3207), or over TLS from the start with no
                # login. MAIL is sent as a command of its own, which does not say EHLO first,
                # and what the server offers (PIPELINING) is read from the answer.
                await _introduce(smtp)
        except aiosmtplib.SMTPAuthenticationError as exc:
            # A refused login is the operator's to fix; no retry will change it.
            raise TransportError(
                f"mail server {where} refused the login: {exc.code} {exc.message}"
            ) from None
        except aiosmtplib.SMTPNotSupported as exc:
            raise TransportError(f"mail server {where}: {exc}") from None
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code >= 500:
                raise TransportError(
                    f"mail server {where} refused us: {exc.code} {exc.message}"
                ) from None
            raise TryAgain(
                f"mail server {where} turned us away: {exc.code} {exc.message}", kind="connect"
            ) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise TryAgain(self._unreachable(exc), kind="connect") from None
        if self._pipelining and smtp.supports_extension("pipelining"):
            try:
                return Pipelined(smtp, self._timeout)
            except aiosmtplib.SMTPException as exc:
                raise TryAgain(self._unreachable(exc), kind="connect") from None
        return smtp

    @property
    def where(self) -> str:
        """``host:port`` of the server, for messages (never the credentials)."""
        return f"{self.hostname}:{self.port}"

    def _unreachable(self, exc: BaseException) -> str:
        """Why no connection could be made, in an operator's words."""
        where = self.where
        causes = [exc]
        while (cause := causes[-1].__cause__ or causes[-1].__context__) and len(causes) < 5:
            causes.append(cause)
        if any(isinstance(c, ConnectionRefusedError) for c in causes):
            return f"mail server {where} refused the connection"
        if any(isinstance(c, TimeoutError) for c in causes):
            return f"mail server {where} did not answer within {self._timeout:g}s"
        if any(isinstance(c, socket.gaierror) for c in causes):
            return f"mail server {where}: no such host"
        if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
            return f"mail server {where} closed the connection before greeting us"
        detail = next((c.strerror for c in causes if isinstance(c, OSError) and c.strerror), None)
        return f"cannot connect to mail server {where}: {detail or exc}"

    async def _checkout(self) -> tuple[_Session, bool]:
        while self._idle:
            smtp = self._idle.pop()
            if smtp.is_connected:
                return smtp, True
        return await self._connect(), False

    async def _attempt(
        self, sender_addr: str, recipient: str, message: bytes, *, utf8: bool
    ) -> None:
        smtp, reused = await self._checkout()
        keep = True
        try:
            await self._transaction(smtp, sender_addr, recipient, message, utf8=utf8)
        except AddressError:
            raise  # found before MAIL FROM: the connection is still clean
        except aiosmtplib.SMTPSenderRefused as exc:
            keep = await self._reset(smtp, exc.code)
            self._judge(exc.code, f"sender refused: {exc.code} {exc.message}", sender=True)
        except aiosmtplib.SMTPResponseException as exc:
            keep = await self._reset(smtp, exc.code)
            self._judge(exc.code, f"{exc.code} {exc.message}", sender=False)
        except (aiosmtplib.SMTPException, OSError) as exc:
            keep = False
            raise TryAgain(f"connection lost: {exc}", kind="lost", stale=reused) from None
        except BaseException:
            keep = False
            raise
        finally:
            if keep and smtp.is_connected:
                self._idle.append(smtp)
            else:
                smtp.close()

    async def _transaction(
        self,
        smtp: _Session,
        sender_addr: str,
        recipient: str,
        message: bytes,
        *,
        utf8: bool,
    ) -> None:
        if utf8 and not smtp.supports_extension("smtputf8"):
            raise AddressError(f"{recipient}: address needs SMTPUTF8, which {self.where} lacks")
        wire = wire_form(message)
        # SIZE (RFC 1870) lets a server refuse an oversized message before it is sent.
        options = [f"SIZE={len(wire) + 3}"] if smtp.supports_extension("size") else []
        encoding = "ascii"
        if utf8:
            options.append("SMTPUTF8")
            encoding = "utf-8"
        if isinstance(smtp, Pipelined):  # MAIL, RCPT and DATA in one round trip
            await smtp.send(
                _quoted(sender_addr).encode(encoding),
                _quoted(recipient).encode(encoding),
                [option.encode("ascii") for option in options],
                wire,
            )
            return
        # MAIL and RCPT as aiosmtplib's mail() and rcpt() send them, without parsing the
        # same sender's address again for every message (``_quoted``).
        reply = await smtp.execute_command(
            b"MAIL",
            b"FROM:" + _quoted(sender_addr).encode(encoding),
            *(option.encode("ascii") for option in options),
        )
        if reply.code != 250:
            raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, sender_addr)
        reply = await smtp.execute_command(b"RCPT", b"TO:" + _quoted(recipient).encode(encoding))
        if reply.code not in (250, 251):
            raise aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, recipient)
        # Not smtp.data(): it rewrites the whole message twice with regexes (line
        # ends, dot-stuffing), which is most of the CPU a send costs; wire_form does
        # that only for messages that need it.
        start = await smtp.execute_command(b"DATA")
        if start.code != 354:
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        protocol = smtp.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("connection lost before the message")
        # One write, one send: the copy of the message costs less than a second system call.
        protocol.write(wire + b".\r\n")
        reply = await protocol.read_response(timeout=self._timeout)
        if reply.code != 250:
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)

    @staticmethod
    async def _reset(smtp: _Session, code: int) -> bool:
        """After a refusal, clear the transaction; False when the connection is not reusable."""
        if code == 421 or not smtp.is_connected:  # 421: the server is closing it
            return False
        try:
            await smtp.rset()
        except (aiosmtplib.SMTPException, OSError):
            return False
        return True

    def _judge(self, code: int, reason: str, *, sender: bool) -> None:
        if code == 421:  # the server is closing the connection: nothing about the recipient
            raise TryAgain(f"mail server {self.where} is closing: {reason}", kind="lost")
        if 400 <= code < 500:
            raise TryAgain(reason, kind="lost" if sender else "recipient")
        if sender:  # our own address refused: every message would fail, nobody bounced
            raise TransportError(f"mail server {self.where} {reason}")
        raise DeliveryError(reason, permanent=code >= 500)

    async def send(self, sender_addr: str, recipient: str, message: bytes, message_id: str) -> None:
        """Send one message, retrying 4xx replies and dropped connections with back-off."""
        rcpt, utf8 = envelope_address(recipient)
        attempt = 0
        stale_retry_used = False
        while True:
            await self._limiter.wait()
            try:
                async with self._slots:
                    await self._attempt(sender_addr, rcpt, message, utf8=utf8)
                return
            except TryAgain as exc:
                # A pooled connection the server closed while idle is not a failure
                # of this message: try once more at once on a fresh connection.
                if exc.stale and not stale_retry_used:
                    stale_retry_used = True
                    continue
                if attempt >= self._retries:
                    tries = f" ({attempt + 1} tries)" if attempt else ""
                    if exc.kind == "connect":
                        raise TransportError(f"{exc}{tries}") from None
                    if exc.kind == "lost":
                        raise ConnectionLost(f"{message_id}: {exc}{tries}") from None
                    raise DeliveryError(f"{message_id}: {exc}{tries}", permanent=False) from None
                await self._sleep(self._backoff(attempt))
                attempt += 1

    async def close(self) -> None:
        """Say QUIT on every pooled connection."""
        idle, self._idle = self._idle, []
        for smtp in idle:
            try:
                await asyncio.wait_for(smtp.quit(), timeout=min(self._timeout, 5.0))
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                smtp.close()


# --- choosing a transport -------------------------------------------------------------


def transport_label(url: str) -> str:
    """The transport a URL names, without credentials: ``smtp://host:port``, ``file://DIR``."""
    parts = urlsplit(url)
    if parts.scheme.lower() in {"smtp", "smtps"}:
        try:
            port = f":{parts.port}" if parts.port else ""
        except ValueError:
            port = ""
        return f"{parts.scheme.lower()}://{parts.hostname or ''}{port}"
    return url


def open_transport(
    url: str,
    *,
    connections: int = 4,
    rate: float = 0.0,
    pace: Pace | None = None,
    timeout: float = 30.0,
    retries: int = 3,
    backoff: Backoff | None = None,
    sleep: Sleep = asyncio.sleep,
) -> Transport:
    """The transport for ``file://DIR``, ``smtp://[user:pass@]host[:port]`` or ``smtps://…``;
    SMTP paced by ``pace``, or else at ``rate`` a second in this process."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        folder = mail_folder(url)
        if folder is None:
            raise ConfigError("mail_transport: a file:// URL needs a folder")
        return FileTransport(folder)
    if scheme not in {"smtp", "smtps"}:
        raise ConfigError("mail_transport must be a file://, smtp:// or smtps:// URL")
    host = parts.hostname
    if not host:
        raise ConfigError(f"mail_transport: {scheme}:// URL without a host")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"mail_transport: bad port for {host}") from None
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    start_tls: bool | None
    if scheme == "smtps":
        use_tls, start_tls, default_port = True, False, 465
    else:
        use_tls = False
        # Credentials never cross the network in the clear: demand STARTTLS then,
        # except on loopback (a local relay, the tests). Otherwise use it when offered.
        start_tls = True if username and not _is_loopback(host) else None
        default_port = 587 if username else 25
    return SMTPTransport(
        host,
        port or default_port,
        username=username,
        password=password,
        use_tls=use_tls,
        start_tls=start_tls,
        connections=connections,
        rate=rate,
        pace=pace,
        timeout=timeout,
        retries=retries,
        backoff=backoff,
        sleep=sleep,
    )
