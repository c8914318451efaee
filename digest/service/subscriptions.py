"""Subscriptions: what an operator (or a CSV file) says about a subscriber, checked at the door.

Addresses are normalized, interests parsed and the numbers held to the bounds of the
settings table before anything reaches the store, so a malformed value is refused here
and never at send time. Signed links are checked here against the stored salt.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from email_validator import EmailNotValidError, ValidatedEmail, validate_email
from sqlalchemy.engine import Engine

from digest import tokens
from digest.errors import UsageError
from digest.rank.query import InterestError, parse_interest
from digest.settings import SUBSCRIBER, convert
from digest.store.models import Subscriber
from digest.store.subscribers import (
    STATUSES,
    Saved,
    interests_of,
    store_subscribers,
    subscriber_at,
    subscriber_by_id,
    update_status,
)

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


def address_forms(address: str) -> list[str]:
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


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise UsageError(f"status must be one of {', '.join(STATUSES)}")


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
        _check_status(self.status)
        return SubscriberSpec(
            email=normalize_email(self.email),
            interests=check_interests(self.interests),
            max_items=check_field("max_items", self.max_items),
            min_score=check_field("min_score", self.min_score),
            frequency=check_field("frequency", self.frequency),
            status=self.status,
            send_empty=self.send_empty,
        )


def save_subscribers(
    engine: Engine, specs: Sequence[SubscriberSpec], *, now: datetime, resubscribe: bool = False
) -> list[Saved]:
    """Check every spec, then add or update them all in one transaction (or none of them).

    An address that unsubscribed or bounced is made active again only with ``resubscribe``;
    otherwise a UsageError names it and nothing is saved.
    """
    checked = [(spec.checked(), address_forms(spec.email)) for spec in specs]
    return store_subscribers(engine, checked, now=now, resubscribe=resubscribe)


def upsert_subscriber(
    engine: Engine, spec: SubscriberSpec, *, now: datetime, resubscribe: bool = False
) -> Subscriber:
    """Add a subscriber or replace an existing one's settings; returns the stored row."""
    return save_subscribers(engine, [spec], now=now, resubscribe=resubscribe)[0].row


def find_subscriber(engine: Engine, email: str) -> Subscriber:
    """The subscriber with this address, or a UsageError naming it."""
    forms = address_forms(email)
    row = subscriber_at(engine, forms)
    if row is None:
        raise UsageError(f"no subscriber {forms[0]}")
    return row


def set_status(engine: Engine, email: str, status: str) -> Subscriber:
    """Change a subscriber's status (unsubscribe, bounce, reactivate)."""
    _check_status(status)
    return update_status(engine, find_subscriber(engine, email).id or 0, status)


def check_token(
    engine: Engine, keys: tokens.Keys, token: str, purpose: str = "unsubscribe"
) -> Subscriber | None:
    """The subscriber a token belongs to (signed by one of ``keys``), or None for a forged
    or revoked one."""
    ident = tokens.token_id(token)
    row = None if ident is None else subscriber_by_id(engine, ident)
    if row is None or not tokens.check_token(keys, token, row.id, row.token_salt, purpose):
        return None
    return row


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
