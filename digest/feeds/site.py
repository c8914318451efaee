"""What every feed of a site shares: its address and name, its GUIDs' authority, how
many items a feed keeps, and each paper's private entry, made once for all readers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time

from digest.feeds.render import FeedItem, FeedMeta, item_for_paper, paper_guid
from digest.present.paper import PaperView
from digest.store.papers import PaperRow


class SharedItems:
    """Each paper's private entry, made once for all the readers it went to: keyed by the
    paper and why it was chosen (its stored explanation), valid for one ingest (a paper's
    text changes only with one). Thread-safe enough: a race makes an entry twice."""

    LIMIT = 50_000  # a day's papers under the few interest sets that chose each

    def __init__(self) -> None:
        self.ingest: int | None = None
        self.found: dict[tuple[int, str], tuple[FeedItem, str]] = {}

    def current(self, ingest: int) -> dict[tuple[int, str], tuple[FeedItem, str]]:
        """The entries made since the store's newest ingest was ``ingest``."""
        if ingest != self.ingest or len(self.found) >= self.LIMIT:
            self.found = {}
            self.ingest = ingest
        return self.found


@dataclass(frozen=True)
class FeedSite:
    """What every feed of a site shares: its URL and name, the authority of its GUIDs, and
    how many items a feed keeps."""

    base_url: str
    site_name: str
    authority: str
    limit: int
    shared: SharedItems = field(default_factory=lambda: SharedItems(), compare=False, repr=False)

    def meta(
        self, path: str, kind: str, title: str, description: str, updated: datetime
    ) -> FeedMeta:
        """The feed's own description; ``path`` under ``/feeds/`` without its extension
        (the feed's id, the same for its Atom and RSS forms)."""
        url = f"{self.base_url}/feeds/{path}"
        return FeedMeta(
            title=f"{self.site_name}: {title}",
            feed_id=url,
            site_url=self.base_url,
            self_url=f"{url}.{kind}",
            description=description,
            updated=updated,
        )

    def item(
        self, row: PaperRow, view: PaperView, added: datetime, *, private: bool = False
    ) -> FeedItem:
        """A paper's entry, dated by the paper's own date and ``added`` to the feed then (first
        seen, or sent): its GUID from the key it was first seen under; ``private``: in a
        private feed, with a reader's links (the paper's page, "more like this", "not for
        me"), their token left to ``FeedItem.for_reader``."""
        return item_for_paper(
            view,
            guid=paper_guid(row.guid_key, self.authority),
            published=datetime.combine(row.dated, time(), UTC),
            updated=datetime.combine(row.revised, time(), UTC) if row.revised else None,
            added=added,
            token="" if private else None,
        )
