"""Each setting's own check: what its type and bounds do not say (an address that is
no address, a URL of the wrong scheme, a time zone nobody knows), and ``Rule``, the
``Annotated`` metadata by which a field of ``Settings`` names its check and a secret.

A check takes the value and returns why it is refused, or None.
"""

from __future__ import annotations

import ipaddress
import re
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import getaddresses
from typing import Any
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email
from pydantic import Field


def positive(value: Any) -> str | None:
    return None if value > 0 else "must be greater than 0"


def timezone(value: Any) -> str | None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return "is not a known time zone (try UTC or Europe/Berlin)"
    return None


def _url_problem(value: str) -> str | None:
    """Why ``value`` is no usable URL (a bracket left open, a port out of range), or None."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- reading it is the check
    except ValueError:
        return "is not a valid URL"
    return None


def transport(value: Any) -> str | None:
    if not value:
        return None
    problem = _url_problem(value)
    if problem:
        return problem
    parts = urlsplit(value)
    if parts.scheme not in {"file", "smtp", "smtps"}:
        return "must be a file://, smtp:// or smtps:// URL"
    if parts.scheme != "file" and not parts.hostname:
        return "needs a host, as in smtp://user:pass@mail.example.org:587"
    return None


def http_url(value: Any) -> str | None:
    problem = _url_problem(value)
    if problem:
        return problem
    if urlsplit(value).scheme not in {"http", "https"} or not urlsplit(value).hostname:
        return "must be an http:// or https:// URL"
    return None


def log_format(value: Any) -> str | None:
    return None if value in {"auto", "json", "text"} else "must be auto, json or text"


def feed_files(value: Any) -> str | None:
    return None if value in {"auto", "all", "public"} else "must be auto, all or public"


def token(value: Any) -> str | None:
    if value and len(str(value)) < 16:
        return "must be empty or at least 16 characters (try: openssl rand -hex 24)"
    return None


DEFAULT_SCHEDULE = "0 7 * * *"


def schedule(value: Any) -> str | None:
    if value == DEFAULT_SCHEDULE:  # known good: checking it would load APScheduler every time
        return None
    from digest.cron import schedule_problem  # APScheduler's parser, only for a schedule given

    return schedule_problem(value)


def shared_store(url: str) -> bool:
    """A PostgreSQL URL: a store several hosts may share (SQLite's is one machine's file)."""
    return url.startswith("postgres")


def database(value: Any) -> str | None:
    if not value:
        return None
    from digest.store.engine import url_problem  # SQLAlchemy, only for a URL given

    return url_problem(value)


# Special-use names a From line may still carry: a mail catcher on this machine takes them.
_LOCAL_MAIL_DOMAINS = frozenset({"localhost", "localdomain", "local", "test"})


def mail_from(value: Any) -> str | None:
    """An address the message builder and every SMTP server take, with or without a name."""
    if any(char in value for char in "\r\n\0"):
        return "must be one line"
    found = getaddresses([value])
    if len(found) != 1 or "@" not in found[0][1]:
        return "is not an email address (write digest@example.org or 'Paper Digest <digest@example.org>')"
    local, _, domain = found[0][1].rpartition("@")
    checked = f"{local}@example.org" if domain.lower() in _LOCAL_MAIL_DOMAINS else found[0][1]
    return _address_fault(checked, globally_deliverable=False)


def _address_fault(address: str, *, globally_deliverable: bool = True) -> str | None:
    """What keeps ``address`` from being one digest can send to or from, or None."""
    try:
        result = validate_email(
            address, check_deliverability=False, globally_deliverable=globally_deliverable
        )
    except EmailNotValidError as exc:
        return f"is not a valid email address: {exc}"
    if result.ascii_email is None:
        return "needs ASCII before the @ (digest does not send SMTPUTF8 mail)"
    return None


MIN_SECRET_KEY = 32


def secret_key(value: Any) -> str | None:
    # It signs every unsubscribe, manage and feed link: a short key can be found by trying
    # keys offline against one link a reader forwards. 32 characters, as `digest init` makes.
    if value and len(value) < MIN_SECRET_KEY:
        return (
            f"must be at least {MIN_SECRET_KEY} characters (it signs every link; make one with"
            " `python -c 'import secrets; print(secrets.token_hex(32))'`, or leave it empty to"
            " have one generated)"
        )
    return None


def one_line(value: Any) -> str | None:
    if not value.strip():
        return "must not be empty"
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        return "must be one line without control characters"
    return None


def path(value: Any) -> str | None:
    return "must not contain a NUL character" if "\0" in str(value) else None


def host(value: Any) -> str | None:
    """An address to bind to: an IP address or a host name (no scheme, no port)."""
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    labels = value.rstrip(".").split(".")
    if value and all(_HOST_LABEL.fullmatch(label) for label in labels):
        return None
    return "must be an address or a host name, such as 127.0.0.1, :: or localhost (no port)"


_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def proxies(value: Any) -> str | None:
    """The proxies uvicorn trusts: addresses or networks; it does not look names up."""
    for item in (part.strip() for part in value.split(",")):
        if item == "*":
            continue
        try:
            ipaddress.ip_network(item) if "/" in item else ipaddress.ip_address(item)
        except ValueError:
            return f"must be addresses or networks separated by commas (or *); {item!r} is neither"
    return None


def sources(value: Any) -> str | None:
    for source in value:
        if "://" not in source:
            if not source.strip() or "\0" in source:
                return "must be http(s):// or file:// URLs or paths, none empty"
            continue
        problem = _url_problem(source)
        if problem or urlsplit(source).scheme not in {"http", "https", "file"}:
            return f"must be http://, https:// or file:// URLs or paths; {source!r} is not"
    return None


def subscriber_email(value: Any) -> str | None:
    return _address_fault(value.strip())


def interests(value: Any) -> str | None:
    from digest.rank.query import InterestError, parse_kept  # only for [[subscribers]]

    for text in value:
        try:
            parse_kept(text)
        except InterestError as exc:
            return f"holds a bad interest: {exc}"
    return None


@dataclass(frozen=True)
class Rule:
    """What a setting's type and bounds do not say (``Annotated`` metadata): a secret, a check."""

    secret: bool = False
    check: Callable[[Any], str | None] | None = None


def within(low: float, high: float) -> Any:
    """Both bounds inclusive: a typo of a few digits must not ask for 3 GB of memory."""
    return Field(ge=low, le=high)
