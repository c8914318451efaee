"""Transports: .eml files, the recording fake, and SMTP against a real server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import aiosmtplib
import pytest
from aiosmtplib.email import quote_address

from digest.deliver import loops
from digest.deliver.mail_files import eml_name, recipient_tag
from digest.deliver.message import MessageBuilder, Sender
from digest.deliver.pipelining import Pipelined, Replies
from digest.deliver.transports import (
    AddressError,
    ConnectionLost,
    FileTransport,
    RateLimiter,
    RecordingTransport,
    SMTPTransport,
    TransportError,
    _quoted,
    open_transport,
)
from digest.deliver.wire import Wire
from digest.deliver.wire import wire_form as _wire
from digest.errors import ConfigError, DeliveryError
from digest.present.paper import DigestView, PaperView
from digest.retry import backoff
from tests.smtp_server import DROP, SMTPServer, free_port, start_server

SENDER = Sender(
    "Digest <digest@example.org>", "Digest", "papers.example.org", "https://example.org"
)
NOW = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
PAPER = PaperView(
    "arxiv:2411.00001",
    "Sparse attention for long documents",
    "We make attention sparse. Code: https://github.com/example/sparse.",
    None,
    "2411.00001",
    2.5,
    ("attention",),
)


async def outcomes_of(transport: SMTPTransport, count: int) -> list[str]:
    """The first ``count`` test digests sent one after another: "sent", "bounced" (refused
    for good) or "failed" for each."""
    outcomes = []
    for n in range(count):
        to, raw, message_id = message_for(n)
        try:
            await transport.send("digest@example.org", to, raw, message_id)
            outcomes.append("sent")
        except DeliveryError as exc:
            outcomes.append("bounced" if exc.permanent else "failed")
    return outcomes


def message_for(n: int) -> tuple[str, bytes, str]:
    """Recipient, message bytes and Message-ID of the n-th test digest."""
    to = f"reader{n}@example.net"
    message_id = f"<digest-{n}@example.org>"
    view = DigestView(
        to,
        date(2026, 11, 22),
        [PAPER],
        message_id,
        f"https://example.org/unsubscribe/t{n}",
        "unsubscribe@example.org",
        f"https://example.org/feeds/f{n}.rss",
    )
    return to, MessageBuilder(SENDER).build(view, NOW), message_id


class FakeSleep:
    """Records the delays asked for instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


LOOPS = ["asyncio", "uvloop"]


@contextlib.contextmanager
def event_loops(kind: str) -> Iterator[None]:
    """``asyncio.run`` on asyncio's own loops, or on uvloop's (``deliver.loops``: a run's
    senders use it where it is installed) meanwhile."""
    if kind == "asyncio":
        yield
        return
    uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed here")
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(None)


@pytest.fixture(
    params=[(pipelining, loop) for loop in LOOPS for pipelining in (False, True)],
    ids=lambda p: f"{'pipelining' if p[0] else 'one-command-at-a-time'}-{p[1]}",
)
def smtp_server(request: pytest.FixtureRequest) -> Iterator[SMTPServer]:
    """A real SMTP server on loopback, one without PIPELINING (aiosmtplib sends each
    command and waits for its reply) and one offering it (``deliver.pipelining``), each
    with the client on asyncio's loop and on uvloop's: every test here has the same outcome
    from all four. The server runs on a loop of its own, asyncio's, in a thread."""
    pipelining, loop = request.param
    server = start_server(pipelining=pipelining)
    try:
        with event_loops(loop):
            yield server
    finally:
        server.controller.stop()


def smtp(server: SMTPServer, *, retries: int = 3, connections: int = 2) -> SMTPTransport:
    transport = open_transport(
        server.url(), connections=connections, retries=retries, timeout=5, backoff=lambda n: 0.0
    )
    assert isinstance(transport, SMTPTransport)
    return transport


async def pooled_after(transport: SMTPTransport, count: int) -> type:
    """The class of the connection the pool keeps after the first ``count`` test digests
    went out one after another (``Pipelined`` once taken over, else aiosmtplib's own)."""
    async with transport:
        for n in range(count):
            to, raw, message_id = message_for(n)
            await transport.send("digest@example.org", to, raw, message_id)
        return type(transport._idle[0])


