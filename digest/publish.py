"""Publish the feeds: the global feed of new papers and one private feed per subscriber.

Items come from the store (the newest papers; each subscriber's sent digests),
so regenerating gives the same GUIDs and nothing twice. A feed whose items did
not change is not rewritten.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import col

from digest.feeds import FeedItem, FeedMeta, item_for_paper, paper_guid, write_feed_if_changed
from digest.links import Links
from digest.models import Digest, DigestItem, Paper, Subscriber
from digest.preview import paper_view
from digest.settings import Settings
from digest.subscribers import feed_name

GLOBAL_FEED = "papers"


def _item(
    row: Any, published: datetime, authority: str, why: Sequence[dict[str, Any]] = ()
) -> FeedItem:
    view = paper_view(row, getattr(row, "score", 0.0), why)
    return item_for_paper(view, guid=paper_guid(row.key, authority), published=published)


def publish_feeds(
    settings: Settings, engine: Engine, links: Links, *, now: datetime
) -> dict[str, int]:
    """Write the global feed and every active subscriber's private feed; count what changed."""
    counts = {"written": 0, "unchanged": 0}
    limit = settings.feed_items
    folder = settings.feeds_dir
    with engine.connect() as conn:
        newest = conn.execute(
            sa.select(
                col(Paper.key),
                col(Paper.title),
                col(Paper.abstract),
                col(Paper.url),
                col(Paper.arxiv_id),
                col(Paper.first_seen),
            )
            .order_by(col(Paper.first_seen).desc(), col(Paper.id).desc())
            .limit(limit)
        ).all()
        subscribers = conn.execute(
            sa.select(col(Subscriber.id), col(Subscriber.email), col(Subscriber.token_salt)).where(
                col(Subscriber.status) == "active"
            )
        ).all()
        private: dict[int, list[FeedItem]] = {row.id: [] for row in subscribers}
        rows = conn.execute(
            sa.select(
                col(DigestItem.subscriber_id),
                col(DigestItem.score),
                col(DigestItem.matched),
                col(Digest.sent_at),
                col(Paper.key),
                col(Paper.title),
                col(Paper.abstract),
                col(Paper.url),
                col(Paper.arxiv_id),
            )
            .join(Digest, col(Digest.id) == col(DigestItem.digest_id))
            .join(Paper, col(Paper.id) == col(DigestItem.paper_id))
            .where(col(Digest.status) == "sent", col(DigestItem.subscriber_id).in_(private))
            .order_by(col(Digest.sent_at).desc(), col(DigestItem.rank))
        ).all()
        conn.rollback()
    authority = urlsplit(settings.base_url).hostname or "localhost"
    for row in rows:
        items = private[row.subscriber_id]
        if len(items) < limit:
            items.append(_item(row, row.sent_at, authority, json.loads(row.matched)))
    site = settings.site_name
    feeds: list[tuple[str, FeedMeta, list[FeedItem]]] = [
        (
            GLOBAL_FEED,
            FeedMeta(
                title=f"{site}: new papers",
                feed_id=f"{settings.base_url}/feeds/{GLOBAL_FEED}",
                site_url=settings.base_url,
                self_url=f"{settings.base_url}/feeds/{GLOBAL_FEED}",
                description="Papers as they first appear in the listings.",
                updated=now,
            ),
            [_item(row, row.first_seen, authority) for row in newest],
        )
    ]
    for sub in subscribers:
        name = feed_name(links.key, sub.id, sub.token_salt)
        feeds.append(
            (
                f"private/{name}",
                FeedMeta(
                    title=f"{site}: papers for you",
                    feed_id=f"{settings.base_url}/feeds/private/{name}",
                    site_url=settings.base_url,
                    self_url=f"{settings.base_url}/feeds/private/{name}",
                    description="The papers of your digests.",
                    updated=now,
                ),
                private[sub.id],
            )
        )
    for base, meta, items in feeds:
        for kind in ("atom", "rss"):
            meta_of_kind = replace(meta, self_url=f"{meta.self_url}.{kind}")
            path = folder / f"{base}.{kind}"
            changed = write_feed_if_changed(path, meta_of_kind, items, kind=kind, limit=limit)
            counts["written" if changed else "unchanged"] += 1
    return counts
