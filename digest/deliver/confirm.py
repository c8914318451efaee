"""The confirmation email of a web subscription (double opt-in): plain data in, the RFC 5322
message as bytes out, in the digest's look; and handing it to the configured transport.

Unlike a digest it carries no List-Unsubscribe: it goes out once, because someone asked.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import importlib.resources
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, parseaddr
from typing import Any
from zoneinfo import ZoneInfo

import css_inline
import jinja2

from digest.clock import as_utc
from digest.deliver.headers import format_address
from digest.deliver.message import Sender
from digest.deliver.transports import Transport
from digest.present.paper import clean_header


@dataclass(frozen=True)
class ConfirmView:
    """One confirmation email: who asked, for what, and the link that confirms it."""

    to: str
    interests: Sequence[str]
    confirm_url: str
    expires: datetime  # when the link stops working
    timezone: str  # the zone the reader reads ``expires`` in


@functools.cache
def _templates() -> tuple[jinja2.Template, jinja2.Template]:
    package = importlib.resources.files("digest.templates")
    css = package.joinpath("digest.css").read_text(encoding="utf-8")
    source = package.joinpath("confirm.html").read_text(encoding="utf-8")
    inliner = css_inline.CSSInliner(
        keep_at_rules=True, minify_css=True, load_remote_stylesheets=False
    )
    source = inliner.inline(source.replace("/* digest.css */", css))
    common: dict[str, Any] = {
        "trim_blocks": True,
        "lstrip_blocks": True,
        "keep_trailing_newline": True,
    }
    html = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, **common)
    text = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined, **common)
    return (
        html.from_string(source),
        text.from_string(package.joinpath("confirm.txt").read_text(encoding="utf-8")),
    )


def subject_for(sender: Sender) -> str:
    """``Confirm your subscription to Paper digest``."""
    return f"Confirm your subscription to {clean_header(sender.site_name)}"


def build_confirmation(view: ConfirmView, sender: Sender, now: datetime, key: bytes) -> bytes:
    """The confirmation message: text and HTML parts, headers, a Message-ID of its own."""
    local = as_utc(view.expires).astimezone(ZoneInfo(view.timezone))
    context = {
        "subject": subject_for(sender),
        "heading": "Please confirm your subscription",
        "site_name": clean_header(sender.site_name),
        "site_url": clean_header(sender.base_url),
        "interests": [clean_header(interest) for interest in view.interests],
        "confirm_url": clean_header(view.confirm_url),
        "expires": f"{local:%Y-%m-%d %H:%M} ({view.timezone})",
    }
    html, text = _templates()
    message = EmailMessage(policy=SMTP)
    message["From"] = format_address(sender.from_addr)
    message["To"] = format_address(view.to)
    message["Subject"] = context["subject"]
    message["Date"] = format_datetime(as_utc(now))
    message["Message-ID"] = confirmation_id(key, view.confirm_url, sender.from_addr)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text.render(context), cte="quoted-printable")
    message.add_alternative(html.render(context), subtype="html", cte="quoted-printable")
    return message.as_bytes()


def confirmation_id(key: bytes, confirm_url: str, mail_from: str) -> str:
    """The Message-ID of a confirmation: one per link, so a retried send is the same message."""
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "localhost"
    tag = hmac.new(key, f"confirm:{confirm_url}".encode(), hashlib.sha256).hexdigest()[:20]
    return f"<confirm.{tag}@{domain}>"


async def send_confirmation(
    transport: Transport, view: ConfirmView, sender: Sender, now: datetime, key: bytes
) -> None:
    """Build the confirmation and hand it to ``transport`` (a DeliveryError when it fails)."""
    message = build_confirmation(view, sender, now, key)
    async with transport:
        await transport.send(
            parseaddr(sender.from_addr)[1],
            view.to,
            message,
            confirmation_id(key, view.confirm_url, sender.from_addr),
        )