async def send_all(transport: SMTPTransport, numbers: range) -> None:
    async with transport:
        for n in numbers:
            to, raw, message_id = message_for(n)
            await transport.send("digest@example.org", to, raw, message_id)


# --- files and the fake ------------------------------------------------------------


def test_file_transport_writes_one_eml_per_message(tmp_path: Path) -> None:
    transport = open_transport(f"file://{tmp_path / 'outbox'}")
    assert isinstance(transport, FileTransport)

    async def go() -> None:
        async with transport:
            for n in range(3):
                to, raw, message_id = message_for(n)
                await transport.send("digest@example.org", to, raw, message_id)

    asyncio.run(go())
    names = sorted(p.name for p in (tmp_path / "outbox").iterdir())
    # each name starts with its recipient's tag, so a reader's mail is found by name
    assert names == sorted(
        f"{recipient_tag(f'reader{n}@example.net')}.digest-{n}@example.org.eml" for n in range(3)
    )
    by_message = {name.split(".", 1)[1]: name for name in names}
    names = [by_message[f"digest-{n}@example.org.eml"] for n in range(3)]
    assert (tmp_path / "outbox" / names[1]).read_bytes() == message_for(1)[1]


def test_eml_names_are_safe_and_distinct() -> None:
    hostile = eml_name("<../../etc/passwd@x>")
    assert "/" not in hostile and not hostile.startswith(".")
    assert eml_name("<a/b@x>") != eml_name("<a:b@x>")
    assert eml_name("<plain.id@example.org>") == "plain.id@example.org.eml"


def test_file_transport_overwrites_the_same_message_id(tmp_path: Path) -> None:
    transport = FileTransport(tmp_path)
    asyncio.run(transport.send("a@x", "b@x", b"first", "<same@x>"))
    asyncio.run(transport.send("a@x", "b@x", b"second", "<same@x>"))
    assert [p.read_bytes() for p in tmp_path.iterdir()] == [b"second"]


def test_recording_transport_records_and_fails_on_request() -> None:
    bounce = DeliveryError("550 no such user", permanent=True)
    fake = RecordingTransport(fail_after=2, errors={"gone@example.net": bounce})

    async def go() -> list[str]:
        outcomes = []
        for to in ["a@x", "gone@example.net", "b@x", "c@x"]:
            try:
                await fake.send("d@x", to, b"m", f"<{to}>")
                outcomes.append("sent")
            except DeliveryError as exc:
                outcomes.append("permanent" if exc.permanent else "failed")
        await fake.close()
        return outcomes

    assert asyncio.run(go()) == ["sent", "permanent", "sent", "failed"]
    assert [m.recipient for m in fake.sent] == ["a@x", "b@x"]
    assert fake.closed


# --- choosing and pacing -------------------------------------------------------------


def test_open_transport_reads_smtp_urls_and_keeps_the_password_private() -> None:
    transport = open_transport("smtp://me%40example.org:p%3Ass%2Fw0rd@mail.example.org")
    assert isinstance(transport, SMTPTransport)
    assert (transport.hostname, transport.port) == ("mail.example.org", 587)
    assert transport._username == "me@example.org"
    assert transport._password == "p:ss/w0rd"
    assert transport._start_tls is True  # credentials over the network: STARTTLS required
    assert "p:ss" not in repr(transport) and "w0rd" not in repr(transport)
    tls = open_transport("smtps://relay.example.org")
    assert isinstance(tls, SMTPTransport)
    assert (tls.port, tls._use_tls) == (465, True)
    plain = open_transport("smtp://127.0.0.1:2525")
    assert isinstance(plain, SMTPTransport)
    assert (plain.port, plain._start_tls) == (2525, None)


@pytest.mark.parametrize("url", ["http://example.org", "smtp://", "smtp://host:notaport"])
def test_open_transport_refuses_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        open_transport(url)


