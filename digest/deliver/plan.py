"""Compose: pick each subscriber's papers for a period and record them as the outbox.

The ``digest`` rows are the outbox. One per subscriber per period (a unique
constraint, not a convention); a paper goes into a subscriber's digests once
(unique on subscriber and paper). Composing is separate from sending, so a
run that dies while sending is finished by the next run without choosing again.
"""

from __future__ import annotations

import json
import random
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, col, select

from digest.rank import ranker
from digest.rank.types import CorpusStats, PlainPaper, Profile, Ranked, hits_to_json
from digest.store.engine import db_time, ingest_sequence
from digest.store.models import Digest, DigestItem, Paper, Subscriber
from digest.store.subscribers import interests_of
from digest.tokens import message_id

STATS_SAMPLE = 20_000  # papers whose term frequencies stand for a larger store
WEEKLY_DAY = 0  # weekly digests go out on Mondays


def store_stats(conn: Connection, sample: int = STATS_SAMPLE) -> CorpusStats:
    """Term statistics of the whole store: every paper, or a uniform sample of ``sample``.

    BM25 needs only each term's share of documents, which a sample of this size estimates
    within a few percent for every term common enough to matter; rare terms stay rare. The
    sample is seeded by the store's size, so the same store always ranks the same way.
    """
    newest = conn.execute(sa.select(sa.func.max(col(Paper.id)))).scalar() or 0
    query = sa.select(col(Paper.title), col(Paper.abstract))
    if newest > sample:
        chosen = random.Random(newest).sample(range(1, newest + 1), sample)
        rows: list[Any] = []
        for start in range(0, sample, 900):  # bound-parameter caps
            part = chosen[start : start + 900]
            rows.extend(conn.execute(query.where(col(Paper.id).in_(part))).all())
    else:
        rows = list(conn.execute(query).all())
    return CorpusStats.from_texts((title, abstract) for title, abstract in rows)


@dataclass(frozen=True)
class Plan:
    """What one subscriber gets this period (possibly nothing), from the papers of ingests
    numbered up to ``upto``."""

    subscriber: Subscriber
    ranked: Sequence[Ranked]
    upto: int = 0


def due(subscriber: Subscriber, period: date) -> bool:
    """Whether a subscriber's frequency calls for a digest in this period."""
    return subscriber.frequency != "weekly" or period.weekday() == WEEKLY_DAY


def plan_digests(
    conn: Connection,
    *,
    period: date,
    subscribers: Sequence[Subscriber] | None = None,
) -> list[Plan]:
    """Rank the new papers for every active subscriber still owed a digest for ``period``.

    "New" is by ingest sequence, never by the clock: the papers of the ingests after the
    subscriber's ``seen_upto`` and up to the newest committed one.
    """
    if subscribers is None:
        done = sa.select(col(Digest.subscriber_id)).where(col(Digest.period) == period)
        with Session(bind=conn) as session:
            subscribers = list(
                session.exec(
                    select(Subscriber)
                    .where(col(Subscriber.status) == "active", col(Subscriber.id).not_in(done))
                    .order_by(col(Subscriber.id))
                ).all()
            )
            for row in subscribers:
                session.expunge(row)
    subscribers = [s for s in subscribers if due(s, period)]
    if not subscribers:
        return []
    upto = ingest_sequence(conn)
    cutoffs = {s.id: s.seen_upto for s in subscribers}
    earliest = min(cutoffs.values())
    rows = conn.execute(
        sa.select(
            col(Paper.id),
            col(Paper.title),
            col(Paper.abstract),
            col(Paper.times_seen),
            col(Paper.seq),
        )
        .where(col(Paper.seq) > earliest, col(Paper.seq) <= upto)
        .order_by(col(Paper.id))
    ).all()
    if not rows:
        return [Plan(s, (), upto) for s in subscribers]
    already: dict[int, set[int]] = {}
    for sub_id, paper_id in conn.execute(
        sa.select(col(DigestItem.subscriber_id), col(DigestItem.paper_id)).where(
            col(DigestItem.paper_id) >= rows[0].id
        )
    ).all():
        if sub_id in cutoffs:
            already.setdefault(sub_id, set()).add(paper_id)
    by_seq = sorted((r.seq, r.id) for r in rows)
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

    def profile(s: Subscriber) -> Profile:
        return Profile(
            int(s.id or 0), tuple(interests_of(s)), max_items=s.max_items, min_score=s.min_score
        )

    papers = [PlainPaper(r.id, r.title, r.abstract, r.times_seen) for r in rows]
    stats = store_stats(conn)
    # Most readers share one cutoff (the last run) and were sent none of the new papers: the
    # rank stage shares work between readers given the same candidate set.
    profiles = [profile(s) for s in subscribers]
    ranked = ranker.rank(
        papers, profiles, stats, candidates={p.id: candidates(p.id) for p in profiles}
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
    now = db_time(now)
    counts = {"pending": 0, "skipped": 0}
    if not plans:
        return counts
    statuses: dict[int, str] = {}
    for plan in plans:
        sub = plan.subscriber
        sid = int(sub.id or 0)  # rows read from the store always have their id
        statuses[sid] = "skipped" if not plan.ranked and not sub.send_empty else "pending"
        counts[statuses[sid]] += 1
    conn.execute(
        sa.insert(Digest),
        [
            {
                "subscriber_id": sub_id,
                "period": period,
                "status": status,
                "message_id": message_id(key, sub_id, period, mail_from),
                "created_at": now,
                "run_id": run_id,
            }
            for sub_id, status in statuses.items()
        ],
    )
    digest_of = dict(
        conn.execute(
            sa.select(col(Digest.subscriber_id), col(Digest.id)).where(col(Digest.period) == period)
        ).all()
    )
    explained: dict[int, str] = {}  # interests are shared across subscribers, and so are hits
    items = []
    for plan in plans:
        sub_id = int(plan.subscriber.id or 0)
        for rank, item in enumerate(plan.ranked, 1):
            matched = explained.get(id(item.hits))
            if matched is None:
                matched = explained[id(item.hits)] = json.dumps(hits_to_json(item.hits))
            items.append(
                {
                    "digest_id": digest_of[sub_id],
                    "subscriber_id": sub_id,
                    "paper_id": item.paper_id,
                    "rank": rank,
                    "score": round(item.score, 4),
                    "matched": matched,
                }
            )
    if items:
        conn.execute(sa.insert(DigestItem), items)
    conn.execute(
        sa.update(Subscriber)
        .where(col(Subscriber.id) == sa.bindparam("_id"))
        .values(last_digest_at=now, seen_upto=sa.bindparam("_upto")),
        [{"_id": int(plan.subscriber.id or 0), "_upto": plan.upto} for plan in plans],
    )
    return counts


def compose(
    engine: Engine,
    *,
    period: date,
    now: datetime,
    key: bytes,
    mail_from: str,
    run_id: int | None = None,
) -> dict[str, int]:
    """Plan and record every digest owed for ``period`` in one transaction."""
    with engine.begin() as conn:
        plans = plan_digests(conn, period=period)
        return record_plans(
            conn, plans, period=period, now=now, key=key, mail_from=mail_from, run_id=run_id
        )
