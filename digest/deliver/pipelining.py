"""SMTP PIPELINING (RFC 2920) for the transport's hot path: MAIL, RCPT and DATA in one
write, their three replies read together, then the message and its final dot in one more.

aiosmtplib connects, greets, says EHLO, starts TLS and logs in; when the server offers
PIPELINING, the connection is then taken over (``Pipelined``): its transport is given a
protocol of ours (``Replies``) that keeps every reply that arrives, in order.
aiosmtplib's own protocol cannot do this: it keeps a reply only while one is awaited and
drops what arrives early, so through it each command costs a round trip of its own (four a
message, each a system call to write and a wake-up of the event loop to read). A server
that does not offer PIPELINING keeps aiosmtplib's one command at a time.

Failures are what aiosmtplib raises for them (``SMTPSenderRefused``,
``SMTPRecipientRefused``, ``SMTPDataError``, ``SMTPServerDisconnected``,
``SMTPReadTimeoutError``), so the transport judges them as before. Every reply of a group
is read before any is judged, so the connection is left between transactions either way.
"""

from __future__ import annotations

import asyncio
import collections
import re
from typing import cast

import aiosmtplib
from aiosmtplib import SMTPResponse

_UNSAFE = re.compile(rb"[\r\n]")  # as aiosmtplib refuses a command argument with either
_MAX_REPLY = 64 * 1024


class Replies(asyncio.Protocol):
    """The replies on a taken-over connection, every one kept in order until read."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._lines: list[bytes] = []  # the lines of a reply not yet complete
        self._replies: collections.deque[SMTPResponse] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self.lost: BaseException | None = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
            self._line(line)
        if len(self._buffer) > _MAX_REPLY:
            self._lose(aiosmtplib.SMTPResponseException(-1, "Response too long"))
        self._wake()

    def _line(self, line: bytes) -> None:
        try:
            code = int(line[:3])
        except ValueError:
            text = line.decode("utf-8", errors="ignore")
            self._lose(aiosmtplib.SMTPResponseException(-1, f"Malformed SMTP response: {text}"))
            return
        self._lines.append(line[4:].strip(b" \t\r\n"))
        if line[3:4] != b"-":
            message = b"\n".join(self._lines).decode("utf-8", "surrogateescape")
            self._replies.append(SMTPResponse(code, message))
            self._lines = []

    def eof_received(self) -> bool:
        self._lose(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        lost = aiosmtplib.SMTPServerDisconnected("Connection lost")
        lost.__cause__ = exc
        self._lose(lost)

    def _lose(self, exc: BaseException) -> None:
        if self.lost is None:
            self.lost = exc
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def reply(self, timeout: float | None) -> SMTPResponse:
        """The next reply, as soon as it is whole."""
        while not self._replies:
            if self.lost is not None:
                raise self.lost
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(waiter, timeout)
            except TimeoutError:
                raise aiosmtplib.SMTPReadTimeoutError(
                    "Timed out waiting for server response"
                ) from None
        return self._replies.popleft()


class Pipelined:
    """A connection aiosmtplib opened (greeted, EHLO, TLS, login), taken over to send
    each message's commands as one group (the server offers PIPELINING)."""

    def __init__(self, smtp: aiosmtplib.SMTP, timeout: float | None) -> None:
        # Asked what it does, not what class it is: uvloop's transports (``deliver.loops``)
        # are not subclasses of asyncio's.
        transport = cast(asyncio.WriteTransport | None, smtp.transport)
        if transport is None or transport.is_closing():
            raise aiosmtplib.SMTPServerDisconnected("connection lost before taking it over")
        self._extensions = dict(smtp.esmtp_extensions)
        self._timeout = timeout
        self._replies = Replies()
        self._transport = transport
        transport.set_protocol(self._replies)

    @property
    def is_connected(self) -> bool:
        """Whether the connection is still open (and usable)."""
        return self._replies.lost is None and not self._transport.is_closing()

    def supports_extension(self, extension: str, /) -> bool:
        """Whether the server offered ``extension`` in its EHLO reply."""
        return extension.lower() in self._extensions

    def _write(self, data: bytes) -> None:
        if not self.is_connected:
            raise self._replies.lost or aiosmtplib.SMTPServerDisconnected("Connection lost")
        self._transport.write(data)

    async def _reply(self) -> SMTPResponse:
        return await self._replies.reply(self._timeout)

    async def send(
        self, mail_from: bytes, rcpt_to: bytes, options: list[bytes], wire: bytes
    ) -> None:
        """One transaction: ``MAIL FROM:<mail_from> options``, ``RCPT TO:<rcpt_to>`` and
        DATA in one write, then the message (``wire``, in wire form) and its final dot.
        Raises as aiosmtplib does for a refusal; the connection is then left clean."""
        for arg in (mail_from, rcpt_to, *options):
            if _UNSAFE.search(arg):
                raise ValueError("Command arg contains a prohibited control character")
        mail = b" ".join((b"MAIL FROM:" + mail_from, *options))
        self._write(b"%s\r\nRCPT TO:%s\r\nDATA\r\n" % (mail, rcpt_to))
        sender, recipient, start = await self._reply(), await self._reply(), await self._reply()
        if start.code == 354 and (sender.code != 250 or recipient.code not in (250, 251)):
            # A server should refuse DATA after a refused MAIL or RCPT; one that did not
            # gets an empty message it takes for nobody (RFC 2920, section 3.1).
            self._write(b".\r\n")
            await self._reply()
        if sender.code != 250:
            raise aiosmtplib.SMTPSenderRefused(
                sender.code, sender.message, mail_from.decode("utf-8", "replace")
            )
        if recipient.code not in (250, 251):
            raise aiosmtplib.SMTPRecipientRefused(
                recipient.code, recipient.message, rcpt_to.decode("utf-8", "replace")
            )
        if start.code != 354:
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        self._write(wire + b".\r\n")  # one write: a copy costs less than a second send
        done = await self._reply()
        if done.code != 250:
            raise aiosmtplib.SMTPDataError(done.code, done.message)

    async def rset(self) -> SMTPResponse:
        """Clear the transaction (after a refusal)."""
        self._write(b"RSET\r\n")
        reply = await self._reply()
        if reply.code != 250:
            raise aiosmtplib.SMTPResponseException(reply.code, reply.message)
        return reply

    async def quit(self) -> None:
        """Say QUIT and close."""
        try:
            self._write(b"QUIT\r\n")
            await self._reply()
        finally:
            self.close()

    def close(self) -> None:
        """Close the connection at once."""
        if not self._transport.is_closing():
            self._transport.close()
