"""What an email or a feed shows: stored papers as views, and a subscriber's links
(unsubscribe, https and mailto, manage, the private feed, and their links to each paper:
its page and their vote links, all with the reader's token for that paper)."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from email.utils import parseaddr
from typing import Any
from urllib.parse import quote

from sqlalchemy.engine import Connection

from digest.present.paper import TOKEN, DigestView, PaperView, TokenLinks
from digest.rank.highlight import HitMarks
from digest.rank.types import Ranked, hits_to_json, marks_from_json
from digest.store import papers
from digest.store.papers import PaperRow
from digest.tokens import PaperSigner, feed_name, link_token, vote_key

READER = "r"  # the query parameter of a paper page's link that carries the reader's token


def paper_url(base_url: str, key: str) -> str:
    """The URL of a paper's page on the site."""
    return f"{base_url}/papers/{quote(key, safe='')}"


def feedback_path(token: str, paper_key: str, vote: str) -> str:
    """A one-click vote on a paper, under the site: ``vote`` is "up" (more like this) or
    "down"."""
    return f"/feedback/{token}?paper={quote(paper_key, safe='')}&vote={vote}"


@functools.lru_cache(maxsize=50_000)  # a day's papers, under one or two base URLs
def paper_links(base_url: str, key: str) -> tuple[str, TokenLinks]:
    """A paper's page, and its links with a reader's token (at ``TOKEN``): worked out once a
    paper, not once an item."""
    page = paper_url(base_url, key)
    return page, TokenLinks(
        page=f"{page}?{READER}={TOKEN}",
        more=base_url + feedback_path(TOKEN, key, "up"),
        less=base_url + feedback_path(TOKEN, key, "down"),
    )


def paper_view(
    row: PaperRow, score: float, hits: Sequence[dict[str, Any]], base_url: str | None = None
) -> PaperView:
    """A stored paper and why it was chosen (its interests' hits, and ``{"liked": title}``
    when chosen for a paper the reader liked), as an email shows it (linking to its page on
    the site at ``base_url``, when given)."""
    page_url, token_links = paper_links(base_url, row.key) if base_url is not None else (None, None)
    interests: list[str] = []
    evidence: list[HitMarks | None] = []
    because: str | None = None
    for hit in hits:  # one pass: a view is made for every distinct item a batch sends
        if "interest" in hit:
            interests.append(hit["interest"])
            evidence.append(marks_from_json(hit))
        if because is None and "liked" in hit:
            because = str(hit["liked"])
    return PaperView(
        key=row.key,
        title=row.title,
        abstract=row.abstract,
        url=row.url,
        arxiv_id=row.arxiv_id,
        score=score,
        interests=tuple(interests),
        authors=row.authors,
        because=because or "",
        page_url=page_url,
        token_links=token_links,
        listed=row.dated,
        evidence=tuple(evidence) if any(marks is not None for marks in evidence) else (),
    )


@functools.lru_cache(
    maxsize=131_072
)  # a day's distinct (paper, why) pairs, a few hundred bytes each
def stored_view(row: PaperRow, score: float, matched: str, base_url: str | None) -> PaperView:
    """``paper_view`` of an item as the outbox stores it (its explanation as JSON text).

    Readers who share interests get the same paper for the same reasons, so the same item:
    it is read and made into a view once, and the one view (and what is worked out from it,
    ``present.paper.shown``, a message's block) is shared by every digest that carries it.
    """
    return paper_view(row, score, json.loads(matched), base_url)


def ranked_views(
    conn: Connection, ranked: Sequence[Ranked], base_url: str | None = None
) -> list[PaperView]:
    """Ranked papers as email views, best first (linking to their pages at ``base_url``)."""
    rows = papers.by_ids(conn, [r.paper_id for r in ranked])
    return [paper_view(rows[r.paper_id], r.score, _matched(r), base_url) for r in ranked]


