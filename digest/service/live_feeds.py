"""Feeds built from the store on request: the public feed, a reader's private feed, a
search feed; and what each depends on, so the web front builds one again only when that
changed.

Each is built by the same code as the feed files (``digest.feeds``). A private feed's name
is ``feed_name(key, id, salt)``: ``FeedNames`` maps names to readers, built from every
reader's salt and rebuilt on a miss at most every ``REBUILD_SECONDS``; a name found is
checked against the reader's current salt and status.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy.engine import Engine

from digest.feeds.publish import GLOBAL_FEED as GLOBAL_FEED  # the public feed's name
from digest.feeds.publish import (
    PUBLIC_DESCRIPTION,
    private_description,
    private_items,
    public_items,
    site_of,
)
from digest.feeds.publish import FeedSite as FeedSite  # what a site's feeds say of it
from digest.feeds.render import FeedItem, make_feed
from digest.feeds.render import FeedKind as FeedKind  # atom or rss, as a feed's address says
from digest.present.views import Links, paper_view
from digest.rank.types import hits_to_json
from digest.service.papers import cached_stats, rank_lock
from digest.service.preview import search_store
from digest.settings import Settings
from digest.store import papers
from digest.store.engine import reading
from digest.store.outbox import feed_state
from digest.store.subscribers import SUPPRESSED, feed_ended, feed_salts
from digest.tokens import Keys, check_feed_name, each_key, feed_name

REBUILD_SECONDS = 5.0  # an unknown name rebuilds the name index at most this often
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)  # the "updated" of a feed with no entries yet


@dataclass(frozen=True)
class Built:
    """A feed just built: its validator (the hash of what it says), its newest entry, its body."""

    etag: str
    last_modified: datetime | None
    body: bytes


class FeedNames:
    """Private feed name → subscriber id, for every subscriber (whatever their status: the
    feed of one who left answers 410)."""

    def __init__(self, keys: Keys, clock: Callable[[], float] = time.monotonic) -> None:
        self.keys = each_key(keys)  # a feed linked before the key changed is found too
        self.clock = clock
        self._names: dict[str, int] = {}
        self._built = -REBUILD_SECONDS * 2
        self._lock = threading.Lock()

    def find(self, engine: Engine, name: str) -> int | None:
        """The subscriber whose feed is ``name``; an unknown name rebuilds the index when
        the last build is older than ``REBUILD_SECONDS``."""
        found = self._names.get(name)
        if found is not None:
            return found
        with self._lock:
            found = self._names.get(name)  # built by another thread meanwhile
            if found is None and self.clock() - self._built >= REBUILD_SECONDS:
                self.rebuild(engine)
                found = self._names.get(name)
        return found

    def rebuild(self, engine: Engine) -> None:
        """Name every subscriber's feed again."""
        with reading(engine) as conn:
            salts = feed_salts(conn)
            conn.rollback()
        self._names = {
            feed_name(key, ident, salt): ident
            for key in self.keys
            for ident, (salt, _) in salts.items()
        }
        self._built = self.clock()


def feed_site(engine: Engine, settings: Settings) -> FeedSite:
    """What every feed of the site says about the site (kept by the caller: it does not change)."""
    return site_of(
        engine, base_url=settings.base_url, site_name=settings.site_name, limit=settings.feed_items
    )


def latest_ingest(engine: Engine) -> int:
    """The newest ingest: what the public and search feeds depend on."""
    return papers.latest_ingest(engine)


def _built(
    site: FeedSite, path: str, kind: FeedKind, title: str, description: str
) -> Callable[[list[FeedItem]], Built]:
    def built(items: list[FeedItem]) -> Built:
        newest = max((item.arrived for item in items), default=None)
        meta = site.meta(path, kind, title, description, newest or EPOCH)
        feed = make_feed(meta, items, kind=kind, limit=site.limit)
        return Built(feed.hash[:32], newest, feed.render())

    return built


def public_feed(engine: Engine, site: FeedSite, kind: FeedKind) -> Built:
    """``papers.atom`` (or ``.rss``): papers as they first appear."""
    make = _built(site, GLOBAL_FEED, kind, "new papers", PUBLIC_DESCRIPTION)
    with reading(engine) as conn, rank_lock:
        items = public_items(conn, site)
        conn.rollback()
        return make(items)


@dataclass(frozen=True)
class PrivateFeed:
    """A reader's private feed found by its name: whose, and what it depends on."""

    ident: int
    token_salt: str
    version: tuple[Hashable, ...]
    ingest: int = 0  # the store's newest ingest when it was looked up


def find_private_feed(
    engine: Engine, names: FeedNames, keys: Keys, name: str
) -> PrivateFeed | Literal["ended", "unknown"]:
    """The private feed named ``name``; "ended" when its reader unsubscribed or deleted
    their data, "unknown" when there is none (or its salt was rotated: an old link)."""
    ident = names.find(engine, name) if len(name) == 32 else None
    found = feed_state(engine, ident) if ident is not None else None
    if found is not None and not check_feed_name(keys, name, ident, found.token_salt):
        found = None  # the salt was rotated: an old link
    # a paused reader keeps their feed (what was sent stays theirs); one who left does not
    if ident is None or found is None or found.status not in ("active", "paused"):
        left = found is not None and found.status in SUPPRESSED
        if left or (found is None and len(name) == 32 and feed_ended(engine, name)):
            return "ended"
        return "unknown"
    version = ("private", ident, found.token_salt, found.last_sent, found.ingest)
    return PrivateFeed(ident, found.token_salt, version, found.ingest)


def private_feed(
    engine: Engine, site: FeedSite, key: bytes, feed: PrivateFeed, name: str, kind: FeedKind
) -> Built:
    """A reader's private feed: the papers of their digests, with their vote links."""
    links = Links(site.base_url, key, "")
    description = private_description(links, feed.ident, feed.token_salt)
    make = _built(site, f"private/{name}", kind, "papers for you", description)
    with reading(engine) as conn:
        voting = (links, {feed.ident: feed.token_salt})
        # the lock only while new papers are marked: most entries are made already
        found = private_items(
            conn, [feed.ident], site, voting, ingest=feed.ingest, marking=rank_lock
        )
        conn.rollback()
    return make(found[feed.ident])


def search_feed(
    engine: Engine,
    caches: dict[str, Any],
    site: FeedSite,
    query: str,
    kind: FeedKind,
    path: str,
) -> Built:
    """The store's best papers for one expression of the interest language (``path``: the
    feed's own address under ``/feeds/``). Raises ``InterestError`` for a malformed one."""
    with reading(engine) as conn:
        stats = cached_stats(caches, engine, conn)
        with rank_lock:
            ranked = search_store(conn, query, limit=site.limit, stats=stats, index=False)
            rows = papers.by_ids(conn, [r.paper_id for r in ranked])
            conn.rollback()
            items = [
                site.item(
                    rows[r.paper_id],
                    paper_view(rows[r.paper_id], r.score, hits_to_json(r.hits), site.base_url),
                    rows[r.paper_id].first_seen,
                )
                for r in ranked
            ]
    newest = max((item.arrived for item in items), default=None)
    title = f"papers about {query}"
    description = f"The store's best papers for the interest {query}."
    meta = site.meta("search", kind, title, description, newest or EPOCH)
    url = f"{site.base_url}/feeds/{path}"
    meta = replace(meta, self_url=url, feed_id=url)
    feed = make_feed(meta, items, kind=kind, limit=site.limit)
    return Built(feed.hash[:32], newest, feed.render())
