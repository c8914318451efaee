"""Feeds served live from the store: the public feed, private feeds and search feeds.

Each feed is built by the same code as the feed files (``digest.feeds``) and answered
with an ``ETag`` (the hash of what it says) and a ``Last-Modified`` (its newest entry),
so a reader that asks again with ``If-None-Match`` or ``If-Modified-Since`` gets a
``304``. What a feed says depends on little: the newest ingest (the public and search
feeds) and, for a private feed, the subscriber and when they were last sent a digest.
That is looked up in one small query per request and is the key of an in-process
cache, so a feed reader polling every 15 minutes costs one query and no rendering.

A private feed's name is ``feed_name(key, id, salt)``: an in-memory index maps names to
subscribers, built from every subscriber's salt and rebuilt on a miss at most every
``REBUILD_SECONDS``; a name found is checked against the subscriber's current salt and
status, so a rotated salt's feed is gone at once (404), and an unsubscribed reader's
answers 410 Gone, as does a deleted reader's (its name is kept in the store).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from urllib.parse import quote

from sqlalchemy.engine import Engine
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from digest.feeds.publish import (
    GLOBAL_FEED,
    PUBLIC_DESCRIPTION,
    FeedSite,
    private_description,
    private_items,
    public_items,
    site_of,
)
from digest.feeds.render import FeedItem, FeedKind, make_feed
from digest.present.views import Links, paper_view
from digest.rank.query import InterestError
from digest.rank.types import hits_to_json
from digest.service.preview import search_store
from digest.store import papers
from digest.store.engine import reading
from digest.store.outbox import feed_state
from digest.store.subscribers import SUPPRESSED, feed_ended, feed_salts
from digest.tokens import Keys, check_feed_name, each_key, feed_name
from digest.web.browse import cached_stats, interest_refusal, rank_lock
from digest.web.render import page
from digest.web.state import WebState, state_of

REBUILD_SECONDS = 5.0  # an unknown name rebuilds the name index at most this often
BODY_CACHE_BYTES = 64 * 1024 * 1024  # rendered feeds kept, newest used first
VALIDATORS_KEPT = 200_000  # feeds whose ETag is remembered (a few hundred bytes each)
MAX_QUERY = 500  # characters of a search feed's interest
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)  # the "updated" of a feed with no entries yet

MEDIA_TYPES = {"atom": "application/atom+xml", "rss": "application/rss+xml"}


@dataclass(frozen=True)
class Rendered:
    """A feed as last built: what it depended on, its validators, and (maybe) its body."""

    version: Hashable
    etag: str
    last_modified: datetime | None
    body: bytes | None


class FeedCache:
    """Validators of every feed served lately, and the bodies of the most recent ones
    (bounded in bytes). Thread-safe: handlers run in a thread pool."""

    def __init__(self, body_bytes: int = BODY_CACHE_BYTES) -> None:
        self.body_bytes = body_bytes
        self._validators: dict[str, Rendered] = {}
        self._bodies: OrderedDict[str, tuple[Hashable, bytes]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, path: str, version: Hashable) -> Rendered | None:
        """The feed at ``path`` if it was built for ``version`` (its body when still kept)."""
        with self._lock:
            found = self._validators.get(path)
            if found is None or found.version != version:
                return None
            body = self._bodies.get(path)
            if body is not None and body[0] == version:
                self._bodies.move_to_end(path)
                return Rendered(version, found.etag, found.last_modified, body[1])
            return Rendered(version, found.etag, found.last_modified, None)

    def put(self, path: str, rendered: Rendered) -> None:
        """Remember a feed just built."""
        assert rendered.body is not None
        with self._lock:
            if len(self._validators) >= VALIDATORS_KEPT and path not in self._validators:
                self._validators.clear()
            self._validators[path] = Rendered(
                rendered.version, rendered.etag, rendered.last_modified, None
            )
            old = self._bodies.pop(path, None)
            if old is not None:
                self._size -= len(old[1])
            self._bodies[path] = (rendered.version, rendered.body)
            self._size += len(rendered.body)
            while self._size > self.body_bytes and self._bodies:
                _, (_, dropped) = self._bodies.popitem(last=False)
                self._size -= len(dropped)


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


def _caches(state: WebState) -> tuple[FeedCache, FeedNames]:
    cache = state.caches.get("feeds")
    if cache is None:
        cache = state.caches.setdefault("feeds", FeedCache())
    names = state.caches.get("feed_names")
    if names is None or names.keys != state.verifying:  # new keys: name the feeds again
        names = state.caches["feed_names"] = FeedNames(state.verifying)
    return cache, names


def _site(state: WebState) -> FeedSite:
    site = state.caches.get("feed_site")
    if site is None:
        settings = state.settings
        site = state.caches["feed_site"] = site_of(
            state.engine,
            base_url=settings.base_url,
            site_name=settings.site_name,
            limit=settings.feed_items,
        )
    assert isinstance(site, FeedSite)
    return site


def _kind(request: Request) -> FeedKind:
    kind = request.path_params["kind"]
    if kind not in MEDIA_TYPES:
        raise HTTPException(404, "There is no feed at this address.")
    return "atom" if kind == "atom" else "rss"


def _quoted(etag: str) -> str:
    return f'"{etag}"'


def _not_modified(request: Request, rendered: Rendered) -> bool:
    """Whether the client's copy is current (RFC 9110: If-None-Match wins over
    If-Modified-Since)."""
    match = request.headers.get("if-none-match")
    if match is not None:
        tags = {tag.strip().removeprefix("W/") for tag in match.split(",")}
        return "*" in tags or _quoted(rendered.etag) in tags
    since = request.headers.get("if-modified-since")
    if since is None or rendered.last_modified is None:
        return False
    try:
        when = parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return rendered.last_modified.replace(microsecond=0) <= when


def _answer(
    request: Request,
    path: str,
    version: Hashable,
    kind: FeedKind,
    build: Callable[[], Rendered],
    *,
    private: bool,
) -> Response:
    """The feed at ``path`` for ``version``: 304, the cached body, or built now."""
    cache, _ = _caches(state_of(request))
    rendered = cache.get(path, version)
    if rendered is not None and _not_modified(request, rendered):
        return _response(rendered, kind, private=private, status=304)
    if rendered is None or rendered.body is None:
        rendered = build()
        cache.put(path, rendered)
        if _not_modified(request, rendered):
            return _response(rendered, kind, private=private, status=304)
    return _response(rendered, kind, private=private)


def _response(rendered: Rendered, kind: FeedKind, *, private: bool, status: int = 200) -> Response:
    headers = {
        "etag": _quoted(rendered.etag),
        # a private feed's address is its secret: shared caches keep no copy
        "cache-control": "private, max-age=300" if private else "public, max-age=300",
    }
    if rendered.last_modified is not None:
        headers["last-modified"] = format_datetime(rendered.last_modified, usegmt=True)
    if status == 304:
        return Response(status_code=304, headers=headers)
    return Response(
        rendered.body,
        media_type=f"{MEDIA_TYPES[kind]}; charset=utf-8",
        headers=headers,
    )


def _build(
    version: Hashable, site: FeedSite, path: str, kind: FeedKind, title: str, description: str
) -> Callable[[list[FeedItem]], Rendered]:
    def rendered(items: list[FeedItem]) -> Rendered:
        newest = max((item.arrived for item in items), default=None)
        meta = site.meta(path, kind, title, description, newest or EPOCH)
        feed = make_feed(meta, items, kind=kind, limit=site.limit)
        return Rendered(version, feed.hash[:32], newest, feed.render())

    return rendered


def public_feed(request: Request) -> Response:
    """``/feeds/papers.atom`` and ``.rss``: papers as they first appear."""
    state = state_of(request)
    kind = _kind(request)
    site = _site(state)
    version = ("public", papers.latest_ingest(state.engine))
    make = _build(version, site, GLOBAL_FEED, kind, "new papers", PUBLIC_DESCRIPTION)

    def build() -> Rendered:
        with reading(state.engine) as conn, rank_lock:
            items = public_items(conn, site)
            conn.rollback()
            return make(items)

    return _answer(request, f"{GLOBAL_FEED}.{kind}", version, kind, build, private=False)


def private_feed(request: Request) -> Response:
    """``/feeds/private/{name}.atom`` and ``.rss``: the papers of a subscriber's digests."""
    state = state_of(request)
    kind = _kind(request)
    name = request.path_params["name"]
    _, names = _caches(state)
    ident = names.find(state.engine, name) if len(name) == 32 else None
    found = feed_state(state.engine, ident) if ident is not None else None
    if found is not None and not check_feed_name(state.verifying, name, ident, found.token_salt):
        found = None  # the salt was rotated: an old link
    # a paused reader keeps their feed (what was sent stays theirs); one who left does not
    if ident is None or found is None or found.status not in ("active", "paused"):
        left = found is not None and found.status in SUPPRESSED
        if left or (found is None and len(name) == 32 and feed_ended(state.engine, name)):
            raise HTTPException(
                410,
                "This feed has ended: its reader unsubscribed or deleted their data."
                " Subscribe again on the front page for a new one.",
            )
        raise HTTPException(
            404,
            "There is no feed at this address: the link may have been replaced,"
            " or the subscription ended.",
        )
    site = _site(state)
    key = state.key
    # the key too: a feed built before the key changed carries links it signed
    version = ("private", ident, found.token_salt, found.last_sent, found.ingest, key)
    path = f"private/{name}"
    links = Links(site.base_url, key, "")
    description = private_description(links, ident, found.token_salt)
    make = _build(version, site, path, kind, "papers for you", description)

    def build() -> Rendered:
        with reading(state.engine) as conn, rank_lock:
            voting = (links, {ident: found.token_salt})
            items = private_items(conn, [ident], site, voting)[ident]
            conn.rollback()
            return make(items)

    return _answer(request, f"{path}.{kind}", version, kind, build, private=True)