def _matched(item: Ranked) -> list[dict[str, Any]]:
    """An item's explanation as stored: its hits, and the liked paper it was chosen for."""
    hits = hits_to_json(item.hits)
    return [*hits, {"liked": item.because}] if item.because else hits


def ranked_json(conn: Connection, ranked: Sequence[Ranked]) -> list[dict[str, Any]]:
    """Ranked papers as ``preview --json`` and ``search --json`` print them."""
    rows = papers.by_ids(conn, [r.paper_id for r in ranked])
    return [
        {
            "title": rows[r.paper_id].title,
            "key": rows[r.paper_id].key,
            "url": rows[r.paper_id].url,
            "score": round(r.score, 4),
            "matched": _matched(r),
        }
        for r in ranked
    ]


def _in_url(token: str) -> str:
    """A token as a URL carries it: ours (digits, a dot, hex) as they are, anything else
    quoted (the quoting costs more than the rest of a link)."""
    plain = token.isascii() and token.replace(".", "").isalnum()
    return token if plain else quote(token, safe="")


@functools.lru_cache(maxsize=8)
def _address(mail_from: str) -> str:
    return parseaddr(mail_from)[1] or "digest@localhost"


@dataclass(frozen=True)
class Links:
    """How a subscriber's links are made: the public base URL, the signing key, the sender."""

    base_url: str
    key: bytes
    mail_from: str

    def unsubscribe_url(self, token: str) -> str:
        """The one-click (RFC 8058) unsubscribe URL."""
        return f"{self.base_url}/unsubscribe/{_in_url(token)}"

    def manage_url(self, token: str) -> str:
        """The subscriber's page to change interests, pause, export or delete."""
        return f"{self.base_url}/manage/{_in_url(token)}"

    def manage_token(self, ident: int | None, salt: str) -> str:
        """The token of a subscriber's manage link."""
        return link_token(self.key, ident, salt, purpose="manage")

    def signer(self, ident: int | None, salt: str) -> PaperSigner:
        """What signs a reader's tokens for papers."""
        return PaperSigner(vote_key(self.key, ident, salt), ident)

    def reader_links(self, ident: int | None, salt: str, paper_key: str) -> tuple[str, str, str]:
        """A reader's links to a paper: its page, "more like this" and "not for me"."""
        token = self.signer(ident, salt).token(paper_key)
        return paper_links(self.base_url, paper_key)[1].filled(token)

    def paper_url(self, key: str) -> str:
        """A paper's page on the site (digest items link here)."""
        return paper_url(self.base_url, key)

    def unsubscribe_mailto(self, token: str) -> str:
        """The mailto: unsubscribe address, for clients without one-click."""
        return f"mailto:{_address(self.mail_from)}?subject=unsubscribe%20{_in_url(token)}"

    def feed_path(self, name: str) -> str:
        """A private feed's path under the feeds folder."""
        return f"private/{name}.atom"

    def feed_url(self, name: str) -> str:
        """A private feed's public URL."""
        return f"{self.base_url}/feeds/{self.feed_path(name)}"

    def digest_view(
        self,
        *,
        to: str,
        ident: int | None,
        salt: str,
        period: date,
        papers: Sequence[PaperView],
        message_id: str,
    ) -> DigestView:
        """A subscriber's digest as an email shows it, with their signed links (each paper's
        with the reader's token for it, when the paper's view has ``token_links``)."""
        token = link_token(self.key, ident, salt)
        signer = self.signer(ident, salt)
        return DigestView(
            to=to,
            period=period,
            papers=papers,
            tokens=[signer.token(paper.key) for paper in papers],
            message_id=message_id,
            unsubscribe_url=self.unsubscribe_url(token),
            unsubscribe_mailto=self.unsubscribe_mailto(token),
            feed_url=self.feed_url(feed_name(self.key, ident, salt)),
            manage_url=self.manage_url(self.manage_token(ident, salt)),
        )
