"""Plan: pick each subscriber's papers for a period, and record them as the outbox.

Planning is pure (subscribers, papers, what was sent and statistics in, plans out);
``plan_owed`` reads those from the store. The outbox holds one digest per subscriber per
period, so a run that dies while sending is finished by the next without choosing again.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime

from sqlalchemy.engine import Connection

from digest.rank import ranker
from digest.rank.corpus import store_stats
from digest.rank.reader_model import Vote
from digest.rank.types import CorpusStats, Profile, Ranked, hits_to_json
from digest.store import outbox
from digest.store import papers as papers_store
from digest.store import votes as vote_store
from digest.store.engine import ingest_sequence
from digest.store.models import Subscriber
from digest.store.outbox import Planned
from digest.store.papers import PaperRow
from digest.store.subscription import Subscription
from digest.store.unsent import Carried, fold_waiting
from digest.tokens import message_id

WEEKLY_DAY = 0  # weekly digests go out on Mondays


@dataclass(frozen=True)
class Plan:
    """What one subscriber gets this period (possibly nothing), from the papers of ingests
    numbered up to ``upto``."""

    subscriber: Subscriber
    ranked: Sequence[Ranked]
    upto: int = 0
    carried: Carried | None = None  # what the waiting digests it takes in hand on


def due(subscriber: Subscriber, period: date) -> bool:
    """Whether a subscriber's frequency calls for a digest in this period."""
    return subscriber.frequency != "weekly" or period.weekday() == WEEKLY_DAY


def plan_owed(
    conn: Connection,
    *,
    period: date,
    subscribers: Sequence[Subscriber] | None = None,
    take_in: bool = False,
    news_days: int | None = None,
) -> list[Plan]:
    """Read from the store what planning needs and plan every digest owed for ``period``
    (to ``subscribers``, or to every active subscriber who has none for it yet).

    ``take_in``: a reader's digests of earlier periods still pending (an outage, the machine
    off) are taken into this one (``unsent.fold_waiting``): one digest with all their papers,
    not one per missed period. Writes; a dry run leaves it False.

    A paper is news only when it is new to the store and, with ``news_days``, was recent by
    its own date when it came (dated at most that many days before it was first seen): a
    back-fill of history is searchable, and never mailed as new. Measured from its arrival,
    not from ``period``, so a run that catches up after an outage still mails what was news.
    """
    if subscribers is None:
        subscribers = outbox.owed_subscribers(conn, period)
    subscribers = [s for s in subscribers if due(s, period)]
    if not subscribers:
        return []
    carried: dict[int, Carried] = {}
    if take_in:
        carried = fold_waiting(conn, {int(s.id or 0) for s in subscribers}, into=period)
        for s in subscribers:  # their cut-offs as the store has them now
            taken = carried.get(int(s.id or 0))
            if taken is not None and taken.seen_upto is not None:
                s.seen_upto = min(s.seen_upto, taken.seen_upto)
    plans = _plan_owed(conn, subscribers, period, news_days)
    if not carried:
        return plans
    return [replace(p, carried=carried.get(int(p.subscriber.id or 0))) for p in plans]


def _plan_owed(
    conn: Connection, subscribers: Sequence[Subscriber], period: date, news_days: int | None
) -> list[Plan]:
    upto = ingest_sequence(conn)
    papers = papers_store.new_since(
        conn, min(s.seen_upto for s in subscribers), upto, news_days=news_days
    )
    if not papers:
        return [Plan(s, (), upto) for s in subscribers]
    ids = {int(s.id or 0) for s in subscribers}
    sent = outbox.sent_pairs(conn, ids, papers[0].id)
    votes = reader_votes(conn, ids)
    return plan_digests(
        subscribers, papers, sent, store_stats(conn), period=period, upto=upto, votes=votes
    )


def reader_votes(conn: Connection, ids: Collection[int]) -> dict[int, list[Vote]]:
    """The votes of those of these readers who gave any, as the ranking takes them."""
    return {
        sid: [Vote(v.paper, v.vote == "up") for v in given]
        for sid, given in vote_store.votes_by_reader(conn, ids).items()
    }


def plan_digests(
    subscribers: Sequence[Subscriber],
    papers: Sequence[PaperRow],
    sent: Mapping[int, Collection[int]],
    stats: CorpusStats,
    *,
    period: date,
    upto: int,
    votes: Mapping[int, Sequence[Vote]] | None = None,
) -> list[Plan]:
    """Rank the new papers for every subscriber due a digest for ``period``.

    "New" is by ingest sequence, never by the clock: the ``papers`` of the ingests after the
    subscriber's ``seen_upto`` and up to ``upto``, less those already ``sent`` to them.
    ``votes``: the feedback of the readers who gave any, by subscriber id.
    """
    subscribers = [s for s in subscribers if due(s, period)]
    if not subscribers:
        return []
    if not papers:
        return [Plan(s, (), upto) for s in subscribers]
    cutoffs = {s.id: s.seen_upto for s in subscribers}
    already = {sid: set(ids) for sid, ids in sent.items() if sid in cutoffs}
    by_seq = sorted((r.seq, r.id) for r in papers)
    seqs = [seq for seq, _ in by_seq]
    newer_than: dict[int, frozenset[int]] = {}  # subscribers share cutoffs (the last run)

    def candidates_after(cutoff: int) -> frozenset[int]:
        fresh = newer_than.get(cutoff)
        if fresh is None:
            fresh = frozenset(pid for _, pid in by_seq[bisect_right(seqs, cutoff) :])
            newer_than[cutoff] = fresh
        return fresh

    def candidates(profile_id: int) -> set[int]:
        fresh = candidates_after(cutoffs[profile_id])
        sent = already.get(profile_id)
        return set(fresh - sent) if sent else fresh  # type: ignore[return-value]

    # Most readers share one cutoff (the last run) and were sent none of the new papers: the
    # rank stage shares work between readers given the same candidate set.
    profiles = [Profile.of(Subscription.of(s)) for s in subscribers]
    ranked = ranker.rank(
        papers,
        profiles,
        stats,
        candidates={p.id: candidates(p.id) for p in profiles},
        votes=votes,
    )
    return [Plan(s, ranked.get(int(s.id or 0), []), upto) for s in subscribers]


def record_plans(
    conn: Connection,
    plans: Sequence[Plan],
    *,
    period: date,
    now: datetime,
    key: bytes,
    mail_from: str,
    run_id: int | None,
) -> dict[str, int]:
    """Write the outbox rows for ``plans`` in bulk; returns how many are pending and skipped."""
    counts = {"pending": 0, "skipped": 0}
    explained: dict[int, str] = {}  # interests are shared across subscribers, and so are hits
    planned = []
    for plan in plans:
        sub = plan.subscriber
        sid = int(sub.id or 0)  # rows read from the store always have their id
        status = "skipped" if not plan.ranked and not sub.send_empty else "pending"
        counts[status] += 1
        items = []
        for item in plan.ranked:
            matched = explained.get(id(item.hits))
            if matched is None:
                matched = explained[id(item.hits)] = json.dumps(hits_to_json(item.hits))
            if item.because:  # the reason feedback gives is the reader's own
                matched = json.dumps([*json.loads(matched), {"liked": item.because}])
            items.append((item.paper_id, round(item.score, 4), matched))
        mid = message_id(key, sid, period, mail_from)
        planned.append(Planned(sid, status, mid, plan.upto, items, plan.carried))
    outbox.record(conn, planned, period=period, now=now, run_id=run_id)
    return counts
