"""Subscribers: who gets digests, what they care about, and their signed links.

Links (unsubscribe, private feed) are HMACs of a per-subscriber random salt
under the installation's secret key. The database holds only the salt, so a
leaked database does not leak working links; rotating the salt revokes them.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from digest.errors import UsageError
from digest.interests import parse_interest
from digest.models import Subscriber
from digest.store import db_time, ingest_sequence, reading

STATUSES = ("pending", "active", "unsubscribed", "bounced")
FREQUENCIES = ("daily", "weekly")
CSV_FIELDS = ("email", "status", "interests", "max_items", "min_score", "frequency")
INTEREST_SEPARATOR = ";"


def normalize_email(address: str) -> str:
    """A valid address in one canonical form (whole address lower-cased), or a UsageError."""
    try:
        result = validate_email(address.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise UsageError(f"not a valid email address {address!r}: {exc}") from None
    return result.normalized.lower()


def check_interests(interests: Sequence[str]) -> list[str]:
    """Every interest parsed now, so a malformed one is refused here and never at send time."""
    cleaned = [text.strip() for text in interests if text.strip()]
    if not cleaned:
        raise UsageError("a subscriber needs at least one --interest")
    for text in cleaned:
        parse_interest(text)
    return cleaned


def interests_of(subscriber: Subscriber) -> list[str]:
    """The subscriber's interest expressions."""
    value: list[str] = json.loads(subscriber.interests)
    return value


@dataclass(frozen=True)
class SubscriberSpec:
    """What an operator (or a CSV row) says about a subscriber."""

    email: str
    interests: Sequence[str]
    max_items: int = 20
    min_score: float = 0.0
    frequency: str = "daily"
    status: str = "active"
    send_empty: bool = False

    def checked(self) -> SubscriberSpec:
        """The same spec, validated and normalized."""
        if self.max_items < 1:
            raise UsageError("--max-items must be at least 1")
        if self.frequency not in FREQUENCIES:
            raise UsageError(f"frequency must be one of {', '.join(FREQUENCIES)}")
        if self.status not in STATUSES:
            raise UsageError(f"status must be one of {', '.join(STATUSES)}")
        return SubscriberSpec(
            email=normalize_email(self.email),
            interests=check_interests(self.interests),
            max_items=self.max_items,
            min_score=self.min_score,
            frequency=self.frequency,
            status=self.status,
            send_empty=self.send_empty,
        )


def upsert_subscriber(engine: Engine, spec: SubscriberSpec, *, now: datetime) -> Subscriber:
    """Add a subscriber or replace an existing one's settings; returns the stored row."""
    spec = spec.checked()
    with Session(engine) as session:
        row = session.exec(select(Subscriber).where(col(Subscriber.email) == spec.email)).first()
        if row is None:
            row = Subscriber(
                email=spec.email,
                token_salt=secrets.token_hex(16),
                created_at=db_time(now),
                # their first digest holds the papers of ingests after this one
                seen_upto=ingest_sequence(session.connection()),
            )
        row.status = spec.status
        row.interests = json.dumps(list(spec.interests))
        row.max_items = spec.max_items
        row.min_score = spec.min_score
        row.frequency = spec.frequency
        row.send_empty = spec.send_empty
        session.add(row)
        session.commit()
        session.refresh(row)
        return row


def find_subscriber(engine: Engine, email: str) -> Subscriber:
    """The subscriber with this address, or a UsageError naming it."""
    address = normalize_email(email)
    with Session(engine) as session:
        row = session.exec(select(Subscriber).where(col(Subscriber.email) == address)).first()
    if row is None:
        raise UsageError(f"no subscriber {address}")
    return row


def set_status(engine: Engine, email: str, status: str) -> Subscriber:
    """Change a subscriber's status (unsubscribe, bounce, reactivate)."""
    if status not in STATUSES:
        raise UsageError(f"status must be one of {', '.join(STATUSES)}")
    known = find_subscriber(engine, email)
    with Session(engine) as session:
        row = session.get(Subscriber, known.id)
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


def subscriber_json(row: Subscriber) -> dict[str, Any]:
    """A subscriber as ``digest subscribers --json`` prints it (no secrets)."""
    return {
        "email": row.email,
        "status": row.status,
        "interests": interests_of(row),
        "max_items": row.max_items,
        "min_score": row.min_score,
        "frequency": row.frequency,
        "created_at": row.created_at.isoformat(),
    }


def export_csv(rows: Iterable[Subscriber], out: TextIO) -> int:
    """Write subscribers as CSV (interests joined by ';'); returns the count."""
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
    writer.writeheader()
    written = 0
    for row in rows:
        writer.writerow(
            {
                "email": row.email,
                "status": row.status,
                "interests": f"{INTEREST_SEPARATOR} ".join(interests_of(row)),
                "max_items": row.max_items,
                "min_score": row.min_score,
                "frequency": row.frequency,
            }
        )
        written += 1
    return written


def read_csv(text: str) -> list[SubscriberSpec]:
    """Parse and check every row first, so a bad row (named by line) imports nothing."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or "email" not in reader.fieldnames:
        raise UsageError("CSV needs a header row with at least an 'email' column")
    specs = []
    for row in reader:
        line = reader.line_num
        try:
            specs.append(
                SubscriberSpec(
                    email=row.get("email") or "",
                    interests=(row.get("interests") or "").split(INTEREST_SEPARATOR),
                    max_items=int(row.get("max_items") or 20),
                    min_score=float(row.get("min_score") or 0),
                    frequency=row.get("frequency") or "daily",
                    status=row.get("status") or "active",
                ).checked()
            )
        except (UsageError, ValueError) as exc:
            raise UsageError(f"CSV line {line}: {exc}") from None
    return specs


def _sign(key: bytes, purpose: str, ident: int | None, salt: str) -> str:
    message = f"{purpose}:{ident}:{salt}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]  # 128 bits


def link_token(key: bytes, ident: int | None, salt: str, purpose: str = "unsubscribe") -> str:
    """The token in a subscriber's links: ``<id>.<hmac>``, 128 bits of signature."""
    return f"{ident}.{_sign(key, purpose, ident, salt)}"


def feed_name(key: bytes, ident: int | None, salt: str) -> str:
    """The unguessable file name of a subscriber's private feed."""
    return _sign(key, "feed", ident, salt)


def check_token(
    engine: Engine, key: bytes, token: str, purpose: str = "unsubscribe"
) -> Subscriber | None:
    """The subscriber a token belongs to, or None for a forged or revoked one."""
    ident, _, signature = token.partition(".")
    if not ident.isdigit() or not signature:
        return None
    with Session(engine) as session:
        row = session.get(Subscriber, int(ident))
    if row is None or not hmac.compare_digest(
        _sign(key, purpose, row.id, row.token_salt), signature
    ):
        return None
    return row


def count_by_status(engine: Engine) -> dict[str, int]:
    """How many subscribers have each status."""
    with reading(engine) as conn:
        rows = conn.execute(
            sa.select(col(Subscriber.status), sa.func.count()).group_by(col(Subscriber.status))
        ).all()
    counts = dict.fromkeys(STATUSES, 0)
    counts.update({status: int(n) for status, n in rows})
    return counts
