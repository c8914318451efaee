"""Subscribing with double opt-in, confirming, managing, and one-click unsubscribe.

Every link here carries a signed token (``digest.tokens``): confirmation links expire and
are bound to the one request they confirm; manage and unsubscribe links are bound to the
subscriber's salt. A GET never changes anything (mail scanners follow links): each change
is a button that POSTs, with a CSRF field, except the one-click unsubscribe of RFC 8058,
which a mail client POSTs without a cookie, the token being its authority.
"""

from __future__ import annotations

import functools
import json
import zoneinfo
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from digest import tokens
from digest.clock import as_utc
from digest.errors import DeliveryError, UsageError
from digest.service import readers
from digest.service.leaving import Copies, delete_reader, unsubscribe_reader
from digest.service.subscriptions import (
    InterestError,
    Subscriber,
    check_field,
    check_interests,
    check_token,
    normalize_email,
)
from digest.web.render import page
from digest.web.security import CSRF_FIELD, check_csrf
from digest.web.state import WebState, client_address, state_of

MAX_INTERESTS = 50
MAX_INTERESTS_CHARS = 20_000  # the whole field; one interest is held to 300 by the parser
# Subscribe (and resend) requests: per client address and per email address; and
# confirmation emails per address per day: all counted in the store, shared by every process.
CLIENT_LIMIT = (20, 3600.0)
EMAIL_LIMIT = (3, 3600.0)
CONFIRMS_PER_DAY = 5
ONE_CLICK = ("List-Unsubscribe", "One-Click")
_LABELS = {
    "max_items": "The number of papers",
    "min_score": "The score",
    "frequency": "This",
    "digest_hour": "The hour",
}
# The fields of the manage form besides the interests, as a reader fills them in.
OPTIONS = ("max_items", "min_score", "frequency", "digest_hour")
# Whatever could end a header or start another, or make one address a list; an apostrophe
# is fine (o'brien@example.org).
_HEADER_LIKE = frozenset('\r\n\t\x00:;,<>"\\')


@dataclass
class FormErrors:
    """What is wrong with a submitted form, field by field (each message names its fault)."""

    fields: dict[str, list[str]] = field(default_factory=dict)

    def add(self, name: str, message: str) -> None:
        self.fields.setdefault(name, []).append(message)

    def __bool__(self) -> bool:
        return bool(self.fields)


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _read_interests(text: str, errors: FormErrors) -> tuple[str, ...]:
    """Interests from a text area, one per line, each checked by the interest language."""
    if len(text) > MAX_INTERESTS_CHARS:
        errors.add("interests", f"This is longer than {MAX_INTERESTS_CHARS:,} characters.")
        return ()
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        errors.add("interests", "Write at least one interest.")
    if len(lines) > MAX_INTERESTS:
        errors.add("interests", f"At most {MAX_INTERESTS} interests, one per line.")
        return ()
    for number, line in lines:
        try:
            check_interests([line])
        except InterestError as exc:
            errors.add("interests", f"Line {number}: {exc.reason} at position {exc.position}.")
    return tuple(line for _, line in lines)


def _read_email(raw: str, errors: FormErrors) -> str:
    """A normalized address, or an error: anything that could make a second header (line
    breaks, a colon, a list) is refused before the address is even parsed."""
    if not raw.strip():
        errors.add("email", "Enter your email address.")
        return ""
    if any(c in _HEADER_LIKE for c in raw.strip()) or len(raw) > 254:
        errors.add("email", "Enter one plain email address, such as ada@example.org.")
        return ""
    try:
        return normalize_email(raw)
    except UsageError as exc:
        errors.add("email", f"This is not an address we can send to ({_reason(exc)}).")
        return ""


def _reason(exc: UsageError) -> str:
    return str(exc).rpartition(": ")[2].rstrip(".") or str(exc)


def _read_options(form: FormData, errors: FormErrors) -> dict[str, Any]:
    """The options and time zone from a form, each within its declared bounds (an empty
    field takes its default; an empty hour is none: the site's schedule)."""
    values: dict[str, Any] = {}
    for name in OPTIONS:
        raw = _text(form, name).strip()
        try:
            values[name] = check_field(name, raw or readers.default_of(name))
        except UsageError as exc:
            # "max_items ('0') must be from 1 to 1000": the reason, after the value
            errors.add(name, f"{_LABELS[name]} {str(exc).partition(') ')[2]}.")
    zone = _text(form, "timezone").strip()
    if zone and zone not in _zones():
        errors.add("timezone", "This is not a time zone we know; write one such as Europe/Berlin.")
    values["timezone"] = zone or None
    return values


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