def test_rate_limiter_spaces_sends_without_real_waiting() -> None:
    sleep = FakeSleep()
    limiter = RateLimiter(10, clock=lambda: 100.0, sleep=sleep)

    async def go() -> None:
        for _ in range(4):
            await limiter.wait()

    asyncio.run(go())
    assert sleep.delays == pytest.approx([0.1, 0.2, 0.3])


def test_unlimited_rate_never_sleeps() -> None:
    sleep = FakeSleep()
    asyncio.run(RateLimiter(0, sleep=sleep).wait())
    assert sleep.delays == []


def test_backoff_grows_and_stays_capped() -> None:
    delay = backoff(1.0, 8.0, jitter=True)
    assert 0.5 <= delay(0) <= 1.0
    assert 2.0 <= delay(2) <= 4.0
    assert 4.0 <= delay(10) <= 8.0


# --- SMTP against a real server ----------------------------------------------------------


def test_messages_arrive_and_parse_with_every_header(smtp_server: SMTPServer) -> None:
    asyncio.run(send_all(smtp(smtp_server), range(3)))
    received = smtp_server.handler.received
    assert [r.rcpt_tos for r in received] == [[f"reader{n}@example.net"] for n in range(3)]
    parsed = email.message_from_bytes(received[0].data, policy=email.policy.default)
    assert parsed["Message-ID"] == "<digest-0@example.org>"
    assert parsed["To"] == "reader0@example.net"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "https://example.org/unsubscribe/t0" in parsed["List-Unsubscribe"]
    for name in ("From", "Subject", "Date", "List-Id", "MIME-Version"):
        assert parsed[name], name
    body = parsed.get_body(preferencelist=("html",))
    assert body is not None and "Sparse" in body.get_content()


def test_the_pool_reuses_connections(smtp_server: SMTPServer) -> None:
    asyncio.run(send_all(smtp(smtp_server), range(10)))
    assert len(smtp_server.handler.received) == 10
    assert smtp_server.handler.connections == 1


def test_concurrent_sends_stay_within_the_pool(smtp_server: SMTPServer) -> None:
    transport = smtp(smtp_server, connections=3)

    async def go() -> None:
        async with transport:
            jobs = []
            for n in range(30):
                to, raw, message_id = message_for(n)
                jobs.append(transport.send("digest@example.org", to, raw, message_id))
            await asyncio.gather(*jobs)

    asyncio.run(go())
    assert len(smtp_server.handler.received) == 30
    assert 1 <= smtp_server.handler.connections <= 3


def test_a_4xx_is_retried_and_delivered_once(smtp_server: SMTPServer) -> None:
    smtp_server.handler.data_replies = ["451 4.3.0 try again later"]
    sleep = FakeSleep()
    transport = open_transport(smtp_server.url(), retries=2, backoff=lambda n: 0.25, sleep=sleep)
    assert isinstance(transport, SMTPTransport)
    asyncio.run(send_all(transport, range(1)))
    assert len(smtp_server.handler.received) == 1
    assert smtp_server.handler.data_commands == 2
    assert sleep.delays == [0.25]


def test_a_4xx_that_persists_gives_up_as_temporary(smtp_server: SMTPServer) -> None:
    smtp_server.handler.data_replies = ["452 4.2.2 mailbox full"] * 5
    with pytest.raises(DeliveryError) as failure:
        asyncio.run(send_all(smtp(smtp_server, retries=2), range(1)))
    assert failure.value.permanent is False
    assert "452" in str(failure.value)
    assert smtp_server.handler.data_commands == 3
    assert smtp_server.handler.received == []


def test_a_4xx_to_rcpt_is_temporary(smtp_server: SMTPServer) -> None:
    smtp_server.handler.rcpt_replies = {"reader0@example.net": "451 4.3.0 try again later"}
    with pytest.raises(DeliveryError) as failure:
        asyncio.run(send_all(smtp(smtp_server, retries=2), range(1)))
    assert failure.value.permanent is False
    assert "451" in str(failure.value)
    assert smtp_server.handler.received == []


def test_a_5xx_on_data_is_permanent(smtp_server: SMTPServer) -> None:
    smtp_server.handler.data_replies = ["554 5.7.1 rejected as spam"]
    with pytest.raises(DeliveryError) as failure:
        asyncio.run(send_all(smtp(smtp_server), range(1)))
    assert failure.value.permanent is True
    assert smtp_server.handler.data_commands == 1


