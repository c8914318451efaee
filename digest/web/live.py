"""Feeds served live from the store: the public feed, private feeds and search feeds.

Each feed is built by ``digest.service.live_feeds`` and answered with an ``ETag`` (the hash
of what it says) and a ``Last-Modified`` (its newest entry), so a reader that asks again
with ``If-None-Match`` or ``If-Modified-Since`` gets a ``304``. What a feed says depends on
little: the newest ingest (the public and search feeds) and, for a private feed, the
subscriber and when they were last sent a digest. That is looked up in one small query per
request and is the key of an in-process cache, so a feed reader polling every 15 minutes
costs one query and no rendering.

A private feed's name is found by the service's name index; a rotated salt's feed is gone
at once (404), and an unsubscribed reader's answers 410 Gone, as does a deleted reader's
(its name is kept in the store).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from urllib.parse import quote

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from digest.service import live_feeds
from digest.service.live_feeds import Built, FeedKind, FeedNames
from digest.service.papers import interest_refusal
from digest.service.subscriptions import InterestError
from digest.web.render import page
from digest.web.state import WebState, state_of

BODY_CACHE_BYTES = 64 * 1024 * 1024  # rendered feeds kept, newest used first
VALIDATORS_KEPT = 200_000  # feeds whose ETag is remembered (a few hundred bytes each)
MAX_QUERY = 500  # characters of a search feed's interest

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


def _caches(state: WebState) -> tuple[FeedCache, FeedNames]:
    cache = state.caches.get("feeds")
    if cache is None:
        cache = state.caches.setdefault("feeds", FeedCache())
    names = state.caches.get("feed_names")
    if names is None or names.keys != state.verifying:  # new keys: name the feeds again
        names = state.caches["feed_names"] = FeedNames(state.verifying)
    return cache, names


def _site(state: WebState) -> live_feeds.FeedSite:
    site = state.caches.get("feed_site")
    if site is None:
        site = state.caches["feed_site"] = live_feeds.feed_site(state.engine, state.settings)
    assert isinstance(site, live_feeds.FeedSite)
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


def _rendered(version: Hashable, build: Callable[[], Built]) -> Callable[[], Rendered]:
    def rendered() -> Rendered:
        built = build()
        return Rendered(version, built.etag, built.last_modified, built.body)

    return rendered


def public_feed(request: Request) -> Response:
    """``/feeds/papers.atom`` and ``.rss``: papers as they first appear."""
    state = state_of(request)
    kind = _kind(request)
    site = _site(state)
    version = ("public", live_feeds.latest_ingest(state.engine))

    def build() -> Built:
        return live_feeds.public_feed(state.engine, site, kind)

    path = f"{live_feeds.GLOBAL_FEED}.{kind}"
    return _answer(request, path, version, kind, _rendered(version, build), private=False)


def private_feed(request: Request) -> Response:
    """``/feeds/private/{name}.atom`` and ``.rss``: the papers of a subscriber's digests."""
    state = state_of(request)
    kind = _kind(request)
    name = request.path_params["name"]
    _, names = _caches(state)
    feed = live_feeds.find_private_feed(state.engine, names, state.verifying, name)
    if feed == "ended":
        raise HTTPException(
            410,
            "This feed has ended: its reader unsubscribed or deleted their data."
            " Subscribe again on the front page for a new one.",
        )
    if feed == "unknown":
        raise HTTPException(
            404,
            "There is no feed at this address: the link may have been replaced,"
            " or the subscription ended.",
        )
    assert isinstance(feed, live_feeds.PrivateFeed)
    site = _site(state)
    key = state.key
    # the key too: a feed built before the key changed carries links it signed
    version = (*feed.version, key)

    def build() -> Built:
        return live_feeds.private_feed(state.engine, site, key, feed, name, kind)

    path = f"private/{name}.{kind}"
    return _answer(request, path, version, kind, _rendered(version, build), private=True)


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
    version = ("search", query, live_feeds.latest_ingest(state.engine))
    path = f"search.{kind}?q={quote(query, safe='')}"

    def build() -> Built:
        try:
            return live_feeds.search_feed(state.engine, state.caches, site, query, kind, path)
        except InterestError as exc:
            raise HTTPException(400, interest_refusal(exc)) from None

    return _answer(request, path, version, kind, _rendered(version, build), private=False)


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
