"""What a reader does on the site: ask to subscribe (double opt-in), confirm, change their
interests and options, pause and resume, take their data with them.

The web front reads the forms and shows the pages; each step here is one call, checked
and stored. Leaving (unsubscribe, delete) is in ``leaving``, with the copies on disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy.engine import Engine

from digest import tokens
from digest.deliver.confirm import ConfirmView, send_confirmation
from digest.service.subscriptions import address_forms
from digest.service.wiring import sender_of, transport_of
from digest.settings import Settings
from digest.store import subscribers
from digest.store.engine import reading
from digest.store.models import Subscriber
from digest.store.subscribers import Requested
from digest.store.subscription import Subscription, SubscriptionPatch, default

# What a request from the front page asks for besides its interests: the defaults.
REQUEST_DEFAULTS = ("max_items", "min_score", "frequency")


def default_of(name: str) -> Any:
    """A subscriber's field as it is when nobody says otherwise."""
    return default(name)


def choices_of(row: Subscriber) -> dict[str, Any]:
    """A subscriber's interests and options as a form shows them."""
    return Subscription.of(row).choices()


def request_subscription(
    engine: Engine,
    email: str,
    interests: Sequence[str],
    *,
    now: datetime,
    sends_allowed: int,
) -> Requested | None:
    """Keep a front page's request (the interests, every other field its default) until it
    is confirmed; None when the address had ``sends_allowed`` confirmation emails today."""
    wanted = SubscriptionPatch(
        interests=list(interests),
        timezone=None,
        **{name: default(name) for name in REQUEST_DEFAULTS},
    )
    return subscribers.request_subscription(
        engine, address_forms(email), wanted, now=now, sends_allowed=sends_allowed
    )


async def send_confirmation_email(
    settings: Settings,
    engine: Engine,
    key: bytes,
    email: str,
    interests: Sequence[str],
    requested: Requested,
    now: datetime,
) -> None:
    """The confirmation email of ``requested``: a link, signed for that one request, that
    expires after ``confirm_hours``; it takes its turn in the site's sending pace (``engine``:
    the store the senders share). Raises ``DeliveryError`` when it could not be sent."""
    expires = now + timedelta(hours=settings.confirm_hours)
    token = tokens.expiring_token(
        key,
        requested.subscriber_id,
        requested.token_salt,
        f"confirm:{requested.nonce}",
        int(expires.timestamp()),
    )
    view = ConfirmView(
        to=email,
        interests=tuple(interests),
        confirm_url=f"{settings.base_url}/confirm/{quote(token, safe='')}",
        expires=expires,
        timezone=settings.timezone,
    )
    await send_confirmation(transport_of(settings, engine), view, sender_of(settings), now, key)


def forget_unconfirmed(engine: Engine, now: datetime, confirm_hours: float) -> int:
    """Drop the addresses whose request was never confirmed, once both its link and its
    resend count have run out; how many."""
    kept = max(timedelta(hours=confirm_hours), subscribers.CONFIRM_WINDOW)
    return subscribers.forget_unconfirmed(engine, now - kept)


def confirmation(
    engine: Engine, keys: tokens.Keys, token: str, now: datetime
) -> tuple[str, Subscriber | None, str | None]:
    """What a confirmation link is: ready (with the nonce it confirms), done, expired or
    invalid."""
    ident = tokens.token_id(token)
    row = None if ident is None else subscribers.subscriber_by_id(engine, ident)
    if row is None:
        return "invalid", None, None
    moment = now.timestamp()
    nonce = subscribers.pending_nonce(row)
    if nonce is not None:
        verdict = tokens.check_expiring_token(
            keys, token, row.id, row.token_salt, f"confirm:{nonce}", moment
        )
        if verdict is tokens.Verdict.VALID:
            return "ready", row, nonce
        if verdict is tokens.Verdict.EXPIRED:
            return "expired", row, None
    if row.confirmed_nonce is not None:
        verdict = tokens.check_expiring_token(
            keys, token, row.id, row.token_salt, f"confirm:{row.confirmed_nonce}", moment
        )
        if verdict is not tokens.Verdict.INVALID:
            return "done", row, None
    return "invalid", None, None


def confirm(engine: Engine, row: Subscriber, nonce: str) -> bool:
    """Apply the request with ``nonce``; False when none waits (confirmed already, or
    replaced): nothing changes."""
    return subscribers.confirm_request(engine, int(row.id or 0), nonce)


def update_preferences(
    engine: Engine, row: Subscriber, interests: Sequence[str], options: dict[str, Any]
) -> None:
    """A reader's new interests and options, from their manage page (checked already)."""
    wanted = SubscriptionPatch(interests=list(interests), **options)
    subscribers.update_preferences(engine, int(row.id or 0), wanted)


def set_paused(engine: Engine, row: Subscriber, paused: bool) -> str | None:
    """Pause an active reader or resume a paused one; the status after."""
    return subscribers.set_paused(engine, int(row.id or 0), paused)


def export_reader(engine: Engine, row: Subscriber) -> dict[str, Any]:
    """Everything stored about a reader, as JSON-ready data."""
    with reading(engine) as conn:
        data = subscribers.export_subscriber(conn, int(row.id or 0))
        conn.rollback()
    return data
