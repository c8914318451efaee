"""Subscribers as stored: who gets digests, what they care about, the salt of their links.

Values come here validated (digest.service.subscriptions checks them); this module is the SQL.
The database holds only each subscriber's random salt, never a signed link (digest.tokens).

Consent: an address that unsubscribed or bounced stays suppressed. Saving it
again leaves it so unless the operator says the person asked to come back
(``resubscribe``); the web front's double opt-in is the other way back.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, col, select

from digest.clock import as_utc
from digest.errors import UsageError
from digest.store.engine import ingest_sequence, reading
from digest.store.models import Subscriber

STATUSES = ("pending", "active", "unsubscribed", "bounced")
SUPPRESSED = ("unsubscribed", "bounced")  # the address left: no mail until it comes back


class SubscriberFields(Protocol):
    """A subscriber's validated values, as ``SubscriberSpec.checked`` gives them."""

    @property
    def email(self) -> str: ...
    @property
    def interests(self) -> Sequence[str]: ...
    @property
    def max_items(self) -> int: ...
    @property
    def min_score(self) -> float: ...
    @property
    def frequency(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def send_empty(self) -> bool: ...


def interests_of(subscriber: Subscriber) -> list[str]:
    """The subscriber's interest expressions."""
    value: list[str] = json.loads(subscriber.interests)
    return value


@dataclass(frozen=True, slots=True)
class SubscriberRow:
    """A subscriber as the stages read one: interests decoded once, no session attached."""

    id: int
    email: str
    status: str
    interests: tuple[str, ...]
    max_items: int
    min_score: float
    frequency: str
    send_empty: bool
    token_salt: str
    last_digest_at: datetime | None
    seen_upto: int

    @classmethod
    def of(cls, row: Subscriber) -> SubscriberRow:
        """The plain row of a stored subscriber."""
        return cls(
            id=int(row.id or 0),
            email=row.email,
            status=row.status,
            interests=tuple(interests_of(row)),
            max_items=row.max_items,
            min_score=row.min_score,
            frequency=row.frequency,
            send_empty=row.send_empty,
            token_salt=row.token_salt,
            last_digest_at=row.last_digest_at,
            seen_upto=row.seen_upto,
        )


def active_salts(conn: Connection) -> dict[int, str]:
    """The link salt of every active subscriber, by id (their private feeds are named from it)."""
    query = sa.select(col(Subscriber.id), col(Subscriber.token_salt)).where(
        col(Subscriber.status) == "active"
    )
    return {ident: salt for ident, salt in conn.execute(query).all() if ident is not None}


@dataclass(frozen=True)
class Saved:
    """A subscriber as stored, and their status and interests before (None: a new one)."""

    row: Subscriber
    status_before: str | None = None
    interests_before: list[str] = field(default_factory=list)

    @property
    def action(self) -> str:
        """subscribed (new), resubscribed (back from suppressed) or updated."""
        if self.status_before is None:
            return "subscribed"
        if self.status_before in SUPPRESSED and self.row.status not in SUPPRESSED:
            return "resubscribed"
        return "updated"


def _stored(session: Session, forms: Sequence[str]) -> Subscriber | None:
    rows = session.exec(select(Subscriber).where(col(Subscriber.email).in_(forms))).all()
    return min(rows, key=lambda row: forms.index(row.email), default=None)


def _refusal(left: Sequence[Subscriber]) -> str:
    named = ", ".join(f"{row.email} {row.status}" for row in left[:3])
    more = f" and {len(left) - 3} more" if len(left) > 3 else ""
    return (
        f"{named}{more}: not reactivated, an address that left stays suppressed"
        " (add --resubscribe only if they asked to come back)"
    )


def store_subscribers(
    engine: Engine,
    checked: Sequence[tuple[SubscriberFields, Sequence[str]]],
    *,
    now: datetime,
    resubscribe: bool = False,
) -> list[Saved]:
    """Add subscribers or replace their settings, all in one transaction (or none of them).

    Each entry is validated values and the address forms a stored row may have (canonical
    first). An address that unsubscribed or bounced is made active again only with
    ``resubscribe``; otherwise a UsageError names it and nothing is saved.
    """
    with Session(engine, expire_on_commit=False) as session:
        rows: dict[str, Subscriber | None] = {}
        for spec, forms in checked:
            if spec.email not in rows:
                rows[spec.email] = _stored(session, forms)
        left = [
            row
            for spec, _ in checked
            if (row := rows[spec.email]) is not None
            and row.status in SUPPRESSED
            and spec.status not in SUPPRESSED
        ]
        if left and not resubscribe:
            raise UsageError(_refusal(list({row.email: row for row in left}.values())))
        saved = []
        for spec, _ in checked:
            row = rows[spec.email]
            if row is None:
                row = rows[spec.email] = Subscriber(
                    email=spec.email,
                    token_salt=secrets.token_hex(16),
                    created_at=as_utc(now, naive="refuse"),
                    # their first digest holds the papers of ingests after this one
                    seen_upto=ingest_sequence(session.connection()),
                )
                before: tuple[str | None, list[str]] = (None, [])
            else:
                before = (row.status, interests_of(row))
                if row.status in SUPPRESSED and spec.status not in SUPPRESSED:
                    # back after leaving: like a new subscriber, from the next listing on
                    row.seen_upto = ingest_sequence(session.connection())
            row.email = spec.email  # an address kept in an older form gets the canonical one
            row.status = spec.status
            row.interests = json.dumps(list(spec.interests))
            row.max_items = spec.max_items
            row.min_score = spec.min_score
            row.frequency = spec.frequency
            row.send_empty = spec.send_empty
            session.add(row)
            saved.append((row, before))
        session.commit()
    return [Saved(row, status, interests) for row, (status, interests) in saved]


def subscriber_at(engine: Engine, forms: Sequence[str]) -> Subscriber | None:
    """The subscriber stored under one of these address forms (the first form wins)."""
    with Session(engine) as session:
        return _stored(session, forms)


def subscriber_by_id(engine: Engine, ident: int) -> Subscriber | None:
    """The subscriber with this id, if any."""
    with Session(engine) as session:
        return session.get(Subscriber, ident)


def update_status(engine: Engine, ident: int, status: str) -> Subscriber:
    """Change a subscriber's status (unsubscribe, bounce, reactivate); returns the row."""
    with Session(engine) as session:
        row = session.get(Subscriber, ident)
        assert row is not None
        row.status = status
        session.add(row)
        session.commit()
        session.refresh(row)
        return row


def list_subscribers(engine: Engine, *, status: str | None = None) -> list[Subscriber]:
    """All subscribers (or those with ``status``), by address."""
    with Session(engine) as session:
        query = select(Subscriber).order_by(col(Subscriber.email))
        if status is not None:
            query = query.where(col(Subscriber.status) == status)
        return list(session.exec(query).all())


def count_by_status(engine: Engine) -> dict[str, int]:
    """How many subscribers have each status."""
    with reading(engine) as conn:
        rows = conn.execute(
            sa.select(col(Subscriber.status), sa.func.count()).group_by(col(Subscriber.status))
        ).all()
    counts = dict.fromkeys(STATUSES, 0)
    counts.update({status: int(n) for status, n in rows})
    return counts
