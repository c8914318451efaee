"""The tables of the store, as SQLModel classes.

The schema itself is created and changed only by ``digest.store.migrations``; these
classes must match it (a test compares them). Times are aware UTC datetimes.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, UniqueConstraint
from sqlmodel import Field, SQLModel

from digest.store.subscription import default


class Paper(SQLModel, table=True):
    """Every paper ever seen, once, under its stable key."""

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True)
    first_key: str | None = None  # the key before it adopted an arXiv id; feed GUIDs use it
    title_key: str = Field(index=True)
    arxiv_id: str | None = None
    title: str
    abstract: str = ""
    authors: str = ""
    url: str | None = None
    listing_date: date | None = None  # the paper's own date; else the day first seen
    revised: date | None = None  # when the paper last changed, as its listing says
    first_seen: datetime = Field(index=True)
    last_seen: datetime
    times_seen: int = 1
    seq: int = Field(default=0, index=True)  # the ingest that first saw it (ingest_sequence)


class StoreMeta(SQLModel, table=True):
    """Facts about the store itself, by name (``feed_authority``)."""

    name: str = Field(primary_key=True)
    value: str


class Dump(SQLModel, table=True):
    """One listing file ingested (or refused), identified by its content hash."""

    id: int | None = Field(default=None, primary_key=True)
    sha256: str = Field(unique=True)
    name: str
    source: str = ""
    layout: str = ""
    listing_date: date | None = None
    ingested_at: datetime
    entries: int = 0
    new: int = 0
    seen: int = 0
    status: str = "ok"  # ok; removed: taken back (its papers seen nowhere else are gone)
    error: str | None = None
    seq: int | None = None  # the ingest number it took: the papers it added carry it
    removed_at: datetime | None = None


class DumpPaper(SQLModel, table=True):
    """A paper a dump saw again (one it added carries the dump's ``seq`` instead)."""

    dump_id: int = Field(foreign_key="dump.id", primary_key=True)
    paper_id: int = Field(foreign_key="paper.id", primary_key=True, index=True)


class Subscriber(SQLModel, table=True):
    """Someone who gets digests, as stored; ``token_salt`` feeds the signed links (never the
    links). Read and written as a ``digest.store.subscription.Subscription`` and its patch,
    whose declaration holds the defaults and bounds."""

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(unique=True)
    status: str = default("status")
    interests: str = "[]"  # JSON: the list of interest expressions
    max_items: int = default("max_items")
    min_score: float = default("min_score")
    frequency: str = default("frequency")
    send_empty: bool = default("send_empty")
    token_salt: str
    created_at: datetime
    last_digest_at: datetime | None = None
    seen_upto: int = 0  # the ingest sequence number their last digest (or joining) saw up to
    timezone: str | None = None  # the zone they read dates in; None: the site's
    request: str | None = None  # a subscription awaiting confirmation (JSON)
    confirmed_nonce: str | None = None  # the nonce of the last confirmed request
    confirm_sends: int = 0  # confirmation emails sent since confirm_window began
    confirm_window: datetime | None = None
    digest_hour: int | None = None  # the hour they want their digest at; None: the site's


class EndedFeed(SQLModel, table=True):
    """The name of a private feed whose reader deleted their data: the name is a signature
    over an id and a random salt, nothing about the person, and lets the feed answer 410."""

    name: str = Field(primary_key=True)
    ended_at: datetime


class Digest(SQLModel, table=True):
    """The outbox: one digest per subscriber per period."""

    __table_args__ = (UniqueConstraint("subscriber_id", "period"),)

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(foreign_key="subscriber.id", index=True)
    period: date
    status: str = "pending"
    message_id: str
    subject: str = ""
    attempts: int = 0
    first_attempt_at: datetime | None = None  # the first attempt an answer about them cost
    last_error: str | None = None
    created_at: datetime
    sent_at: datetime | None = None
    run_id: int | None = Field(default=None, foreign_key="run.id")
    claimed_by: str | None = None  # the sender sending it (and, once sent, that sent it)
    claimed_until: datetime | None = None  # the claim's lease: others may take it after


class DigestItem(SQLModel, table=True):
    """A paper in a digest; unique per subscriber so a paper reaches a reader once."""

    __table_args__ = (UniqueConstraint("subscriber_id", "paper_id"),)

    id: int | None = Field(default=None, primary_key=True)
    digest_id: int = Field(foreign_key="digest.id", index=True)
    subscriber_id: int = Field(foreign_key="subscriber.id")
    paper_id: int = Field(foreign_key="paper.id")
    rank: int
    score: float
    matched: str = "[]"


class Feedback(SQLModel, table=True):
    """A reader's vote on a paper they were sent: one per (subscriber, paper), the latest."""

    __table_args__ = (UniqueConstraint("subscriber_id", "paper_id"),)

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(foreign_key="subscriber.id")
    paper_id: int = Field(foreign_key="paper.id")
    vote: str  # "up" (more like this) or "down" (not for me)
    voted_at: datetime


class Run(SQLModel, table=True):
    """A scheduled or manual run with its figures (JSON)."""

    id: int | None = Field(default=None, primary_key=True)
    kind: str = "run"
    period: date | None = None
    started_at: datetime
    finished_at: datetime | None = None
    status: str = "running"
    figures: str = "{}"
    error: str | None = None


class TransportState(SQLModel, table=True):
    """How a mail transport last fared: its last error, and since when it has been failing."""

    id: int | None = Field(default=None, primary_key=True)
    transport: str = Field(unique=True)  # as ``transport_label`` names it: no credentials
    last_error: str | None = None
    failing_since: datetime | None = None
    last_failure_at: datetime | None = None
    last_ok_at: datetime | None = None


class SourceState(SQLModel, table=True):
    """What we know of a fetched source: validators for conditional GET and the last outcome."""

    id: int | None = Field(default=None, primary_key=True)
    url: str = Field(unique=True)
    etag: str | None = None
    last_modified: str | None = None
    last_fetch_at: datetime | None = None
    last_status: str = ""
    last_error: str | None = None
    last_new_at: datetime | None = None
    bytes: int = 0


class SiteKey(SQLModel, table=True):
    """A key that signs (the newest generation whose ``signs_from`` has come) or verifies
    (every key until ``retired_at``) the site's links; shared by every host."""

    id: int | None = Field(default=None, primary_key=True)
    generation: int | None = Field(default=None, unique=True)  # None: verifies, never signs
    key: str = Field(unique=True)
    created_at: datetime
    signs_from: datetime | None = None
    retired_at: datetime | None = None


class RateCounter(SQLModel, table=True):
    """Events counted under ``name`` from ``window_start`` to ``expires`` (Unix ms)."""

    name: str = Field(primary_key=True)
    window_start: int = Field(primary_key=True, sa_type=BigInteger)
    count: int
    expires: int = Field(index=True, sa_type=BigInteger)