async def _form(request: Request) -> FormData:
    try:
        return await request.form()
    except HTTPException:
        raise
    except Exception:  # a body that is no form at all
        raise HTTPException(400, "That form could not be read.") from None


def _zone_of(state: WebState, zone: str | None) -> str:
    return zone or state.settings.timezone


def _local(moment: datetime | None, zone: str) -> str:
    if moment is None:
        return ""
    return f"{as_utc(moment).astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M}"


# --- subscribe -----------------------------------------------------------------------


def subscribe_page(request: Request) -> Response:
    """The subscribe form alone; ``?interests=`` fills it (the front page's "Subscribe with
    these" after trying interests)."""
    interests = request.query_params.get("interests", "")[:MAX_INTERESTS_CHARS]
    form = {"interests": interests} if interests.strip() else {}
    return page(request, "subscribe.html", {"form": form, "errors": {}})


def _refused(request: Request, values: dict[str, str], errors: FormErrors) -> Response:
    return page(request, "subscribe.html", {"form": values, "errors": errors.fields}, status=422)


async def subscribe(request: Request) -> Response:
    """Keep a subscription request and send its confirmation email; the same answer whether
    or not the address is known."""
    state = state_of(request)
    form = await _form(request)
    check_csrf(request, state.verifying, form.get(CSRF_FIELD))
    if not await run_in_threadpool(
        state.allow, "subscribe-client", CLIENT_LIMIT, client_address(request)
    ):
        raise _too_many()
    errors = FormErrors()
    raw_email, raw_interests = _text(form, "email"), _text(form, "interests")
    email = _read_email(raw_email, errors)
    interests = _read_interests(raw_interests, errors)
    if errors:
        return _refused(request, {"email": raw_email, "interests": raw_interests}, errors)
    if not await run_in_threadpool(state.allow, "subscribe-email", EMAIL_LIMIT, email):
        raise _too_many()
    now = state.now()
    requested = await run_in_threadpool(
        readers.request_subscription,
        state.engine,
        email,
        interests,
        now=now,
        sends_allowed=CONFIRMS_PER_DAY,
    )
    if requested is None:
        raise _too_many()
    sent_page = page(
        request,
        "subscribe_sent.html",
        {"email": email, "interests": "\n".join(interests), "hours": state.settings.confirm_hours},
    )
    if requested.repeat:  # the email of the same request a moment ago is on its way
        return sent_page
    await run_in_threadpool(_forget_unconfirmed, state, now)
    try:
        await readers.send_confirmation_email(
            state.settings, state.engine, state.key, email, interests, requested, now
        )
    except DeliveryError:
        raise HTTPException(
            503, "The confirmation email could not be sent just now. Please try again later."
        ) from None
    return sent_page


def _forget_unconfirmed(state: WebState, now: datetime) -> None:
    """At most once an hour: drop the addresses whose request was never confirmed, once
    both its link and its resend count have run out."""
    last = state.caches.get("forgot_unconfirmed")
    if isinstance(last, datetime) and now - last < timedelta(hours=1):
        return
    state.caches["forgot_unconfirmed"] = now
    readers.forget_unconfirmed(state.engine, now, state.settings.confirm_hours)


def _too_many() -> HTTPException:
    return HTTPException(
        429,
        "Too many subscription requests from here or for this address. Please wait an hour"
        " and try again.",
        headers={"retry-after": "3600"},
    )


# --- confirm -------------------------------------------------------------------------


def _confirmation(state: WebState, token: str) -> tuple[str, Subscriber | None, str | None]:
    """What a confirmation link is: ready (with the nonce it confirms), done, expired or
    invalid."""
    return readers.confirmation(state.engine, state.verifying, token, state.now())


def _confirm_refusal(kind: str) -> HTTPException:
    if kind == "done":
        return HTTPException(
            409, "This subscription is already confirmed: there is nothing more to do."
        )
    if kind == "expired":
        return HTTPException(
            410,
            "This confirmation link has expired. Subscribe again on the front page and we"
            " will send you a new one.",
        )
    return HTTPException(
        404,
        "This confirmation link is not valid. Only the newest confirmation email works;"
        " you can subscribe again on the front page.",
    )