def test_an_unknown_recipient_is_permanent_and_the_rest_still_go(smtp_server: SMTPServer) -> None:
    smtp_server.handler.rcpt_replies = {"reader1@example.net": "550 5.1.1 no such user"}
    transport = smtp(smtp_server)

    async def go() -> list[str]:
        async with transport:
            return await outcomes_of(transport, 3)

    assert asyncio.run(go()) == ["sent", "bounced", "sent"]
    assert smtp_server.handler.connections == 1  # the refusal did not cost the connection


def test_a_connection_dropped_during_data_is_retried_on_a_new_one(
    smtp_server: SMTPServer,
) -> None:
    smtp_server.handler.data_replies = [DROP]
    asyncio.run(send_all(smtp(smtp_server), range(2)))
    assert [r.rcpt_tos for r in smtp_server.handler.received] == [
        ["reader0@example.net"],
        ["reader1@example.net"],
    ]
    assert smtp_server.handler.connections == 2


def test_a_pooled_connection_closed_by_the_server_costs_no_retry(
    smtp_server: SMTPServer,
) -> None:
    # The first message opens the connection; the server then drops it at the
    # next MAIL FROM, as a server does with idle clients. Even with no retries
    # allowed, the second message goes out on a fresh connection.
    transport = smtp(smtp_server, retries=0)

    async def go() -> None:
        async with transport:
            to, raw, message_id = message_for(0)
            await transport.send("digest@example.org", to, raw, message_id)
            smtp_server.handler.mail_replies = [DROP]
            to, raw, message_id = message_for(1)
            await transport.send("digest@example.org", to, raw, message_id)

    asyncio.run(go())
    assert len(smtp_server.handler.received) == 2
    assert smtp_server.handler.connections == 2


def test_wire_form_fixes_line_ends_and_stuffs_dots_only_when_needed() -> None:
    message = b"a\r\nb\r\n"
    assert _wire(message) is message  # already in wire form: not copied
    assert _wire(b".top\nmid\r.\r\n..x") == b"..top\r\nmid\r\n..\r\n...x\r\n"
    built = Wire(b"a\r\nb\r\n")  # a builder's message: sent as it is, not scanned
    assert _wire(built) is built


def test_any_message_arrives_intact(smtp_server: SMTPServer) -> None:
    raw = b"Subject: dots\n\n.leading dot\n..two\r\n.\nend"
    transport = smtp(smtp_server)

    async def go() -> None:
        async with transport:
            await transport.send("digest@example.org", "reader@example.net", raw, "<dots@x>")

    asyncio.run(go())
    received = smtp_server.handler.received[0].data
    assert received.replace(b"\r\n", b"\n") == raw.replace(b"\r\n", b"\n") + b"\n"


def test_login_with_percent_encoded_credentials() -> None:
    server = start_server(logins={"me@example.org": "p@ss:w/rd"})
    try:
        url = f"smtp://me%40example.org:p%40ss%3Aw%2Frd@127.0.0.1:{server.port}"
        transport = open_transport(url, retries=0, backoff=lambda n: 0.0)
        assert isinstance(transport, SMTPTransport)
        asyncio.run(send_all(transport, range(1)))
        assert len(server.handler.received) == 1
    finally:
        server.controller.stop()


def test_a_refused_login_is_a_transport_error_without_the_password() -> None:
    server = start_server(logins={"me": "right-secret"})
    try:
        url = f"smtp://me:wrong-secret@127.0.0.1:{server.port}"
        with pytest.raises(TransportError) as failure:
            asyncio.run(send_all(smtp_for(url), range(1)))
        assert failure.value.permanent is False
        assert "wrong-secret" not in str(failure.value)
        assert server.handler.received == []
    finally:
        server.controller.stop()


