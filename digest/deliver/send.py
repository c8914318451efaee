"""Deliver the outbox: send every pending digest once, recording each as it goes.

Each digest is marked ``sending`` before it is handed to the transport and
``sent`` right after, each in its own short transaction. A run killed between
the two leaves it ``sending``; the next run sends it again under the same
Message-ID, which is the one duplicate a receiver may see and can drop.

What a failure costs depends on whose it is. A 5xx bounces the address. A 4xx
answer about the recipient costs the digest one of its ``MAX_ATTEMPTS``. A fault
nobody is to blame for costs nothing: the transport failing (server down, login
refused, disk full) ends the pass at once with everything still pending, and a
dropped connection leaves the digest pending. An address the transport cannot
carry sets that one digest aside (``failed``, with the reason) and the pass goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine

from digest.deliver.message import DigestView, MessageBuilder, PaperView, prepare
from digest.deliver.transports import AddressError, Transport, TransportError
from digest.deliver.views import Links, paper_view
from digest.errors import DeliveryError
from digest.store import outbox
from digest.store.engine import reading

log = logging.getLogger("digest.deliver")

MAX_ATTEMPTS = 5
# Temporary failures in a row, with no success between, that end a delivery pass: the mail
# server is down or refusing us, and every further digest would only burn an attempt.
GIVE_UP_AFTER = 3


@dataclass
class Outgoing:
    """A digest ready to render and send."""

    digest_id: int
    subscriber_id: int
    email: str
    view: DigestView


@dataclass
class Delivered:
    """What a delivery pass did."""

    sent: int = 0
    failed: int = 0  # bounced and set aside included
    deferred: int = 0
    withdrawn: int = 0  # waiting for someone who left since: never sent
    bounced: list[str] = field(default_factory=list)
    set_aside: list[tuple[str, str]] = field(default_factory=list)  # (address, why)
    sent_to: set[int] = field(default_factory=set)  # subscriber ids: their private feeds changed
    stopped: bool = False
    gave_up: str | None = None  # why the pass stopped early (the mail server is unreachable)
    transport_error: str | None = None  # the transport's own failure, when that was the reason
    last_error: str | None = None  # the last failure that left a digest pending

    def add(self, other: Delivered) -> None:
        """Fold the outcome of a later batch into this one."""
        self.sent += other.sent
        self.failed += other.failed
        self.deferred += other.deferred
        self.withdrawn += other.withdrawn
        self.bounced.extend(other.bounced)
        self.set_aside.extend(other.set_aside)
        self.sent_to |= other.sent_to
        self.stopped = self.stopped or other.stopped
        self.gave_up = self.gave_up or other.gave_up
        self.transport_error = self.transport_error or other.transport_error
        self.last_error = other.last_error or self.last_error


def paper_views(
    conn: Connection, digest_ids: Sequence[int], base_url: str | None = None
) -> dict[int, list[PaperView]]:
    """The papers of each digest, in rank order, as the email shows them (linking to their
    pages at ``base_url``)."""
    return {
        digest_id: [paper_view(i.paper, i.score, json.loads(i.matched), base_url) for i in items]
        for digest_id, items in outbox.items_of(conn, digest_ids).items()
    }


def load_outbox(
    engine: Engine, links: Links, *, after: int = 0, limit: int | None = None
) -> list[Outgoing]:
    """The digests still to send (pending, or caught mid-send by a crash) after digest id
    ``after``, oldest first."""
    rows = outbox.load(engine, after=after, limit=limit)
    with reading(engine) as conn:
        papers = paper_views(conn, [r.digest_id for r in rows], links.base_url)
        conn.rollback()
    outgoing = []
    for row in rows:
        view = links.digest_view(
            to=row.email,
            ident=row.subscriber_id,
            salt=row.token_salt,
            period=row.period,
            papers=papers[row.digest_id],
            message_id=row.message_id,
        )
        outgoing.append(Outgoing(row.digest_id, row.subscriber_id, row.email, view))
    return outgoing


async def deliver(
    engine: Engine,
    outgoing: Sequence[Outgoing],
    builder: MessageBuilder,
    transport: Any,
    *,
    sender_addr: str,
    clock: Callable[[], datetime],
    concurrency: int = 4,
    stop: threading.Event | None = None,
) -> Delivered:
    """Send each digest once, ``concurrency`` at a time; stops taking new ones when ``stop`` is set."""
    result = Delivered()
    prepare(paper for item in outgoing for paper in item.view.papers)
    queue: asyncio.Queue[Outgoing] = asyncio.Queue()
    for item in outgoing:
        queue.put_nowait(item)

    deferred_in_a_row = 0

    def give_up(reason: str) -> None:
        if not result.gave_up:
            result.gave_up = reason
            log.warning("delivery stopped", extra={"reason": reason})

    async def worker() -> None:
        nonlocal deferred_in_a_row
        while not queue.empty():
            if stop is not None and stop.is_set():
                result.stopped = True
                return
            if result.gave_up:
                return
            item = queue.get_nowait()
            try:
                raw = builder.build(item.view, clock())
            except (ValueError, UnicodeError) as exc:  # an address no message can carry
                _set_aside(engine, item, str(exc), result)
                continue
            outbox.mark_sending(engine, item.digest_id)
            try:
                await transport.send(sender_addr, item.email, raw, item.view.message_id)
            except TransportError as exc:
                reason = str(exc)
                outbox.mark_unsent(engine, item.digest_id, reason)
                result.deferred += 1
                result.transport_error = result.transport_error or reason
                result.last_error = reason
                give_up(reason)
                continue
            except AddressError as exc:
                _set_aside(engine, item, str(exc), result)
                continue
            except DeliveryError as exc:
                _failed(engine, item, exc, result)
                if not exc.permanent:
                    deferred_in_a_row += 1
                    if deferred_in_a_row >= GIVE_UP_AFTER:
                        give_up(f"{deferred_in_a_row} temporary failures in a row ({exc})")
                continue
            deferred_in_a_row = 0
            outbox.mark_sent(engine, item.digest_id, clock())
            result.sent += 1
            result.sent_to.add(item.subscriber_id)

    workers = [asyncio.create_task(worker()) for _ in range(max(1, concurrency))]
    await asyncio.gather(*workers)
    return result


async def send_outbox(
    engine: Engine,
    transport: Transport | None,
    builder: MessageBuilder,
    links: Links,
    *,
    open_transport: Callable[[], Transport],
    sender_addr: str,
    concurrency: int,
    clock: Callable[[], datetime],
    stop: threading.Event | None,
    batch: int,
) -> Delivered:
    """Send the whole outbox, ``batch`` digests at a time (memory stays flat), over one
    transport (its connections are reused throughout): ``transport``, or one opened (and
    closed) here only when something is to be sent."""
    total = Delivered(withdrawn=outbox.withdraw_unwanted(engine))
    after = 0
    active: Transport | None = None
    try:
        while waiting := load_outbox(engine, links, after=after, limit=batch):
            after = waiting[-1].digest_id
            if active is None:
                active = open_transport() if transport is None else transport
            part = await deliver(
                engine,
                waiting,
                builder,
                active,
                sender_addr=sender_addr,
                clock=clock,
                concurrency=concurrency,
                stop=stop,
            )
            total.add(part)
            if part.stopped or part.gave_up:
                break
    finally:
        if active is not None and transport is None:
            await active.close()
    return total


def _set_aside(engine: Engine, item: Outgoing, reason: str, result: Delivered) -> None:
    """This digest cannot go to this address by this transport: record why and go on."""
    outbox.mark_failed(engine, item.digest_id, reason)
    result.failed += 1
    result.set_aside.append((item.email, reason))
    log.warning("set aside", extra={"email": item.email, "error": reason})


def _failed(engine: Engine, item: Outgoing, exc: DeliveryError, result: Delivered) -> None:
    """Record a failed send: a bounce ends mail to the address; a 4xx about the recipient
    costs an attempt; a dropped connection costs nothing. The last two wait their turn."""
    error = str(exc)[:500]
    outcome = outbox.record_failure(
        engine,
        item.digest_id,
        item.subscriber_id,
        error=error,
        counts=exc.counts,
        permanent=exc.permanent,
        max_attempts=MAX_ATTEMPTS,
    )
    if outcome == "pending":
        result.deferred += 1
        result.last_error = error
        return
    result.failed += 1
    if outcome == "bounced":
        result.bounced.append(item.email)
        log.warning("bounced", extra={"email": item.email, "error": error})


def record_transport(engine: Engine, label: str, delivered: Delivered, now: datetime) -> None:
    """Remember how the transport fared (see ``outbox.record_transport``)."""
    outbox.record_transport(engine, label, gave_up=delivered.gave_up, sent=delivered.sent, now=now)
