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

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import col

from digest.deliver.message import DigestView, MessageBuilder, PaperView, prepare
from digest.deliver.transports import AddressError, TransportError
from digest.deliver.views import Links
from digest.errors import DeliveryError
from digest.service.preview import paper_view
from digest.store.engine import db_time, reading, transaction
from digest.store.models import Digest, DigestItem, Paper, Subscriber, TransportState

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


def paper_views(conn: sa.Connection, digest_ids: Sequence[int]) -> dict[int, list[PaperView]]:
    """The papers of each digest, in rank order, as the email shows them."""
    views: dict[int, list[PaperView]] = {d: [] for d in digest_ids}
    if not digest_ids:
        return views
    rows = conn.execute(
        sa.select(
            col(DigestItem.digest_id),
            col(DigestItem.score),
            col(DigestItem.matched),
            col(Paper.key),
            col(Paper.title),
            col(Paper.abstract),
            col(Paper.url),
            col(Paper.arxiv_id),
            col(Paper.authors),
        )
        .join(Paper, col(Paper.id) == col(DigestItem.paper_id))
        .where(col(DigestItem.digest_id).in_(digest_ids))
        .order_by(col(DigestItem.digest_id), col(DigestItem.rank))
    ).all()
    for row in rows:
        views[row.digest_id].append(paper_view(row, row.score, json.loads(row.matched)))
    return views


def load_outbox(
    engine: Engine, links: Links, *, after: int = 0, limit: int | None = None
) -> list[Outgoing]:
    """The digests still to send (pending, or caught mid-send by a crash) after digest id
    ``after``, oldest first."""
    with reading(engine) as conn:
        query: Any = (
            sa.select(
                col(Digest.id),
                col(Digest.period),
                col(Digest.message_id),
                col(Subscriber.id).label("sid"),
                col(Subscriber.email),
                col(Subscriber.token_salt),
            )
            .join(Subscriber, col(Subscriber.id) == col(Digest.subscriber_id))
            .where(
                col(Digest.status).in_(("pending", "sending")),
                col(Subscriber.status) == "active",
                col(Digest.id) > after,
            )
            .order_by(col(Digest.id))
        )
        if limit is not None:
            query = query.limit(limit)
        rows = conn.execute(query).all()
        papers = paper_views(conn, [r.id for r in rows])
        conn.rollback()
    outgoing = []
    for row in rows:
        view = links.digest_view(
            to=row.email,
            ident=row.sid,
            salt=row.token_salt,
            period=row.period,
            papers=papers[row.id],
            message_id=row.message_id,
        )
        outgoing.append(Outgoing(row.id, row.sid, row.email, view))
    return outgoing


# Built once: these run for every message, and building a statement costs more than running it.
# An attempt is counted when the server answered about the recipient: here, or in _failed.
_SENDING = sa.update(Digest).where(col(Digest.id) == sa.bindparam("_id")).values(status="sending")
_SENT = (
    sa.update(Digest)
    .where(col(Digest.id) == sa.bindparam("_id"))
    .values(
        status="sent",
        sent_at=sa.bindparam("_at"),
        last_error=None,
        attempts=col(Digest.attempts) + 1,
    )
)
_UNSENT = (  # back to pending at no cost: the failure was nobody's fault
    sa.update(Digest)
    .where(col(Digest.id) == sa.bindparam("_id"))
    .values(status="pending", last_error=sa.bindparam("_error"))
)


def _mark(engine: Engine, statement: Any, **values: Any) -> None:
    with transaction(engine) as conn:
        conn.execute(statement, values)


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
            _mark(engine, _SENDING, _id=item.digest_id)
            try:
                await transport.send(sender_addr, item.email, raw, item.view.message_id)
            except TransportError as exc:
                reason = str(exc)
                _mark(engine, _UNSENT, _id=item.digest_id, _error=reason[:500])
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
            _mark(engine, _SENT, _id=item.digest_id, _at=db_time(clock()))
            result.sent += 1
            result.sent_to.add(item.subscriber_id)

    workers = [asyncio.create_task(worker()) for _ in range(max(1, concurrency))]
    await asyncio.gather(*workers)
    return result


def _set_aside(engine: Engine, item: Outgoing, reason: str, result: Delivered) -> None:
    """This digest cannot go to this address by this transport: record why and go on."""
    with transaction(engine) as conn:
        conn.execute(
            sa.update(Digest)
            .where(col(Digest.id) == item.digest_id)
            .values(status="failed", last_error=reason[:500])
        )
    result.failed += 1
    result.set_aside.append((item.email, reason))
    log.warning("set aside", extra={"email": item.email, "error": reason})


