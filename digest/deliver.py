"""Deliver the outbox: send every pending digest once, recording each as it goes.

Each digest is marked ``sending`` (attempt counted) before it is handed to the
transport and ``sent`` right after, each in its own short transaction. A run
killed between the two leaves it ``sending``; the next run sends it again
under the same Message-ID, which is the one duplicate a receiver may see and
can drop. A 5xx bounces the address; other failures stay pending for the next
run until ``MAX_ATTEMPTS``.
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

from digest.emails import DigestView, MessageBuilder, PaperView, prepare
from digest.errors import DeliveryError
from digest.links import Links
from digest.models import Digest, DigestItem, Paper, Subscriber
from digest.preview import paper_view
from digest.store import db_time, reading, transaction

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
    failed: int = 0
    deferred: int = 0
    bounced: list[str] = field(default_factory=list)
    sent_to: set[int] = field(default_factory=set)  # subscriber ids: their private feeds changed
    stopped: bool = False
    gave_up: str | None = None  # why the pass stopped early (the mail server is unreachable)

    def add(self, other: Delivered) -> None:
        """Fold the outcome of a later batch into this one."""
        self.sent += other.sent
        self.failed += other.failed
        self.deferred += other.deferred
        self.bounced.extend(other.bounced)
        self.sent_to |= other.sent_to
        self.stopped = self.stopped or other.stopped
        self.gave_up = self.gave_up or other.gave_up


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


# Built once: these two run for every message, and building a statement costs more than running it.
_SENDING = (
    sa.update(Digest)
    .where(col(Digest.id) == sa.bindparam("_id"))
    .values(status="sending", attempts=col(Digest.attempts) + 1)
)
_SENT = (
    sa.update(Digest)
    .where(col(Digest.id) == sa.bindparam("_id"))
    .values(status="sent", sent_at=sa.bindparam("_at"), last_error=None)
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

    async def worker() -> None:
        nonlocal deferred_in_a_row
        while not queue.empty():
            if stop is not None and stop.is_set():
                result.stopped = True
                return
            if result.gave_up:
                return
            item = queue.get_nowait()
            now = clock()
            raw = builder.build(item.view, now)
            _mark(engine, _SENDING, _id=item.digest_id)
            try:
                await transport.send(sender_addr, item.email, raw, item.view.message_id)
            except DeliveryError as exc:
                _failed(engine, item, exc, result)
                if not exc.permanent:
                    deferred_in_a_row += 1
                    if deferred_in_a_row >= GIVE_UP_AFTER and not result.gave_up:
                        result.gave_up = f"{deferred_in_a_row} temporary failures in a row ({exc})"
                        log.warning("delivery stopped", extra={"reason": result.gave_up})
                continue
            deferred_in_a_row = 0
            _mark(engine, _SENT, _id=item.digest_id, _at=db_time(clock()))
            result.sent += 1
            result.sent_to.add(item.subscriber_id)

    workers = [asyncio.create_task(worker()) for _ in range(max(1, concurrency))]
    await asyncio.gather(*workers)
    return result


def _failed(engine: Engine, item: Outgoing, exc: DeliveryError, result: Delivered) -> None:
    """Record a failed send: a bounce ends mail to the address; anything else waits its turn."""
    error = str(exc)[:500]
    with transaction(engine) as conn:
        attempts = conn.execute(
            sa.select(col(Digest.attempts)).where(col(Digest.id) == item.digest_id)
        ).scalar_one()
        if exc.permanent:
            conn.execute(
                sa.update(Digest)
                .where(col(Digest.id) == item.digest_id)
                .values(status="failed", last_error=error)
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
                .values(status="failed", last_error=error)
            )
            result.failed += 1
        else:
            conn.execute(
                sa.update(Digest)
                .where(col(Digest.id) == item.digest_id)
                .values(status="pending", last_error=error)
            )
            result.deferred += 1


def outbox_counts(engine: Engine) -> dict[str, int]:
    """Digests by status."""
    query = sa.select(col(Digest.status), sa.func.count()).group_by(col(Digest.status))
    with reading(engine) as conn:
        rows = conn.execute(query).all()
        conn.rollback()
    counts = dict.fromkeys(("pending", "sending", "sent", "skipped", "failed"), 0)
    counts.update({status: int(n) for status, n in rows})
    return counts