def search_feed(request: Request) -> Response:
    """``/feeds/search.atom?q=INTEREST`` (and ``.rss``): the store's best papers for one
    expression of the interest language, newest first."""
    state = state_of(request)
    kind = _kind(request)
    query = request.query_params.get("q", "").strip()
    if not query:
        raise HTTPException(400, "A search feed needs an interest: /feeds/search.atom?q=...")
    if len(query) > MAX_QUERY:
        raise HTTPException(400, f"That interest is longer than {MAX_QUERY} characters.")
    site = _site(state)
    version = ("search", query, papers.latest_ingest(state.engine))
    path = f"search.{kind}?q={quote(query, safe='')}"
    title = f"papers about {query}"
    description = f"The store's best papers for the interest {query}."

    def build() -> Rendered:
        with reading(state.engine) as conn:
            stats = cached_stats(state, conn)
            with rank_lock:
                try:
                    ranked = search_store(conn, query, limit=site.limit, stats=stats, index=False)
                except InterestError as exc:
                    raise HTTPException(400, interest_refusal(exc)) from None
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
        meta = site.meta("search", kind, title, description, newest or EPOCH)
        url = f"{site.base_url}/feeds/{path}"
        meta = replace(meta, self_url=url, feed_id=url)
        feed = make_feed(meta, items, kind=kind, limit=site.limit)
        return Rendered(version, feed.hash[:32], newest, feed.render())

    return _answer(request, path, version, kind, build, private=False)


SEARCH_EXAMPLES = ('"language model" reasoning', "diffus* -survey", "title:speech")


def feeds_page(request: Request) -> Response:
    """``/feeds``: what the feeds are (public, private, search), their links, and how to add
    one to a feed reader: the site's "Feeds" link opens this, not raw XML."""
    base_url = state_of(request).settings.base_url
    examples = [
        {
            "query": query,
            "atom": f"{base_url}/feeds/search.atom?q={quote(query, safe='')}",
            "rss": f"{base_url}/feeds/search.rss?q={quote(query, safe='')}",
        }
        for query in SEARCH_EXAMPLES
    ]
    return page(request, "feeds.html", {"base_url": base_url, "examples": examples})


routes: list[BaseRoute] = [
    Route("/feeds", feeds_page, methods=["GET", "HEAD"]),
    Route("/feeds/papers.{kind}", public_feed, methods=["GET", "HEAD"]),
    Route("/feeds/private/{name}.{kind}", private_feed, methods=["GET", "HEAD"]),
    Route("/feeds/search.{kind}", search_feed, methods=["GET", "HEAD"]),
]