def confirm_page(request: Request) -> Response:
    """The confirmation link: one button that confirms (a GET changes nothing)."""
    state = state_of(request)
    kind, row, _ = _confirmation(state, request.path_params["token"])
    if kind != "ready" or row is None:
        raise _confirm_refusal(kind)
    return page(
        request, "confirm.html", {"email": row.email, "token": request.path_params["token"]}
    )


async def confirm(request: Request) -> Response:
    """Confirm: the request's settings apply, and digests start from the next listing."""
    state = state_of(request)
    form = await _form(request)
    check_csrf(request, state.verifying, form.get(CSRF_FIELD))
    kind, row, nonce = await run_in_threadpool(_confirmation, state, request.path_params["token"])
    if kind != "ready" or row is None or nonce is None:
        raise _confirm_refusal(kind)
    if not await run_in_threadpool(readers.confirm, state.engine, row, nonce):
        raise _confirm_refusal("done")
    manage = tokens.link_token(state.key, row.id, row.token_salt, purpose="manage")
    return page(request, "confirmed.html", {"email": row.email, "manage_token": manage})


# --- manage --------------------------------------------------------------------------


def _subscriber(state: WebState, token: str, purpose: str) -> Subscriber:
    row = check_token(state.engine, state.verifying, token, purpose)
    if row is None:
        raise HTTPException(
            404,
            "This link is not valid (it may be cut short, or the subscription was deleted)."
            " Use the newest link from one of your emails.",
        )
    return row


def _manage_context(
    state: WebState, row: Subscriber, token: str, form: dict[str, Any] | None = None
) -> dict[str, Any]:
    zone = _zone_of(state, row.timezone)
    choices = readers.choices_of(row)
    values = form or {
        **{name: "" if choices[name] is None else choices[name] for name in OPTIONS},
        "interests": "\n".join(choices["interests"]),
        "timezone": row.timezone or "",
    }
    return {
        "token": token,
        "email": row.email,
        "status": row.status,
        "form": values,
        "errors": {},
        "notice": "",
        "zone": zone,
        "site_zone": state.settings.timezone,
        "joined": _local(row.created_at, zone),
        "last_digest": _local(row.last_digest_at, zone),
        "unsubscribe_token": tokens.link_token(state.key, row.id, row.token_salt),
        # the private feed, served while digests are on or paused (it ends when they leave)
        "feed": (
            f"{state.settings.base_url}/feeds/private/"
            f"{tokens.feed_name(state.key, row.id, row.token_salt)}"
            if row.status in ("active", "paused")
            else None
        ),
    }


def manage_page(request: Request) -> Response:
    """A subscriber's settings, and the buttons to pause, export or delete."""
    state = state_of(request)
    token = request.path_params["token"]
    row = _subscriber(state, token, "manage")
    return page(request, "manage.html", _manage_context(state, row, token))


async def _manage_form(request: Request) -> tuple[WebState, Subscriber, str, FormData]:
    state = state_of(request)
    form = await _form(request)
    check_csrf(request, state.verifying, form.get(CSRF_FIELD))
    token = request.path_params["token"]
    row = await run_in_threadpool(_subscriber, state, token, "manage")
    return state, row, token, form


async def manage(request: Request) -> Response:
    """Save new interests and options; on any error nothing is saved."""
    state, row, token, form = await _manage_form(request)
    errors = FormErrors()
    interests = _read_interests(_text(form, "interests"), errors)
    options = _read_options(form, errors)
    if errors:
        shown = {name: _text(form, name) for name in ("interests", *OPTIONS, "timezone")}
        context = _manage_context(state, row, token, shown)
        context["errors"] = errors.fields
        return page(request, "manage.html", context, status=422)
    await run_in_threadpool(readers.update_preferences, state.engine, row, interests, options)
    row = await run_in_threadpool(_subscriber, state, token, "manage")
    context = _manage_context(state, row, token)
    context["notice"] = "Saved. Your next digest uses these settings."
    return page(request, "manage.html", context)