def _failed(engine: Engine, item: Outgoing, exc: DeliveryError, result: Delivered) -> None:
    """Record a failed send: a bounce ends mail to the address; a 4xx about the recipient
    costs an attempt; a dropped connection costs nothing. The last two wait their turn."""
    error = str(exc)[:500]
    with transaction(engine) as conn:
        attempts = conn.execute(
            sa.select(col(Digest.attempts)).where(col(Digest.id) == item.digest_id)
        ).scalar_one()
        if exc.counts:
            attempts += 1
        if exc.permanent:
            conn.execute(
                sa.update(Digest)
                .where(col(Digest.id) == item.digest_id)
                .values(status="failed", attempts=attempts, last_error=error)
            )
            conn.execute(
                sa.update(Subscriber)
                .where(col(Subscriber.id) == item.subscriber_id)
                .values(status="bounced")
            )
            result.failed += 1
            result.bounced.append(item.email)
            log.warning("bounced", extra={"email": item.email, "error": error})
        elif attempts >= MAX_ATTEMPTS:
            conn.execute(
                sa.update(Digest)
                .where(col(Digest.id) == item.digest_id)
                .values(status="failed", attempts=attempts, last_error=error)
            )
            result.failed += 1
        else:
            conn.execute(
                sa.update(Digest)
                .where(col(Digest.id) == item.digest_id)
                .values(status="pending", attempts=attempts, last_error=error)
            )
            result.deferred += 1
            result.last_error = error


def outbox_counts(engine: Engine) -> dict[str, int]:
    """Digests by status."""
    query = sa.select(col(Digest.status), sa.func.count()).group_by(col(Digest.status))
    with reading(engine) as conn:
        rows = conn.execute(query).all()
        conn.rollback()
    counts = dict.fromkeys(("pending", "sending", "sent", "skipped", "failed"), 0)
    counts.update({status: int(n) for status, n in rows})
    return counts


def withdraw_unwanted(engine: Engine) -> int:
    """Digests still waiting for a subscriber who has left since (unsubscribed, bounced, or
    not active for another reason) are never sent: they are marked skipped, with why."""
    left = sa.select(col(Subscriber.id)).where(col(Subscriber.status) != "active")
    waiting = col(Digest.status).in_(("pending", "sending"))
    with transaction(engine) as conn:
        reasons = conn.execute(
            sa.select(col(Subscriber.status), sa.func.count())
            .join(Digest, col(Digest.subscriber_id) == col(Subscriber.id))
            .where(waiting, col(Subscriber.status) != "active")
            .group_by(col(Subscriber.status))
        ).all()
        for status, _ in reasons:
            conn.execute(
                sa.update(Digest)
                .where(
                    waiting,
                    col(Digest.subscriber_id).in_(left.where(col(Subscriber.status) == status)),
                )
                .values(
                    status="skipped",
                    last_error=f"not sent: the subscriber was {status} before it went out",
                )
            )
    return sum(count for _, count in reasons)


def pending_reason(engine: Engine) -> str | None:
    """Why digests are still waiting to be sent: the newest failure among them, or why they
    were not tried; None when nothing waits."""
    with reading(engine) as conn:
        row = conn.execute(
            sa.select(col(Digest.last_error), col(Subscriber.status))
            .join(Subscriber, col(Subscriber.id) == col(Digest.subscriber_id))
            .where(col(Digest.status).in_(("pending", "sending")))
            .order_by(col(Digest.last_error).is_(None), col(Digest.id).desc())
            .limit(1)
        ).first()
        conn.rollback()
    if row is None:
        return None
    if row.last_error:
        return str(row.last_error)
    if row.status != "active":
        return f"the subscriber is {row.status}"
    return "not tried yet"


_TRANSPORT = TransportState.__table__  # type: ignore[attr-defined]


def record_transport(engine: Engine, label: str, delivered: Delivered, now: datetime) -> None:
    """Remember how the transport fared: the error that stopped sending and since when it
    has been failing, or that it worked. A pass that tried nothing changes nothing."""
    now = db_time(now)
    if delivered.gave_up:
        values: dict[str, Any] = {"last_error": delivered.gave_up[:500], "last_failure_at": now}
    elif delivered.sent:
        values = {"last_error": None, "failing_since": None, "last_ok_at": now}
    else:
        return
    with transaction(engine) as conn:
        since = conn.execute(
            sa.select(_TRANSPORT.c.id, _TRANSPORT.c.failing_since).where(
                _TRANSPORT.c.transport == label
            )
        ).first()
        if delivered.gave_up:
            values["failing_since"] = since.failing_since if since and since.failing_since else now
        if since is None:
            conn.execute(sa.insert(_TRANSPORT).values(transport=label, **values))
        else:
            conn.execute(sa.update(_TRANSPORT).where(_TRANSPORT.c.id == since.id).values(**values))


def transport_state(engine: Engine, label: str) -> dict[str, Any] | None:
    """What ``record_transport`` remembers of the transport ``label``."""
    with reading(engine) as conn:
        row = conn.execute(sa.select(_TRANSPORT).where(_TRANSPORT.c.transport == label)).first()
        conn.rollback()
    return None if row is None else dict(row._mapping)
