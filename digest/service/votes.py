"""Feedback from readers, from the command line or a signed link: checked, then stored.

A vote names a reader and a paper; either unknown is a ``UsageError`` naming it, and
nothing is stored. Link tokens bind the reader and the paper (``tokens.PaperSigner``), so
a link votes only on the paper it was made for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, urlencode

from sqlalchemy.engine import Engine

from digest import tokens
from digest.errors import UsageError
from digest.ingest.identity import normalize_arxiv_id
from digest.present.views import READER as READER  # a page link's reader token
from digest.present.views import feedback_path
from digest.service.subscriptions import find_subscriber
from digest.store import votes
from digest.store.engine import reading, transaction
from digest.store.models import Subscriber
from digest.store.papers import PaperRow as PaperRow  # a vote link's paper, as pages show it
from digest.store.subscribers import subscriber_by_id

VOTES = votes.VOTES


@dataclass(frozen=True)
class Given:
    """A vote as stored: who, on which paper, which way, and the vote it replaced."""

    subscriber: Subscriber
    paper: PaperRow
    vote: str
    before: str | None


def find_paper(engine: Engine, reference: str) -> PaperRow:
    """The paper a person names by key (``arxiv:2403.01234``) or arXiv id, or a UsageError."""
    reference = reference.strip()
    arxiv_id = None if reference.startswith("title:") else normalize_arxiv_id(reference)
    key = reference if ":" in reference and not reference.startswith("arXiv:") else ""
    with reading(engine) as conn:
        paper = votes.paper_named(conn, key or f"arxiv:{arxiv_id}", arxiv_id)
    if paper is None:
        shown = reference if len(reference) <= 60 else reference[:59] + "…"
        raise UsageError(f"no paper {shown!r} in the store (give its key or arXiv id)")
    return paper


def check_vote(vote: str) -> str:
    """The vote, or a UsageError for anything but up and down."""
    if vote not in VOTES:
        raise UsageError(f"a vote is 'up' or 'down', not {vote!r}")
    return vote


def store_vote(
    engine: Engine, subscriber: Subscriber, paper: PaperRow, vote: str, now: datetime
) -> Given:
    """Keep a vote (replacing the reader's earlier one on that paper)."""
    sid = int(subscriber.id or 0)
    with transaction(engine) as conn:
        before = votes.vote_on(conn, sid, paper.id)
        votes.record(conn, sid, paper.id, check_vote(vote), now)
    return Given(subscriber, paper, vote, before)


def give_feedback(engine: Engine, email: str, reference: str, vote: str, now: datetime) -> Given:
    """``digest feedback EMAIL PAPER up|down``: the reader's vote on a paper, stored."""
    check_vote(vote)
    subscriber = find_subscriber(engine, email)
    return store_vote(engine, subscriber, find_paper(engine, reference), vote, now)


def undo_vote(engine: Engine, subscriber: Subscriber, paper: PaperRow) -> bool:
    """Forget a reader's vote on a paper; whether there was one."""
    with transaction(engine) as conn:
        return votes.withdraw(conn, int(subscriber.id or 0), paper.id)


def token_reader(
    engine: Engine, keys: tokens.Keys, token: str, paper_key: str, vote: str = ""
) -> Subscriber | None:
    """The reader whose token for the paper ``paper_key`` is ``token`` (from a paper page's
    link, or a vote link; an older vote link's only for its ``vote``), or None for a forged,
    revoked or altered one."""
    ident = None if len(token) > 100 else tokens.token_id(token)  # ours are about 50 long
    row = None if ident is None else subscriber_by_id(engine, ident)
    if row is None or not tokens.check_paper_token(
        keys, token, row.id, row.token_salt, paper_key, vote
    ):
        return None
    return row


def link_vote(
    engine: Engine, keys: tokens.Keys, token: str, paper_key: str, vote: str
) -> tuple[Subscriber, PaperRow] | None:
    """The reader and paper of a feedback link, or None for a forged, revoked or altered one."""
    if vote not in VOTES or not paper_key or len(paper_key) > 1000:
        return None
    row = token_reader(engine, keys, token, paper_key, vote)
    if row is None:
        return None
    with reading(engine) as conn:
        paper = votes.paper_named(conn, paper_key)
    return None if paper is None else (row, paper)


@dataclass(frozen=True)
class ReaderVote:
    """A paper page's buttons for the reader its link names: where each posts, and the vote
    they gave so far (None: none)."""

    more_action: str
    less_action: str
    given: str | None


def reader_vote(
    engine: Engine, keys: tokens.Keys, token: str, paper_key: str, paper_id: int
) -> ReaderVote | None:
    """The buttons of the reader whose ``token`` a paper page's link carried (made for the
    paper ``paper_key``), or None for a token that does not check out."""
    row = token_reader(engine, keys, token, paper_key)
    if row is None or row.id is None:
        return None
    with reading(engine) as conn:
        given = votes.vote_on(conn, row.id, paper_id)
        conn.rollback()
    return ReaderVote(
        feedback_path(token, paper_key, "up"), feedback_path(token, paper_key, "down"), given
    )


def reader_page(paper_key: str, token: str) -> str:
    """The path of a paper's page that shows the reader of ``token`` their vote buttons."""
    return f"/papers/{quote(paper_key, safe='')}?{urlencode({READER: token})}"