async def _pause_or_resume(request: Request, paused: bool) -> Response:
    state, row, token, _ = await _manage_form(request)
    await run_in_threadpool(readers.set_paused, state.engine, row, paused)
    row = await run_in_threadpool(_subscriber, state, token, "manage")
    context = _manage_context(state, row, token)
    if row.status == "paused":
        context["notice"] = "Paused: no digests until you resume."
    elif row.status == "active":
        context["notice"] = "Resumed: your next digest starts with the next new papers."
    return page(request, "manage.html", context)


async def pause(request: Request) -> Response:
    """Stop digests for now, keeping the settings."""
    return await _pause_or_resume(request, True)


async def resume(request: Request) -> Response:
    """Digests again, from the next listing on."""
    return await _pause_or_resume(request, False)


async def export(request: Request) -> Response:
    """Everything stored about the subscriber, as a JSON download."""
    state, row, _, _ = await _manage_form(request)
    data = await run_in_threadpool(readers.export_reader, state.engine, row)
    return Response(
        json.dumps(data, indent=2, ensure_ascii=False) + "\n",
        media_type="application/json",
        headers={
            "content-disposition": 'attachment; filename="my-digest-data.json"',
            "cache-control": "no-store",
        },
    )


def delete_page(request: Request) -> Response:
    """Ask once more before deleting."""
    state = state_of(request)
    token = request.path_params["token"]
    row = _subscriber(state, token, "manage")
    return page(request, "delete.html", {"email": row.email, "token": token})


async def delete(request: Request) -> Response:
    """Erase the subscriber, their outbox, mail files and private feed: gone, not a status."""
    state, row, _, _ = await _manage_form(request)
    copies = Copies.of(state.settings, state.verifying)
    await run_in_threadpool(delete_reader, state.engine, copies, row, state.now())
    return page(request, "deleted.html", {"email": row.email})


# --- unsubscribe ---------------------------------------------------------------------


def unsubscribe_page(request: Request) -> Response:
    """One button; following the link alone changes nothing."""
    state = state_of(request)
    token = request.path_params["token"]
    row = _subscriber(state, token, "unsubscribe")
    done = row.status in ("unsubscribed", "bounced")
    return page(request, "unsubscribe.html", _unsubscribe_context(state, row, token, done))


def _unsubscribe_context(
    state: WebState, row: Subscriber, token: str, done: bool
) -> dict[str, Any]:
    manage = tokens.link_token(state.key, row.id, row.token_salt, purpose="manage")
    return {"email": row.email, "token": token, "done": done, "manage_token": manage}


async def unsubscribe_now(request: Request) -> Response:
    """RFC 8058 one-click: ``List-Unsubscribe=One-Click`` POSTed by a mail client (or the
    page's button) unsubscribes at once; repeating it changes nothing more."""
    state = state_of(request)
    form = await _form(request)
    if form.get(ONE_CLICK[0]) != ONE_CLICK[1]:
        raise HTTPException(400, "Use the Unsubscribe button on the page of this link.")
    token = request.path_params["token"]
    row = await run_in_threadpool(_subscriber, state, token, "unsubscribe")
    await run_in_threadpool(
        unsubscribe_reader, state.engine, Copies.of(state.settings, state.verifying), row
    )
    return page(request, "unsubscribe.html", _unsubscribe_context(state, row, token, True))


routes: list[BaseRoute] = [
    Route("/subscribe", subscribe_page, methods=["GET", "HEAD"]),
    Route("/subscribe", subscribe, methods=["POST"]),
    Route("/confirm/{token}", confirm_page, methods=["GET", "HEAD"]),
    Route("/confirm/{token}", confirm, methods=["POST"]),
    Route("/manage/{token}", manage_page, methods=["GET", "HEAD"]),
    Route("/manage/{token}", manage, methods=["POST"]),
    Route("/manage/{token}/pause", pause, methods=["POST"]),
    Route("/manage/{token}/resume", resume, methods=["POST"]),
    Route("/manage/{token}/export", export, methods=["POST"]),
    Route("/manage/{token}/delete", delete_page, methods=["GET", "HEAD"]),
    Route("/manage/{token}/delete", delete, methods=["POST"]),
    Route("/unsubscribe/{token}", unsubscribe_page, methods=["GET", "HEAD"]),
    Route("/unsubscribe/{token}", unsubscribe_now, methods=["POST"]),
]
