"""Readers' feedback: one vote per reader and paper ("up": more like this, "down": not for
me), the latest replacing any earlier one, with the paper texts the per-reader model reads."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from digest.clock import as_utc
from digest.store.models import Feedback, Paper
from digest.store.papers import PARAMETERS, PaperRow, paper_columns, reader, row_by_key

VOTES = ("up", "down")
_FEEDBACK = Feedback.__table__  # type: ignore[attr-defined]
_PAPER = Paper.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Vote:
    """A reader's vote on a paper, with the paper as stored."""

    subscriber_id: int
    paper: PaperRow
    vote: str
    voted_at: datetime


def record(conn: Connection, subscriber_id: int, paper_id: int, vote: str, now: datetime) -> None:
    """Keep ``vote`` as the reader's opinion of the paper (a later vote replaces an earlier)."""
    if vote not in VOTES:
        raise ValueError(f"a vote is 'up' or 'down', not {vote!r}")
    where = (_FEEDBACK.c.subscriber_id == subscriber_id) & (_FEEDBACK.c.paper_id == paper_id)
    changed = conn.execute(_FEEDBACK.update().where(where).values(vote=vote, voted_at=now))
    if changed.rowcount == 0:
        conn.execute(
            _FEEDBACK.insert().values(
                subscriber_id=subscriber_id, paper_id=paper_id, vote=vote, voted_at=now
            )
        )


def withdraw(conn: Connection, subscriber_id: int, paper_id: int) -> bool:
    """Forget the reader's vote on a paper (an undo); whether there was one."""
    where = (_FEEDBACK.c.subscriber_id == subscriber_id) & (_FEEDBACK.c.paper_id == paper_id)
    return bool(conn.execute(_FEEDBACK.delete().where(where)).rowcount)


def vote_on(conn: Connection, subscriber_id: int, paper_id: int) -> str | None:
    """The reader's current vote on a paper, if any."""
    where = (_FEEDBACK.c.subscriber_id == subscriber_id) & (_FEEDBACK.c.paper_id == paper_id)
    value = conn.execute(sa.select(_FEEDBACK.c.vote).where(where)).scalar()
    return None if value is None else str(value)


_VOTES = sa.select(
    _FEEDBACK.c.subscriber_id, _FEEDBACK.c.vote, _FEEDBACK.c.voted_at, *paper_columns("paper_")
).join(_PAPER, _PAPER.c.id == _FEEDBACK.c.paper_id)


def _votes(result: Any) -> Iterator[Vote]:
    paper = reader(result.keys(), "paper_")
    for row in result:
        yield Vote(
            subscriber_id=int(row.subscriber_id),
            paper=paper(row),
            vote=str(row.vote),
            voted_at=as_utc(row.voted_at),
        )


def votes_of(conn: Connection, subscriber_id: int) -> list[Vote]:
    """A reader's votes with the papers' texts, newest first."""
    query = _VOTES.where(_FEEDBACK.c.subscriber_id == subscriber_id).order_by(
        _FEEDBACK.c.voted_at.desc(), _FEEDBACK.c.id.desc()
    )
    return list(_votes(conn.execute(query)))


def votes_by_reader(conn: Connection, subscriber_ids: Collection[int]) -> dict[int, list[Vote]]:
    """The votes of those of these readers who gave any, by reader, oldest first.

    Reads only the feedback table's readers first, so a day of 100,000 readers of whom a
    few voted costs one small query.
    """
    voters = {
        int(sid)
        for (sid,) in conn.execute(sa.select(_FEEDBACK.c.subscriber_id).distinct())
        if int(sid) in subscriber_ids
    }
    found: dict[int, list[Vote]] = {}
    ordered = sorted(voters)
    for start in range(0, len(ordered), PARAMETERS):
        part = ordered[start : start + PARAMETERS]
        query = _VOTES.where(_FEEDBACK.c.subscriber_id.in_(part)).order_by(
            _FEEDBACK.c.subscriber_id, _FEEDBACK.c.voted_at, _FEEDBACK.c.id
        )
        for vote in _votes(conn.execute(query)):
            found.setdefault(vote.subscriber_id, []).append(vote)
    return found


def export_rows(conn: Connection, subscriber_id: int) -> list[dict[str, Any]]:
    """A reader's feedback as their data export holds it: paper, vote, when."""
    return [
        {
            "paper": vote.paper.key,
            "title": vote.paper.title,
            "vote": vote.vote,
            "voted_at": vote.voted_at.isoformat(),
        }
        for vote in votes_of(conn, subscriber_id)
    ]


def erase(conn: Connection, subscriber_id: int) -> int:
    """Delete every vote of a reader (with the reader); how many there were."""
    deleted = conn.execute(_FEEDBACK.delete().where(_FEEDBACK.c.subscriber_id == subscriber_id))
    return int(deleted.rowcount)


def count(conn: Connection, subscriber_id: int | None = None) -> dict[str, int]:
    """How many votes of each kind, of one reader or of everyone."""
    query = sa.select(_FEEDBACK.c.vote, sa.func.count()).group_by(_FEEDBACK.c.vote)
    if subscriber_id is not None:
        query = query.where(_FEEDBACK.c.subscriber_id == subscriber_id)
    counts = dict.fromkeys(VOTES, 0)
    counts.update({str(vote): int(n) for vote, n in conn.execute(query)})
    return counts


def paper_named(conn: Connection, key: str, arxiv_id: str | None = None) -> PaperRow | None:
    """The paper stored (or first seen) under ``key``, else the one with ``arxiv_id``; None
    if neither."""
    found = row_by_key(conn, key)
    if found is None and arxiv_id:
        result = conn.execute(
            sa.select(*paper_columns(""))
            .where(_PAPER.c.arxiv_id == arxiv_id)
            .order_by(_PAPER.c.id)
            .limit(1)
        )
        paper = reader(result.keys())
        row = result.first()
        found = None if row is None else paper(row)
    return found
