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
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from digest.emails import DigestView, MessageBuilder, PaperView
from digest.errors import DeliveryError
from digest.links import Links
from digest.models import Digest, DigestItem, Paper, Subscriber
from digest.preview import paper_view
from digest.store import db_time, transaction
from digest.subscribers import feed_name, link_token

log = logging.getLogger("digest.deliver")

MAX_ATTEMPTS = 5


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
    stopped: bool = False


def paper_views(conn: sa.Connection, digest_ids: Sequence[int]) -> dict[int, list[PaperView]]:
    """The papers of each digest, in rank order, as the email shows them."""
    views: dict[int, list[PaperView]] = {d: [] for d in digest_ids}
    if not digest_ids:
        return views
    rows = conn.execute(
        sa.select(
            DigestItem.digest_id,
            DigestItem.score,
            DigestItem.matched,
            Paper.key,
            Paper.title,
            Paper.abstract,
            Paper.url,
            Paper.arxiv_id,
        )
        .join(Paper, Paper.id == DigestItem.paper_id)  # type: ignore[arg-type]
        .where(DigestItem.digest_id.in_(digest_ids))  # type: ignore[attr-defined]
        .order_by(DigestItem.digest_id, DigestItem.rank)  # type: ignore[arg-type]
    ).all()
    for row in rows:
        views[row.digest_id].append(paper_view(row, row.score, json.loads(row.matched)))
    return views


def load_outbox(engine: Engine, links: Links, *, limit: int | None = None) -> list[Outgoing]:
    """Every digest still to send (pending, or caught mid-send by a crash), oldest first."""
    with engine.connect() as conn:
        query = (
            sa.select(
                Digest.id,
                Digest.period,
                Digest.message_id,
                Subscriber.id.label("sid"),  # type: ignore[union-attr]
                Subscriber.email,
                Subscriber.token_salt,
            )
            .join(Subscriber, Subscriber.id == Digest.subscriber_id)  # type: ignore[arg-type]
            .where(Digest.status.in_(("pending", "sending")), Subscriber.status == "active")  # type: ignore[attr-defined]
            .order_by(Digest.id)  # type: ignore[arg-type]
        )
        if limit is not None:
            query = query.limit(limit)
        rows = conn.execute(query).all()
        papers = paper_views(conn, [r.id for r in rows])
        conn.rollback()
    outgoing = []
    for row in rows:
        sub = Subscriber(id=row.sid, email=row.email, token_salt=row.token_salt)  # type: ignore[call-arg]
        token = link_token(links.key, sub)
        view = DigestView(
            to=row.email,
            period=row.period,
            papers=papers[row.id],
            message_id=row.message_id,
            unsubscribe_url=links.unsubscribe_url(token),
            unsubscribe_mailto=links.unsubscribe_mailto(token),
            feed_url=links.feed_url(feed_name(links.key, sub)),
        )
        outgoing.append(Outgoing(row.id, row.sid, row.email, view))
    return outgoing


def _mark(engine: Engine, digest_id: int, **values: Any) -> None:
    with transaction(engine) as conn:
        conn.execute(sa.update(Digest).where(Digest.id == digest_id).values(**values))  # type: ignore[arg-type]


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
    queue: asyncio.Queue[Outgoing] = asyncio.Queue()
    for item in outgoing:
        queue.put_nowait(item)

    async def worker() -> None:
        while not queue.empty():
            if stop is not None and stop.is_set():
                result.stopped = True
                return
            item = queue.get_nowait()
            now = clock()
            raw = builder.build(item.view, now)
            _mark(engine, item.digest_id, status="sending", attempts=Digest.attempts + 1)
            try:
                await transport.send(sender_addr, item.email, raw, item.view.message_id)
            except DeliveryError as exc:
                _failed(engine, item, exc, result)
                continue
            _mark(engine, item.digest_id, status="sent", sent_at=db_time(clock()), last_error=None)
            result.sent += 1

    workers = [asyncio.create_task(worker()) for _ in range(max(1, concurrency))]
    await asyncio.gather(*workers)
    return result


def _failed(engine: Engine, item: Outgoing, exc: DeliveryError, result: Delivered) -> None:
    """Record a failed send: a bounce ends mail to the address; anything else waits its turn."""
    error = str(exc)[:500]
    with transaction(engine) as conn:
        attempts = conn.execute(
            sa.select(Digest.attempts).where(Digest.id == item.digest_id)  # type: ignore[arg-type]
        ).scalar_one()
        if exc.permanent:
            conn.execute(
                sa.update(Digest)
                .where(Digest.id == item.digest_id)
                .values(status="failed", last_error=error)  # type: ignore[arg-type]
            )
            conn.execute(
                sa.update(Subscriber)
                .where(Subscriber.id == item.subscriber_id)
                .values(status="bounced")  # type: ignore[arg-type]
            )
            result.failed += 1
            result.bounced.append(item.email)
            log.warning("bounced", extra={"email": item.email, "error": error})
        elif attempts >= MAX_ATTEMPTS:
            conn.execute(
                sa.update(Digest)
                .where(Digest.id == item.digest_id)
                .values(status="failed", last_error=error)  # type: ignore[arg-type]
            )
            result.failed += 1
        else:
            conn.execute(
                sa.update(Digest)
                .where(Digest.id == item.digest_id)
                .values(status="pending", last_error=error)  # type: ignore[arg-type]
            )
            result.deferred += 1


def outbox_counts(engine: Engine, period: date | None = None) -> dict[str, int]:
    """Digests by status (for one period, or all)."""
    query = sa.select(Digest.status, sa.func.count()).group_by(Digest.status)  # type: ignore[arg-type]
    if period is not None:
        query = query.where(Digest.period == period)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
        conn.rollback()
    counts = dict.fromkeys(("pending", "sending", "sent", "skipped", "failed"), 0)
    counts.update({status: int(n) for status, n in rows})
    return counts
