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
from datetime import date, datetime, tzinfo

from sqlalchemy.engine import Connection

from digest.deliver.due import by_period, due_readers, reader_hour
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
    period: date | None = None  # the reader's own date (``plan_due``); None: the run's


def due(subscriber: Subscriber, period: date) -> bool:
    """Whether a subscriber's frequency calls for a digest in this period."""
    return calls_for(subscriber.frequency, period)


def calls_for(frequency: str, period: date) -> bool:
    """Whether a frequency calls for a digest in this period (weekly: Mondays)."""
    return frequency != "weekly" or period.weekday() == WEEKLY_DAY


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
    return _plan_periods(
        conn, [(s, period) for s in subscribers], take_in=take_in, news_days=news_days
    )


def plan_due(
    conn: Connection,
    *,
    now: datetime,
    site_zone: tzinfo,
    site_period: date | None,
    take_in: bool = False,
    news_days: int | None = None,
    ran_before: datetime | None = None,
) -> list[Plan]:
    """Plan every digest due at ``now``: each reader with an hour of their own whose hour has
    come, for their own local date (``due.due_period``); and, with ``site_period`` (a run at
    the site's schedule, or by hand), every reader without one, for the site's date, as
    ``plan_owed`` does. ``ran_before``: when the schedule last ran, if known.

    All of them are ranked together, whatever their dates, so readers given the same papers
    share the work (a whole time zone at its hour, the site's readers at the site's).
    """
    due = owed_at(conn, now=now, site_zone=site_zone, ran_before=ran_before)
    wanted = [(s, due[int(s.id or 0)]) for s in outbox.subscribers_by_id(conn, due)]
    if site_period is not None:
        wanted += [
            (s, site_period)
            for s in outbox.owed_subscribers(conn, site_period)
            if reader_hour(s) is None
        ]
    return _plan_periods(conn, wanted, take_in=take_in, news_days=news_days)


def owed_at(
    conn: Connection, *, now: datetime, site_zone: tzinfo, ran_before: datetime | None = None
) -> dict[int, date]:
    """The readers with an hour of their own who are due at ``now`` (and whose frequency
    calls for that date), with their periods."""
    readers = outbox.active_with_last(conn)
    periods = due_readers(readers, now, site_zone, ran_before=ran_before)
    return {
        int(row.id): periods[int(row.id)]
        for row, _ in readers
        if int(row.id) in periods and calls_for(row.frequency, periods[int(row.id)])
    }


def _plan_periods(
    conn: Connection,
    wanted: Sequence[tuple[Subscriber, date]],
    *,
    take_in: bool,
    news_days: int | None,
) -> list[Plan]:
    wanted = [(s, period) for s, period in wanted if due(s, period)]
    if not wanted:
        return []
    subscribers = [s for s, _ in wanted]
    periods = {int(s.id or 0): period for s, period in wanted}
    carried: dict[int, Carried] = {}
    if take_in:
        for period, ids in by_period(periods).items():
            carried.update(fold_waiting(conn, set(ids), into=period))
        for s in subscribers:  # their cut-offs as the store has them now
            taken = carried.get(int(s.id or 0))
            if taken is not None and taken.seen_upto is not None:
                s.seen_upto = min(s.seen_upto, taken.seen_upto)
    plans = _plan_owed(conn, subscribers, periods, news_days)
    if not carried:
        return plans
    return [replace(p, carried=carried.get(int(p.subscriber.id or 0))) for p in plans]


def _plan_owed(
    conn: Connection,
    subscribers: Sequence[Subscriber],
    periods: Mapping[int, date],
    news_days: int | None,
) -> list[Plan]:
    upto = ingest_sequence(conn)
    papers = papers_store.new_since(
        conn, min(s.seen_upto for s in subscribers), upto, news_days=news_days
    )
    if not papers:
        return [Plan(s, (), upto, period=periods[int(s.id or 0)]) for s in subscribers]
    ids = {int(s.id or 0) for s in subscribers}
    sent = outbox.sent_pairs(conn, ids, papers[0].id)
    votes = reader_votes(conn, ids)
    return plan_digests(
        subscribers, papers, sent, store_stats(conn), period=periods, upto=upto, votes=votes
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
    period: date | Mapping[int, date],
    upto: int,
    votes: Mapping[int, Sequence[Vote]] | None = None,
) -> list[Plan]:
    """Rank the new papers for every subscriber due a digest for ``period`` (one date for
    all, or each subscriber's own by id).

    "New" is by ingest sequence, never by the clock: the ``papers`` of the ingests after the
    subscriber's ``seen_upto`` and up to ``upto``, less those already ``sent`` to them.
    ``votes``: the feedback of the readers who gave any, by subscriber id.
    """
    periods = {int(s.id or 0): period for s in subscribers} if isinstance(period, date) else period
    subscribers = [s for s in subscribers if due(s, periods[int(s.id or 0)])]
    if not subscribers:
        return []
    if not papers:
        return [Plan(s, (), upto, period=periods[int(s.id or 0)]) for s in subscribers]
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
    return [
        Plan(s, ranked.get(int(s.id or 0), []), upto, period=periods[int(s.id or 0)])
        for s in subscribers
    ]


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
    """Write the outbox rows for ``plans`` in bulk, each for its own period (``period`` for a
    plan without one); returns how many are pending and skipped."""
    counts = {"pending": 0, "skipped": 0}
    explained: dict[int, str] = {}  # interests are shared across subscribers, and so are hits
    planned: dict[date, list[Planned]] = {}
    for plan in plans:
        when = plan.period or period
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
        mid = message_id(key, sid, when, mail_from)
        planned.setdefault(when, []).append(
            Planned(sid, status, mid, plan.upto, items, plan.carried)
        )
    for when, rows in sorted(planned.items()):
        outbox.record(conn, rows, period=when, now=now, run_id=run_id)
    return counts
