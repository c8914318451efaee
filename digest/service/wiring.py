"""What the settings make of the outside world for a run or a web request: who the mail
comes from, how links are made and signed, and the mail transport."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Engine

from digest.deliver.message import Sender
from digest.deliver.pace import SharedPace
from digest.deliver.transports import Transport, open_transport
from digest.present.views import Links
from digest.service.keys import site_keys
from digest.settings import Settings
from digest.store.counters import SharedLimit as SharedLimit  # the web keeps its limits by name


def sender_of(settings: Settings) -> Sender:
    """Who digests come from, from the settings."""
    host = settings.base_url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    return Sender(
        from_addr=settings.mail_from,
        site_name=settings.site_name,
        list_id=f"digest.{host}",  # RFC 2919: the id alone; the builder adds the site name
        base_url=settings.base_url,
    )


def links_of(settings: Settings, engine: Engine, now: datetime) -> Links:
    """How links in emails and feeds are made, from the settings and the site's key."""
    return Links(settings.base_url, site_keys(settings, engine, now).signing, settings.mail_from)


def transport_of(settings: Settings, engine: Engine) -> Transport:
    """The configured mail transport, sending at most ``smtp_rate`` a second together with
    every other sender of the store (``deliver.pace``), on this host and the others."""
    return open_transport(
        settings.mail_transport,
        connections=settings.smtp_connections,
        pace=SharedPace(engine, settings.smtp_rate),
        timeout=settings.smtp_timeout,
        retries=settings.smtp_retries,
    )


def shared_limit(engine: Engine, name: str, events: int, seconds: float) -> SharedLimit:
    """The rate limit ``name`` (``events`` per ``seconds`` per key), counted in the store so
    that every process and host of the site shares it."""
    return SharedLimit(engine, name, events, seconds)
