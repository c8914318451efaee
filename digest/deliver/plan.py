"""Plan: pick each subscriber's papers for a period, and record them as the outbox.

Planning takes subscribers, papers, what was sent, votes and statistics in, and gives
plans out; ``owed_plans`` and ``due_plans`` read those from the store. The outbox holds one
digest per subscriber per period, so a run that dies while sending is finished by the next
without choosing again.

A run plans in batches of ``PLAN_BATCH`` readers: every reader's profile and cut-off are
read first (a few hundred bytes each), the day's papers are matched once against all their
interests (``rank.ranker.Ranking``), then each batch is ranked, turned into plans and
recorded before the next is ranked, so that neither the plans nor their outbox rows are
ever all in memory. A run records every batch in the one transaction that holds the plan
lock (``store.engine.plan_lock``): the period's digests are committed together or not at
all, so a run that dies while planning leaves nothing half planned behind (the next finds
every reader still owed), and another planner, waiting on the lock, finds them all.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from typing import Any, Protocol

from sqlalchemy.engine import Connection

from digest.deliver.due import by_period, due_readers, reader_hour
from digest.rank import ranker
from digest.rank.corpus import store_stats
from digest.rank.reader_model import Vote
from digest.rank.types import CorpusStats, Profile, Ranked, hits_to_json
from digest.store import outbox, plan_rows
from digest.store import papers as papers_store
from digest.store import votes as vote_store
from digest.store.engine import ingest_sequence
from digest.store.outbox import Planned
from digest.store.papers import PaperRow
from digest.store.unsent import Carried, fold_waiting
from digest.tokens import message_id

WEEKLY_DAY = 0  # weekly digests go out on Mondays
PLAN_BATCH = 2_000  # readers ranked, planned and recorded at a time


class Addressee(Protocol):
    """Whom a plan is for: a stored ``Subscriber``, or the ``outbox.Recipient`` a run reads."""

    @property
    def id(self) -> int | None: ...
    @property
    def email(self) -> str: ...
    @property
    def token_salt(self) -> str: ...
    @property
    def send_empty(self) -> bool: ...


@dataclass(frozen=True)
class Plan:
    """What one subscriber gets this period (possibly nothing), from the papers of ingests
    numbered up to ``upto``."""

    subscriber: Addressee
    ranked: Sequence[Ranked]
    upto: int = 0
    carried: Carried | None = None  # what the waiting digests it takes in hand on
    period: date | None = None  # the reader's own date (``plan_due``); None: the run's


def due(subscriber: Any, period: date) -> bool:
    """Whether a subscriber's frequency calls for a digest in this period (a ``Subscriber``,
    or a plain row of its columns)."""
    return calls_for(subscriber.frequency, period)


def calls_for(frequency: str, period: date) -> bool:
    """Whether a frequency calls for a digest in this period (weekly: Mondays)."""
    return frequency != "weekly" or period.weekday() == WEEKLY_DAY


def plan_owed(
    conn: Connection,
    *,
    period: date,
    subscribers: Sequence[Any] | None = None,
    take_in: bool = False,
    news_days: int | None = None,
) -> list[Plan]:
    """Every plan ``owed_plans`` makes, in one list (a preview's one reader, tests)."""
    return list(
        owed_plans(
            conn, period=period, subscribers=subscribers, take_in=take_in, news_days=news_days
        )
    )


def owed_plans(
    conn: Connection,
    *,
    period: date,
    subscribers: Sequence[Any] | None = None,
    take_in: bool = False,
    news_days: int | None = None,
    batch: int | None = None,
) -> Generator[Plan, None, None]:
    """Read from the store what planning needs and plan every digest owed for ``period``
    (to ``subscribers``, stored ``Subscriber`` rows, or to every active subscriber who has
    none for it yet), ``batch`` readers at a time; close the iterator (``contextlib.closing``)
    when not reading it to the end, to stop the ranking's worker processes at once.

    ``take_in``: a reader's digests of earlier periods still pending (an outage, the machine
    off) are taken into this one (``unsent.fold_waiting``): one digest with all their papers,
    not one per missed period. Writes; a dry run leaves it False.

    A paper is news only when it is new to the store and, with ``news_days``, was recent by
    its own date when it came (dated at most that many days before it was first seen): a
    back-fill of history is searchable, and never mailed as new. Measured from its arrival,
    not from ``period``, so a run that catches up after an outage still mails what was news.
    """
    given = None if subscribers is None else {int(s.id or 0): s for s in subscribers}
    readers: Iterable[Any] = outbox.owed_readers(conn, period) if given is None else given.values()
    wanted = _Wanted()
    for row in readers:
        wanted.add(row, period)
    return _plan(
        conn, wanted, take_in=take_in, news_days=news_days, given=given, batch=batch or PLAN_BATCH
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
    """Every plan ``due_plans`` makes, in one list."""
    return list(
        due_plans(
            conn,
            now=now,
            site_zone=site_zone,
            site_period=site_period,
            take_in=take_in,
            news_days=news_days,
            ran_before=ran_before,
        )
    )


def due_plans(
    conn: Connection,
    *,
    now: datetime,
    site_zone: tzinfo,
    site_period: date | None,
    take_in: bool = False,
    news_days: int | None = None,
    ran_before: datetime | None = None,
    batch: int | None = None,
) -> Generator[Plan, None, None]:
    """Plan every digest due at ``now``: each reader with an hour of their own whose hour has
    come, for their own local date (``due.due_period``); and, with ``site_period`` (a run at
    the site's schedule, or by hand), every reader without one, for the site's date, as
    ``owed_plans`` does. ``ran_before``: when the schedule last ran, if known. In batches,
    as ``owed_plans``.

    All of them are ranked together, whatever their dates, so readers given the same papers
    share the work (a whole time zone at its hour, the site's readers at the site's).
    """
    wanted = _Wanted()
    readers = outbox.active_with_last(conn)
    periods = due_readers(readers, now, site_zone, ran_before=ran_before)
    for row, _ in readers:
        period = periods.get(int(row.id))
        if period is not None:
            wanted.add(row, period)
    del readers
    if site_period is not None:
        for row in outbox.owed_readers(conn, site_period):
            if reader_hour(row) is None:
                wanted.add(row, site_period)
    return _plan(conn, wanted, take_in=take_in, news_days=news_days, batch=batch or PLAN_BATCH)


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


class _Wanted:
    """The readers a run plans for, read once before any is ranked: for each, the period,
    where their last digest stopped (``seen_upto``) and their ``Profile``, nothing more."""

    def __init__(self) -> None:
        self.periods: dict[int, date] = {}
        self.cutoffs: dict[int, int] = {}
        self.profiles: dict[int, Profile] = {}
        self._decoded: dict[str, tuple[str, ...]] = {}

    def add(self, row: Any, period: date) -> None:
        """A reader (a stored row, or a plain row of its columns) owed a digest for
        ``period``, unless their frequency does not call for one then."""
        if not due(row, period):
            return
        sid = int(row.id or 0)
        self.periods[sid] = period
        self.cutoffs[sid] = int(row.seen_upto)
        self.profiles[sid] = Profile.stored(row, self._decoded)

    def batches(self, size: int) -> Iterator[list[int]]:
        """The readers' ids, ``size`` at a time: by period, then readers who share interests
        next to each other (``readers_alike``); the outbox gets its rows in this order."""
        alike = readers_alike(self.profiles)
        ordered = sorted(self.periods, key=lambda sid: (self.periods[sid], alike(sid)))
        for start in range(0, len(ordered), size):
            yield ordered[start : start + size]


def readers_alike(profiles: Mapping[int, Profile]) -> Callable[[int], tuple[tuple[str, ...], int]]:
    """Where a reader goes among ``profiles`` (by id) so that readers who share interests
    are side by side: their interests held by others too, the fewest held first, then
    their id.

    Senders claim the outbox in the order its rows were planned, a batch at a time, and a
    message's costly part is each paper shown for the interests that matched it, worked
    out once in each sender that sends it. Readers of the same rare interest side by side
    get the papers it matched in the same batches, so one sender works each of those out,
    not every sender. An interest only one reader holds brings nobody closer: left out."""
    holders: Counter[str] = Counter()
    for profile in profiles.values():
        holders.update(set(profile.interests))

    def place(sid: int) -> tuple[tuple[str, ...], int]:
        shared = {i for i in profiles[sid].interests if holders[i] > 1}
        return tuple(sorted(shared, key=lambda i: (holders[i], i))), sid

    return place


def _plan(
    conn: Connection,
    wanted: _Wanted,
    *,
    take_in: bool,
    news_days: int | None,
    batch: int,
    given: Mapping[int, Any] | None = None,
) -> Generator[Plan, None, None]:
    if not wanted.periods:
        return
    carried: dict[int, Carried] = {}
    if take_in:
        for period, ids in by_period(wanted.periods).items():
            carried.update(fold_waiting(conn, set(ids), into=period))
        for sid, taken in carried.items():  # their cut-offs as the store has them now
            if taken.seen_upto is not None and sid in wanted.cutoffs:
                wanted.cutoffs[sid] = min(wanted.cutoffs[sid], taken.seen_upto)
    upto = ingest_sequence(conn)
    papers = papers_store.new_since(conn, min(wanted.cutoffs.values()), upto, news_days=news_days)
    # A run (``take_in``) keeps the statistics' counts for the next to start from.
    stats = store_stats(conn, processes=None, keep=take_in) if papers else None
    day = _Day(papers, stats, wanted) if stats is not None else None
    try:
        for ids in wanted.batches(batch):
            readers = given if given is not None else outbox.recipients(conn, ids)
            ids = [sid for sid in ids if sid in readers]  # those who left since are not planned
            ranked = day.rank(conn, ids) if day is not None else {}
            for sid in ids:
                yield Plan(
                    readers[sid],
                    ranked.get(sid, ()),
                    upto,
                    carried.get(sid),
                    wanted.periods[sid],
                )
            del ranked
    finally:
        if day is not None:
            day.close()


class _Day:
    """The day's papers, ranked for the run's readers a batch at a time: the matching is
    done once for all (``ranker.Ranking``); what was sent and the votes are read per batch.

    "New" is by ingest sequence, never by the clock: a reader's candidates are the papers of
    the ingests after their ``seen_upto``, less those already sent to them."""

    def __init__(self, papers: Sequence[PaperRow], stats: CorpusStats, wanted: _Wanted) -> None:
        self.papers, self.wanted = papers, wanted
        by_seq = sorted((r.seq, r.id) for r in papers)
        self._by_seq = by_seq
        self._seqs = [seq for seq, _ in by_seq]
        self._newer_than: dict[int, frozenset[int]] = {}  # readers share cut-offs (the last run)
        self.ranking = ranker.Ranking(papers, wanted.profiles.values(), stats)

    def _after(self, cutoff: int) -> frozenset[int]:
        fresh = self._newer_than.get(cutoff)
        if fresh is None:
            start = bisect_right(self._seqs, cutoff)
            fresh = self._newer_than[cutoff] = frozenset(pid for _, pid in self._by_seq[start:])
        return fresh

    def rank(self, conn: Connection, ids: Sequence[int]) -> dict[int, list[Ranked]]:
        """The ranked papers of these readers, by id."""
        sent = outbox.sent_pairs(conn, ids, self.papers[0].id)
        cutoffs = self.wanted.cutoffs
        candidates: dict[int, Collection[int]] = {}
        for sid in ids:
            fresh = self._after(cutoffs[sid])
            already = sent.get(sid)
            # Most readers share one cut-off (the last run) and were sent none of the new
            # papers: the rank stage shares work between readers given the same set.
            candidates[sid] = fresh - already if already else fresh
        profiles = [self.wanted.profiles[sid] for sid in ids]
        return self.ranking.rank(profiles, candidates=candidates, votes=reader_votes(conn, ids))

    def close(self) -> None:
        self.ranking.close()


def reader_votes(conn: Connection, ids: Collection[int]) -> dict[int, list[Vote]]:
    """The votes of those of these readers who gave any, as the ranking takes them."""
    return {
        sid: [Vote(v.paper, v.vote == "up") for v in given]
        for sid, given in vote_store.votes_by_reader(conn, ids).items()
    }


def record_plans(
    conn: Connection,
    plans: Iterable[Plan],
    *,
    period: date,
    now: datetime,
    key: bytes,
    mail_from: str,
    run_id: int | None,
    batch: int | None = None,
) -> dict[str, int]:
    """Write the outbox rows for ``plans``, each for its own period (``period`` for a plan
    without one), ``batch`` at a time as they come (``owed_plans`` and ``due_plans`` make
    them a batch at a time: none is kept once written); returns how many are pending and
    skipped. ``batch``: ``PLAN_BATCH`` when not given."""
    counts = {"pending": 0, "skipped": 0}
    item_row = _Items()
    planned: dict[date, list[Planned]] = {}
    held = 0
    for plan in plans:
        when = plan.period or period
        sub = plan.subscriber
        sid = int(sub.id or 0)  # rows read from the store always have their id
        status = "skipped" if not plan.ranked and not sub.send_empty else "pending"
        counts[status] += 1
        items = list(map(item_row, plan.ranked))
        mid = message_id(key, sid, when, mail_from)
        planned.setdefault(when, []).append(
            Planned(sid, status, mid, plan.upto, items, plan.carried)
        )
        held += 1
        if held >= (batch or PLAN_BATCH):
            _record(conn, planned, now=now, run_id=run_id)
            held = 0
    _record(conn, planned, now=now, run_id=run_id)
    return counts


def _record(
    conn: Connection, planned: dict[date, list[Planned]], *, now: datetime, run_id: int | None
) -> None:
    for when, rows in sorted(planned.items()):
        plan_rows.record(conn, rows, period=when, now=now, run_id=run_id)
    planned.clear()


class _Items:
    """Each ranked item as an outbox item row (paper id, score as stored, explanation JSON),
    made once per distinct item: readers given the same answer share its items (a run of
    100,000 readers has 1.8 million items, of a fifth as many distinct ones)."""

    def __init__(self) -> None:
        # By the item's identity, each kept with its row so that the identity stays its own.
        self._rows: dict[int, tuple[Ranked, tuple[int, float, str]]] = {}

    def __call__(self, item: Ranked) -> tuple[int, float, str]:
        found = self._rows.get(id(item))
        if found is None:
            matched = json.dumps(hits_to_json(item.hits))
            if item.because:  # the reason feedback gives is the reader's own
                matched = json.dumps([*json.loads(matched), {"liked": item.because}])
            found = self._rows[id(item)] = (item, (item.paper_id, round(item.score, 4), matched))
        return found[1]