def test_an_unreachable_server_is_a_transport_error() -> None:
    sleep = FakeSleep()
    port = free_port()
    transport = open_transport(f"smtp://127.0.0.1:{port}", retries=2, sleep=sleep)
    assert isinstance(transport, SMTPTransport)
    with pytest.raises(TransportError) as failure:
        asyncio.run(send_all(transport, range(1)))
    assert failure.value.permanent is False and failure.value.counts is False
    assert str(failure.value) == f"mail server 127.0.0.1:{port} refused the connection (3 tries)"
    assert len(sleep.delays) == 2


def test_a_server_that_never_greets_is_a_transport_error() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        transport = open_transport(
            f"smtp://127.0.0.1:{port}", retries=0, timeout=0.3, backoff=lambda n: 0.0
        )
        assert isinstance(transport, SMTPTransport)
        with pytest.raises(TransportError) as failure:
            asyncio.run(send_all(transport, range(1)))
    assert str(failure.value) == f"mail server 127.0.0.1:{port} did not answer within 0.3s"


def test_a_dropped_connection_costs_the_recipient_nothing(smtp_server: SMTPServer) -> None:
    smtp_server.handler.data_replies = [DROP, DROP]
    with pytest.raises(ConnectionLost) as failure:
        asyncio.run(send_all(smtp(smtp_server, retries=1), range(1)))
    assert failure.value.counts is False and failure.value.permanent is False


def test_a_421_is_the_server_closing_not_an_answer_about_the_recipient(
    smtp_server: SMTPServer,
) -> None:
    smtp_server.handler.rcpt_replies = {"reader0@example.net": "421 4.3.2 shutting down"}
    with pytest.raises(ConnectionLost):
        asyncio.run(send_all(smtp(smtp_server, retries=0), range(1)))
    smtp_server.handler.rcpt_replies = {"reader0@example.net": "450 4.2.1 try later"}
    with pytest.raises(DeliveryError) as failure:
        asyncio.run(send_all(smtp(smtp_server, retries=0), range(1)))
    assert failure.value.counts is True and failure.value.permanent is False


def test_an_international_domain_goes_out_in_idna(smtp_server: SMTPServer) -> None:
    transport = smtp(smtp_server)

    async def go() -> None:
        async with transport:
            await transport.send("digest@example.org", "user@bücher.example", b"x\r\n", "<i@x>")

    asyncio.run(go())
    assert smtp_server.handler.received[0].rcpt_tos == ["user@xn--bcher-kva.example"]


def test_a_non_ascii_mailbox_needs_smtputf8(smtp_server: SMTPServer) -> None:
    async def go(transport: SMTPTransport) -> None:
        async with transport:
            await transport.send("digest@example.org", "üser@example.org", b"x\r\n", "<u@x>")

    with pytest.raises(AddressError, match="needs SMTPUTF8"):
        asyncio.run(go(smtp(smtp_server)))
    assert smtp_server.handler.received == []
    assert smtp_server.handler.connections == 1  # the connection is still good for the rest

    utf8 = start_server(smtputf8=True)
    try:
        asyncio.run(go(smtp(utf8)))
        assert utf8.handler.received[0].rcpt_tos == ["üser@example.org"]
    finally:
        utf8.controller.stop()


