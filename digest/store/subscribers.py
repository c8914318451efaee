"""Subscribers: who gets digests, what they care about, and their signed links.

Links (unsubscribe, private feed) are HMACs of a per-subscriber random salt
under the installation's secret key. The database holds only the salt, so a
leaked database does not leak working links; rotating the salt revokes them.

Consent: an address that unsubscribed or bounced stays suppressed. Saving it
again leaves it so unless the operator says the person asked to come back
(``resubscribe``); the web front's double opt-in is the other way back.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

import sqlalchemy as sa
from email_validator import EmailNotValidError, ValidatedEmail, validate_email
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from digest.errors import UsageError
from digest.rank.query import InterestError, parse_interest
from digest.settings import SUBSCRIBER, convert
from digest.store.engine import db_time, ingest_sequence, reading
from digest.store.models import Subscriber

STATUSES = ("pending", "active", "unsubscribed", "bounced")
SUPPRESSED = ("unsubscribed", "bounced")  # the address left: no mail until it comes back
FREQUENCIES = ("daily", "weekly")
CSV_FIELDS = ("email", "status", "interests", "max_items", "min_score", "frequency")
# Between a subscriber's interests wherever they are written on one line: CSV and listings.
INTEREST_SEPARATOR = ";"
_NOT_IN_AN_INTEREST = {
    INTEREST_SEPARATOR: "';' separates interests, it cannot be inside one",
    "|": "'|' is not part of the interest language (write OR; separate interests with ';')",
}


def join_interests(interests: Iterable[str]) -> str:
    """Interests on one line, as ``subscribers`` lists them and CSV holds them."""
    return f"{INTEREST_SEPARATOR} ".join(interests)


def _validated(address: str) -> ValidatedEmail:
    try:
        return validate_email(address.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise UsageError(f"not a valid email address {address!r}: {exc}") from None


def normalize_email(address: str) -> str:
    """A deliverable address in one canonical form, or a UsageError.

    The form is ASCII and lower-cased: an international domain becomes its IDNA form
    (``xn--…``), which every mail server takes. Letters beyond ASCII before the ``@`` would
    need SMTPUTF8, which digest does not send, so such an address is refused here rather
    than failing at every run.
    """
    result = _validated(address)
    if result.ascii_email is None:
        raise UsageError(
            f"cannot deliver to {address.strip()!r}: the part before the @ must be ASCII"
            " (digest does not send SMTPUTF8 mail)"
        )
    return result.ascii_email.lower()


def _address_forms(address: str) -> list[str]:
    """The forms an address may be stored in: the canonical one, and as older versions kept it."""
    result = _validated(address)
    forms = [result.normalized.lower()]
    if result.ascii_email is not None:
        forms.insert(0, result.ascii_email.lower())
    return list(dict.fromkeys(forms))


def check_interests(interests: Sequence[str]) -> list[str]:
    """Every interest parsed now, so a malformed one is refused here and never at send time."""
    cleaned = [text.strip() for text in interests if text.strip()]
    if not cleaned:
        raise UsageError("a subscriber needs at least one --interest")
    for text in cleaned:
        for mark, reason in _NOT_IN_AN_INTEREST.items():
            if mark in text:
                raise InterestError(text, reason, text.index(mark) + 1)
        parse_interest(text)
    return cleaned


def check_field(name: str, value: Any) -> Any:
    """A subscriber's ``max_items``, ``min_score`` or ``frequency`` (typed, or text from a CSV
    cell) within the bounds of the settings table, or a UsageError naming it."""
    try:
        return convert(SUBSCRIBER[name], value, text=True)
    except ValueError as exc:
        raise UsageError(f"{name} ({value!r}) {exc}") from None


def interests_of(subscriber: Subscriber) -> list[str]:
    """The subscriber's interest expressions."""
    value: list[str] = json.loads(subscriber.interests)
    return value


@dataclass(frozen=True)
class SubscriberSpec:
    """What an operator (or a CSV row) says about a subscriber."""

    email: str
    interests: Sequence[str]
    max_items: int = SUBSCRIBER["max_items"].default
    min_score: float = SUBSCRIBER["min_score"].default
    frequency: str = SUBSCRIBER["frequency"].default
    status: str = "active"
    send_empty: bool = False

    def checked(self) -> SubscriberSpec:
        """The same spec, validated and normalized."""
        if self.status not in STATUSES:
            raise UsageError(f"status must be one of {', '.join(STATUSES)}")
        return SubscriberSpec(
            email=normalize_email(self.email),
            interests=check_interests(self.interests),
            max_items=check_field("max_items", self.max_items),
            min_score=check_field("min_score", self.min_score),
            frequency=check_field("frequency", self.frequency),
            status=self.status,
            send_empty=self.send_empty,
        )


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


def save_subscribers(
    engine: Engine, specs: Sequence[SubscriberSpec], *, now: datetime, resubscribe: bool = False
) -> list[Saved]:
    """Add subscribers or replace their settings, all in one transaction (or none of them).

    An address that unsubscribed or bounced is made active again only with ``resubscribe``;
    otherwise a UsageError names it and nothing is saved.
    """
    checked = [(spec.checked(), _address_forms(spec.email)) for spec in specs]
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
                    created_at=db_time(now),
                    # their first digest holds the papers of ingests after this one
                    seen_upto=ingest_sequence(session.connection()),
                )
                before: tuple[str | None, list[str]] = (None, [])
            else:
                before = (row.status, interests_of(row))
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


def upsert_subscriber(
    engine: Engine, spec: SubscriberSpec, *, now: datetime, resubscribe: bool = False
) -> Subscriber:
    """Add a subscriber or replace an existing one's settings; returns the stored row."""
    return save_subscribers(engine, [spec], now=now, resubscribe=resubscribe)[0].row


def find_subscriber(engine: Engine, email: str) -> Subscriber:
    """The subscriber with this address, or a UsageError naming it."""
    forms = _address_forms(email)
    with Session(engine) as session:
        row = _stored(session, forms)
    if row is None:
        raise UsageError(f"no subscriber {forms[0]}")
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
    """Write subscribers as CSV (interests joined by ``INTEREST_SEPARATOR``); returns the count."""
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
    writer.writeheader()
    written = 0
    for row in rows:
        writer.writerow(
            {
                "email": row.email,
                "status": row.status,
                "interests": join_interests(interests_of(row)),
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
                    max_items=check_field(
                        "max_items", row.get("max_items") or SUBSCRIBER["max_items"].default
                    ),
                    min_score=check_field(
                        "min_score", row.get("min_score") or SUBSCRIBER["min_score"].default
                    ),
                    frequency=row.get("frequency") or SUBSCRIBER["frequency"].default,
                    status=row.get("status") or "active",
                ).checked()
            )
        except UsageError as exc:
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
    # isdigit() alone lets "²" through; 18 digits is as far as an SQL integer goes
    if not (ident.isascii() and ident.isdigit() and len(ident) <= 18) or not signature:
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
