"""Subscriptions: what an operator (or a CSV file) says about a subscriber, checked at the door.

Addresses are normalized, interests parsed and every other field held to its declaration
(``digest.store.subscription``) before anything reaches the store, so a malformed value
is refused here and never at send time. Signed links are checked here against the stored salt.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, TextIO

from email_validator import EmailNotValidError, ValidatedEmail, validate_email
from sqlalchemy.engine import Engine

from digest import tokens
from digest.errors import UsageError
from digest.rank.query import INTEREST_SEPARATOR, parse_kept
from digest.rank.query import InterestError as InterestError  # a form names the fault
from digest.store import subscription
from digest.store.models import Subscriber as Subscriber  # a subscriber as stored, for pages
from digest.store.subscribers import (
    Saved as Saved,  # what a save reports, for the command line to show
)
from digest.store.subscribers import (
    interests_of as interests_of,  # a subscriber's interests, as the command line lists them
)
from digest.store.subscribers import (
    list_subscribers as list_subscribers,
)
from digest.store.subscribers import (
    store_subscribers,
    subscriber_at,
    subscriber_by_id,
    update_status,
)
from digest.store.subscription import FREQUENCIES as FREQUENCIES  # subscribe --frequency
from digest.store.subscription import (
    STATUSES,
    FieldError,
    Subscription,
    SubscriptionPatch,
    default,
)

# The columns of a CSV export, and those an import reads (a missing one takes its default).
CSV_FIELDS = ("email", "status", "interests", "max_items", "min_score", "frequency", "digest_hour")
# What ``digest subscribers --json`` lists of each subscriber (created_at besides).
LISTED = ("email", "status", "interests", "max_items", "min_score", "frequency")


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
        parse_kept(text)
    return cleaned


def check_field(name: str, value: Any) -> Any:
    """One of a subscriber's fields (typed, or text from a form, an argument or a CSV cell)
    as its declaration takes it, or a UsageError naming it."""
    try:
        return subscription.check_field(name, value)
    except FieldError as exc:
        raise UsageError(f"{name} ({value!r}) {exc.reason}") from None


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise UsageError(f"status must be one of {', '.join(STATUSES)}")


def checked(patch: SubscriptionPatch) -> SubscriptionPatch:
    """The same change with its address normalized and each interest parsed (a patch that
    names an address and interests: an operator's, a CSV row's, a settings file's)."""
    _check_status(patch.get("status", "active"))
    return patch.but(
        email=normalize_email(patch.email), interests=check_interests(patch.get("interests", []))
    )


def operator_patch(email: str, interests: Sequence[str], **options: Any) -> SubscriptionPatch:
    """What ``digest subscribe`` and a CSV row say: the address, interests and every option
    the operator sets (each given, so a default replaces an earlier value), checked."""
    values = {
        name: options.get(name, default(name))
        for name in ("status", "max_items", "min_score", "frequency", "send_empty", "digest_hour")
    }
    try:
        return checked(SubscriptionPatch(email=email, interests=list(interests), **values))
    except FieldError as exc:
        raise UsageError(f"{exc.name} ({values.get(exc.name)!r}) {exc.reason}") from None


def save_subscribers(
    engine: Engine,
    patches: Sequence[SubscriptionPatch],
    *,
    now: datetime,
    resubscribe: bool = False,
) -> list[Saved]:
    """Check every change, then add or update them all in one transaction (or none of them).

    An address that unsubscribed or bounced is made active again only with ``resubscribe``;
    otherwise a UsageError names it and nothing is saved.
    """
    ready = [(checked(patch), address_forms(patch.email)) for patch in patches]
    return store_subscribers(engine, ready, now=now, resubscribe=resubscribe)


def upsert_subscriber(
    engine: Engine, patch: SubscriptionPatch, *, now: datetime, resubscribe: bool = False
) -> Subscriber:
    """Add a subscriber or change an existing one's settings; returns the stored row."""
    return save_subscribers(engine, [patch], now=now, resubscribe=resubscribe)[0].row


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
    choices = Subscription.of(row).choices()
    return {**{name: choices[name] for name in LISTED}, "created_at": row.created_at.isoformat()}


def _csv_cell(name: str, value: Any) -> Any:
    if name == "interests":
        return join_interests(value)
    return "" if value is None else value


def export_csv(rows: Iterable[Subscriber], out: TextIO) -> int:
    """Write subscribers as CSV (interests joined by ``INTEREST_SEPARATOR``); returns the count."""
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
    writer.writeheader()
    written = 0
    for row in rows:
        choices = Subscription.of(row).choices()
        writer.writerow({name: _csv_cell(name, choices[name]) for name in CSV_FIELDS})
        written += 1
    return written


def read_csv(text: str) -> list[SubscriptionPatch]:
    """Parse and check every row first, so a bad row (named by line) imports nothing."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or "email" not in reader.fieldnames:
        raise UsageError("CSV needs a header row with at least an 'email' column")
    patches = []
    for row in reader:
        line = reader.line_num
        cells = {name: row.get(name) or "" for name in CSV_FIELDS}
        cells = {name: value for name, value in cells.items() if value}  # empty: the default
        try:
            patches.append(
                operator_patch(
                    email=cells.pop("email", ""),
                    interests=cells.pop("interests", "").split(INTEREST_SEPARATOR),
                    **cells,
                )
            )
        except UsageError as exc:
            raise UsageError(f"CSV line {line}: {exc}") from None
    return patches
