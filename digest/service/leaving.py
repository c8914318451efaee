"""A reader leaving: unsubscribe or delete, and the copies on disk that go with them.

The store is not the only place a reader's data lies: a ``file://`` transport keeps every
email (address, interests, working links) as an ``.eml`` file, and ``feed_files = all``
writes their private feed to ``feeds/private/``. Whoever handles the leaving (the web
front, usually) removes what this host can reach at once; every run sweeps both folders
again (:func:`digest.deliver.mail_files.sweep_mail`, and the private feeds as it publishes
them), so copies on another host, or written by a run that was under way, go too.

A deleted reader's feed name is remembered (a signature, nothing about the person), so
their live private feed answers 410 Gone rather than 404.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import Engine

from digest.deliver.mail_files import mail_folder, remove_mail_of, sweep_mail
from digest.feeds.publish import remove_private_feed
from digest.settings import Settings
from digest.store.engine import reading, transaction
from digest.store.models import Subscriber
from digest.store.subscribers import end_feed, erase_subscriber, stored_addresses, unsubscribe
from digest.tokens import feed_name

log = logging.getLogger("digest.run")


@dataclass(frozen=True)
class Copies:
    """Where copies of readers' data lie on this host: the file outbox (None: mail goes out
    by SMTP and none stays), the feeds folder, and the site's keys (the signing one first),
    whose names a private feed may have been written under."""

    mail: Path | None
    feeds: Path
    keys: tuple[bytes, ...]

    @classmethod
    def of(cls, settings: Settings, keys: tuple[bytes, ...]) -> Copies:
        """The copies the settings make, private feeds named under ``keys``."""
        return cls(mail_folder(settings.mail_transport), settings.feeds_dir, keys)

    def feed_names(self, row: Subscriber) -> list[str]:
        """The names a reader's private feed has had under each of the site's keys."""
        return [feed_name(key, int(row.id or 0), row.token_salt) for key in self.keys]


def _remove(copies: Copies, address: str | None, feeds: list[str]) -> None:
    """Remove what this host holds; a folder we cannot reach is left to the next run."""
    with contextlib.suppress(OSError):
        for feed in feeds:
            remove_private_feed(copies.feeds, feed)
        if address is not None and copies.mail is not None:
            remove_mail_of(copies.mail, address)


def delete_reader(engine: Engine, copies: Copies, row: Subscriber, now: datetime) -> bool:
    """Erase a reader, their outbox, votes, mail files and private feed; False when there
    was no such reader."""
    ident = int(row.id or 0)
    feeds = copies.feed_names(row)
    with transaction(engine) as conn:
        gone = erase_subscriber(conn, ident)
        if gone:
            for feed in feeds:
                end_feed(conn, feed, now)
    _remove(copies, row.email, feeds)
    return gone


def unsubscribe_reader(engine: Engine, copies: Copies, row: Subscriber) -> str | None:
    """Stop all mail to a reader and take their private feed down; the status after (None:
    no such reader). Their emails stay: the history is theirs to delete."""
    status = unsubscribe(engine, int(row.id or 0))
    if status is not None:
        take_feed_down(copies, row)
    return status


def take_feed_down(copies: Copies, row: Subscriber) -> None:
    """Remove the private feed files of a reader who left (however they left)."""
    _remove(copies, None, copies.feed_names(row))


def sweep_mail_files(engine: Engine, copies: Copies) -> int:
    """Remove the file outbox's mail of everyone the store no longer holds; how many went."""
    if copies.mail is None:
        return 0
    # a file written after this moment may be a new reader's, unknown to the read below
    started = time.time()
    with reading(engine) as conn:
        addresses = stored_addresses(conn)
        conn.rollback()
    removed = sweep_mail(copies.mail, addresses, before=started)
    if removed:
        log.info("mail of deleted readers removed", extra={"files": removed})
    return removed