def test_an_outbox_folder_that_cannot_be_written_is_a_transport_error(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the outbox folder should be")
    with pytest.raises(TransportError, match="cannot write to the outbox folder"):
        asyncio.run(FileTransport(blocked).send("a@x", "b@x", b"m", "<m@x>"))


def smtp_for(url: str) -> SMTPTransport:
    transport = open_transport(url, retries=1, backoff=lambda n: 0.0)
    assert isinstance(transport, SMTPTransport)
    return transport


@pytest.mark.parametrize(
    "address",
    [
        "reader1@example.net",
        "a.b+c_d@sub.example.org",
        "Paper Digest <digest@papers.example.org>",
        '"odd name"@example.org',
        "x@y",
        "reader@xn--bcher-kva.example",
        " spaced@example.org ",
        "dot.@example.org",
        "<already@quoted.org>",
        "a@b\r\nRCPT TO:<c@d>",
    ],
)
def test_envelope_addresses_are_quoted_as_aiosmtplib_quotes_them(address: str) -> None:
    assert _quoted(address) == quote_address(address)


def test_a_server_offering_pipelining_gets_each_messages_commands_in_one_group(
    smtp_server: SMTPServer,
) -> None:
    transport = smtp(smtp_server)

    pooled = asyncio.run(pooled_after(transport, 3))
    offered = smtp_server.handler.pipelining
    assert pooled is (Pipelined if offered else aiosmtplib.SMTP)
    assert smtp_server.handler.commands == ["MAIL", "RCPT", "DATA"] * 3
    assert [r.rcpt_tos for r in smtp_server.handler.received] == [
        [f"reader{n}@example.net"] for n in range(3)
    ]


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made by the openssl command (skips
    without it)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed here: no certificate to test TLS with")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("pipelining", [False, True], ids=["one-command-at-a-time", "pipelining"])
@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "smtps"])
def test_messages_go_over_tls_on_either_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loop: str, pipelining: bool, implicit: bool
) -> None:
    # A server that offers STARTTLS and takes no mail without it, or one that speaks TLS
    # from the start (smtps://): the transport upgrades the connection or opens it in TLS
    # (trusting the test's certificate), says EHLO over it (the server asks for HELO
    # first), and with PIPELINING takes it over (``Pipelined``); on asyncio's loop and on
    # uvloop's alike.
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = start_server(pipelining=pipelining, tls=context, implicit_tls=implicit)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    url = server.url().replace("smtp://", "smtps://") if implicit else server.url()
    transport = smtp_for(url)

    try:
        with event_loops(loop):
            pooled = asyncio.run(pooled_after(transport, 3))
    finally:
        server.controller.stop()
    assert pooled is (Pipelined if pipelining else aiosmtplib.SMTP)
    assert [(r.rcpt_tos, r.tls) for r in server.handler.received] == [
        ([f"reader{n}@example.net"], True) for n in range(3)
    ]


def test_a_sending_pass_runs_on_uvloop_where_it_is_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed here")

    async def kind() -> type:
        return type(asyncio.get_running_loop())

    assert loops.run(kind()) is uvloop.Loop
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as where it cannot be installed
    assert loops.loop_factory() is None
    assert issubclass(loops.run(kind()), asyncio.BaseEventLoop)


def test_pipelined_replies_are_kept_in_order_however_they_arrive() -> None:
    async def go() -> list[tuple[int, str]]:
        replies = Replies()
        replies.data_received(b"250 2.1.0 OK\r\n250-first\r\n25")
        replies.data_received(b"0 second\r\n354 go on\r\n")
        got = [await replies.reply(1.0) for _ in range(3)]
        replies.connection_lost(None)
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await replies.reply(1.0)
        return [(reply.code, reply.message) for reply in got]

    assert asyncio.run(go()) == [(250, "2.1.0 OK"), (250, "first\nsecond"), (354, "go on")]


def test_a_pipelining_server_taking_data_after_refusing_the_recipient_gets_no_message() -> None:
    """RFC 2920 has a server refuse DATA when no recipient was taken; one that answers 354
    anyway is sent an empty message (the final dot alone), and the refusal stands."""
    bodies: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 lax.example ESMTP\r\n")
        refuse = True
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-lax.example\r\n250 PIPELINING\r\n")
            elif verb == b"RCPT":
                writer.write(b"550 5.1.1 no such user\r\n" if refuse else b"250 OK\r\n")
                refuse = False
            elif verb == b"DATA":
                writer.write(b"354 go ahead\r\n")  # even with no recipient taken
                body = b""
                while (data := await reader.readline()) not in (b".\r\n", b""):
                    body += data
                bodies.append(body)
                writer.write(b"250 OK\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:  # MAIL, RSET
                writer.write(b"250 OK\r\n")
        writer.close()

    async def go() -> list[str]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport = SMTPTransport("127.0.0.1", port, retries=0, local_hostname="t.example")
        async with server, transport:
            return await outcomes_of(transport, 2)

    assert asyncio.run(go()) == ["bounced", "sent"]
    assert bodies[0] == b""  # the refused recipient's: nothing of the message
    assert bodies[1].startswith(b"From: ") and len(bodies) == 2
