"""Ordered, append-only schema migrations.

``MIGRATIONS[i]`` takes the schema from version ``i`` to ``i + 1``. Never edit
one that has shipped: add a new one at the end. Each migration defines the
tables it creates with its own ``MetaData`` so that later changes to
``digest.store.models`` cannot change what an old migration does.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from digest.errors import StoreError


def _v1_initial(conn: Connection) -> None:
    meta = sa.MetaData()
    sa.Table(
        "paper",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String, nullable=False, unique=True),
        sa.Column("title_key", sa.String, nullable=False, index=True),
        sa.Column("arxiv_id", sa.String),  # the key carries it; no second index to keep
        sa.Column("title", sa.String, nullable=False),
        sa.Column("abstract", sa.String, nullable=False, server_default=""),
        sa.Column("authors", sa.String, nullable=False, server_default=""),
        sa.Column("url", sa.String),
        sa.Column("listing_date", sa.Date),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("times_seen", sa.Integer, nullable=False, server_default="1"),
    )
    sa.Table(
        "dump",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sha256", sa.String, nullable=False, unique=True),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("source", sa.String, nullable=False, server_default=""),
        sa.Column("layout", sa.String, nullable=False, server_default=""),
        sa.Column("listing_date", sa.Date),
        sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entries", sa.Integer, nullable=False, server_default="0"),
        sa.Column("new", sa.Integer, nullable=False, server_default="0"),
        sa.Column("seen", sa.Integer, nullable=False, server_default="0"),
        sa.Column("status", sa.String, nullable=False, server_default="ok"),
        sa.Column("error", sa.String),
    )
    sa.Table(
        "subscriber",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String, nullable=False, unique=True),
        sa.Column("status", sa.String, nullable=False, server_default="active"),
        sa.Column("interests", sa.String, nullable=False, server_default="[]"),
        sa.Column("max_items", sa.Integer, nullable=False, server_default="20"),
        sa.Column("min_score", sa.Float, nullable=False, server_default="0"),
        sa.Column("frequency", sa.String, nullable=False, server_default="daily"),
        sa.Column("send_empty", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("token_salt", sa.String, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_digest_at", sa.DateTime(timezone=True)),
    )
    sa.Table(
        "run",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String, nullable=False, server_default="run"),
        sa.Column("period", sa.Date),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("status", sa.String, nullable=False, server_default="running"),
        sa.Column("figures", sa.String, nullable=False, server_default="{}"),
        sa.Column("error", sa.String),
    )
    sa.Table(
        "digest",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "subscriber_id", sa.Integer, sa.ForeignKey("subscriber.id"), nullable=False, index=True
        ),
        sa.Column("period", sa.Date, nullable=False),
        sa.Column("status", sa.String, nullable=False, server_default="pending"),
        sa.Column("message_id", sa.String, nullable=False),
        sa.Column("subject", sa.String, nullable=False, server_default=""),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.String),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("run.id")),
        sa.UniqueConstraint("subscriber_id", "period"),
    )
    sa.Table(
        "digestitem",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("digest_id", sa.Integer, sa.ForeignKey("digest.id"), nullable=False, index=True),
        sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscriber.id"), nullable=False),
        sa.Column("paper_id", sa.Integer, sa.ForeignKey("paper.id"), nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("matched", sa.String, nullable=False, server_default="[]"),
        sa.UniqueConstraint("subscriber_id", "paper_id"),
    )
    sa.Table(
        "sourcestate",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("url", sa.String, nullable=False, unique=True),
        sa.Column("etag", sa.String),
        sa.Column("last_modified", sa.String),
        sa.Column("last_fetch_at", sa.DateTime(timezone=True)),
        sa.Column("last_status", sa.String, nullable=False, server_default=""),
        sa.Column("last_error", sa.String),
        sa.Column("last_new_at", sa.DateTime(timezone=True)),
        sa.Column("bytes", sa.Integer, nullable=False, server_default="0"),
    )
    meta.create_all(conn)


def _v2_search_index(conn: Connection) -> None:
    """SQLite: a full-text index over titles and abstracts.

    New papers are indexed in bulk up to a watermark (``search_state``) at the end of each
    ingest, which is cheaper than a trigger per row; text changes reindex by trigger.
    """
    if conn.dialect.name != "sqlite":
        return  # other databases search with their own operators
    for statement in (
        "CREATE VIRTUAL TABLE paper_fts USING fts5(title, abstract, content='paper',"
        " content_rowid='id', tokenize='porter unicode61 remove_diacritics 2')",
        "CREATE TABLE search_state (indexed_upto INTEGER NOT NULL)",
        "INSERT INTO search_state (indexed_upto) SELECT coalesce(max(id), 0) FROM paper",
        "CREATE TRIGGER paper_fts_delete AFTER DELETE ON paper"
        " WHEN old.id <= (SELECT indexed_upto FROM search_state) BEGIN"
        " INSERT INTO paper_fts(paper_fts, rowid, title, abstract)"
        " VALUES ('delete', old.id, old.title, old.abstract); END",
        # seeing a paper again bumps last_seen on every row; only a text change reindexes
        "CREATE TRIGGER paper_fts_update AFTER UPDATE OF title, abstract ON paper"
        " WHEN (old.title IS NOT new.title OR old.abstract IS NOT new.abstract)"
        " AND old.id <= (SELECT indexed_upto FROM search_state) BEGIN"
        " INSERT INTO paper_fts(paper_fts, rowid, title, abstract)"
        " VALUES ('delete', old.id, old.title, old.abstract);"
        " INSERT INTO paper_fts(rowid, title, abstract) VALUES (new.id, new.title, new.abstract);"
        " END",
        "INSERT INTO paper_fts(paper_fts) VALUES ('rebuild')",
    ):
        conn.exec_driver_sql(statement)


def _v3_ingest_sequence(conn: Connection) -> None:
    """Cut-offs by an ingest sequence instead of the wall clock, which may go backwards.

    Every ingest takes the next number of ``ingest_sequence`` (a one-row counter, so ingests
    take their numbers one at a time) and stamps it on the papers it adds as ``paper.seq``;
    a subscriber's ``seen_upto`` is the number their last digest (or their joining) saw up to.
    Existing papers are numbered in the order of ``first_seen`` and each subscriber's
    ``seen_upto`` is the number of the newest paper first seen by their old time cut-off,
    so every existing store chooses exactly the papers it chose before.
    """
    conn.execute(sa.text("ALTER TABLE paper ADD COLUMN seq INTEGER NOT NULL DEFAULT 0"))
    conn.execute(sa.text("ALTER TABLE subscriber ADD COLUMN seen_upto INTEGER NOT NULL DEFAULT 0"))
    conn.execute(
        sa.text(
            "UPDATE paper SET seq = numbered.n FROM"
            " (SELECT id, DENSE_RANK() OVER (ORDER BY first_seen) AS n FROM paper) AS numbered"
            " WHERE numbered.id = paper.id"
        )
    )
    conn.execute(sa.text("CREATE INDEX ix_paper_seq ON paper (seq)"))
    conn.execute(
        sa.text(
            "UPDATE subscriber SET seen_upto = coalesce((SELECT p.seq FROM paper p"
            " WHERE p.first_seen <= coalesce(subscriber.last_digest_at, subscriber.created_at)"
            " ORDER BY p.first_seen DESC LIMIT 1), 0)"
        )
    )
    conn.execute(sa.text("CREATE TABLE ingest_sequence (value INTEGER NOT NULL)"))
    conn.execute(
        sa.text("INSERT INTO ingest_sequence (value) SELECT coalesce(max(seq), 0) FROM paper")
    )


def _v4_transport_state(conn: Connection) -> None:
    """How the mail transport last fared, so ``status`` can say what is wrong and since when."""
    meta = sa.MetaData()
    sa.Table(
        "transportstate",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("transport", sa.String, nullable=False, unique=True),
        sa.Column("last_error", sa.String),
        sa.Column("failing_since", sa.DateTime(timezone=True)),
        sa.Column("last_failure_at", sa.DateTime(timezone=True)),
        sa.Column("last_ok_at", sa.DateTime(timezone=True)),
    )
    meta.create_all(conn)


def _v5_stable_feed_ids(conn: Connection) -> None:
    """What feed GUIDs are made of, kept so that they never change.

    ``paper.first_key`` is the key a paper had before it adopted an arXiv id (NULL while
    the key is the first one, so every existing row keeps the GUID it has today).
    ``storemeta`` keeps the authority of the GUIDs' ``tag:`` URIs once feeds are first
    published, so that a new ``base_url`` does not re-announce every paper.
    """
    conn.execute(sa.text("ALTER TABLE paper ADD COLUMN first_key VARCHAR"))
    meta = sa.MetaData()
    sa.Table(
        "storemeta",
        meta,
        sa.Column("name", sa.String, primary_key=True),
        sa.Column("value", sa.String, nullable=False),
    )
    meta.create_all(conn)


def _v6_self_service(conn: Connection) -> None:
    """What subscribing on the web front keeps per subscriber.

    ``request`` is a subscription waiting for its confirmation (JSON: the interests and
    options asked for, and the nonce its link is signed with), so an existing subscriber's
    settings change only when they confirm; ``confirmed_nonce`` is the last one confirmed,
    so a replayed link is told apart from a forged one. ``confirm_sends`` counts the
    confirmation emails sent since ``confirm_window`` began (the resend limit).
    ``timezone`` is the zone the subscriber reads dates in (NULL: the site's).
    """
    moment = sa.DateTime(timezone=True).compile(dialect=conn.dialect)
    for column in (
        "timezone VARCHAR",
        "request VARCHAR",
        "confirmed_nonce VARCHAR",
        "confirm_sends INTEGER NOT NULL DEFAULT 0",
        f"confirm_window {moment}",
    ):
        conn.execute(sa.text(f"ALTER TABLE subscriber ADD COLUMN {column}"))


def _v7_feedback(conn: Connection) -> None:
    """Readers' votes on the papers they were sent: one row per reader and paper."""
    meta = sa.MetaData()
    sa.Table("subscriber", meta, sa.Column("id", sa.Integer, primary_key=True))
    sa.Table("paper", meta, sa.Column("id", sa.Integer, primary_key=True))
    table = sa.Table(
        "feedback",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscriber.id"), nullable=False),
        sa.Column("paper_id", sa.Integer, sa.ForeignKey("paper.id"), nullable=False),
        sa.Column("vote", sa.String, nullable=False),
        sa.Column("voted_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("subscriber_id", "paper_id"),
    )
    table.create(conn)


def _v8_first_attempt(conn: Connection) -> None:
    """When a digest's first charged attempt was made: it fails for good only once its
    attempts are spread over days, never within one bad afternoon."""
    moment = sa.DateTime(timezone=True).compile(dialect=conn.dialect)
    conn.execute(sa.text(f"ALTER TABLE digest ADD COLUMN first_attempt_at {moment}"))


def _v9_dump_papers(conn: Connection) -> None:
    """Which papers each dump brought, so that a bad dump can be taken back.

    ``dump.seq`` is the ingest number the dump took, which the papers it added carry
    (``paper.seq``); dumps ingested before are matched to their papers by time, as an
    ingest stamps its papers first seen at the moment it records the dump. ``dump_paper``
    holds the papers a dump saw again, known before it. ``dump.removed_at``: when it was
    taken back (``status`` "removed").
    """
    moment = sa.DateTime(timezone=True).compile(dialect=conn.dialect)
    conn.execute(sa.text("ALTER TABLE dump ADD COLUMN seq INTEGER"))
    conn.execute(sa.text(f"ALTER TABLE dump ADD COLUMN removed_at {moment}"))
    conn.execute(
        sa.text(
            "UPDATE dump SET seq = (SELECT max(p.seq) FROM paper p"
            " WHERE p.first_seen = dump.ingested_at) WHERE new > 0"
        )
    )
    meta = sa.MetaData()
    sa.Table("dump", meta, sa.Column("id", sa.Integer, primary_key=True))
    sa.Table("paper", meta, sa.Column("id", sa.Integer, primary_key=True))
    sa.Table(
        "dumppaper",
        meta,
        sa.Column("dump_id", sa.Integer, sa.ForeignKey("dump.id"), primary_key=True),
        sa.Column("paper_id", sa.Integer, sa.ForeignKey("paper.id"), primary_key=True, index=True),
    ).create(conn)


def _v10_paper_dates(conn: Connection) -> None:
    """Every paper has its own date, and the newest by it are found through an index.

    A paper listed without a date is dated by the day it was first seen (UTC), as new
    papers are from now on; feeds order by this date, and digests take only recent ones.
    ``revised`` is the day the paper last changed (a new version), when its listing says.
    """
    if conn.dialect.name == "sqlite":
        day = "substr(first_seen, 1, 10)"  # stored as 'YYYY-MM-DD HH:MM:SS' in UTC
    else:
        day = "CAST(first_seen AT TIME ZONE 'UTC' AS DATE)"
    conn.execute(sa.text(f"UPDATE paper SET listing_date = {day} WHERE listing_date IS NULL"))
    conn.execute(sa.text("CREATE INDEX ix_paper_listing_date ON paper (listing_date, id)"))
    conn.execute(sa.text("ALTER TABLE paper ADD COLUMN revised DATE"))


def _v11_ended_feeds(conn: Connection) -> None:
    """The private feed names of readers who deleted their data (their feeds answer 410)."""
    meta = sa.MetaData()
    table = sa.Table(
        "endedfeed",
        meta,
        sa.Column("name", sa.String, primary_key=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
    )
    table.create(conn)


def _v12_site_keys_and_counters(conn: Connection) -> None:
    """What every host of one site shares: the keys that sign its links, and counters.

    ``sitekey``: a key of the generation ``generation`` signs from ``signs_from`` (the
    newest such one signs; ``NULL``: never signs, a key adopted only so that what it signed
    keeps working); every key verifies until ``retired_at``. Generations are unique, so two
    hosts making the first key (generation 1) at once end up with the same one.
    ``ratecounter``: events counted per name and window (``window_start``, Unix milliseconds), for
    the rate limits every process shares; ``expires`` says when the row may go.
    """
    meta = sa.MetaData()
    sa.Table(
        "sitekey",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("generation", sa.Integer, unique=True),
        sa.Column("key", sa.String, nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signs_from", sa.DateTime(timezone=True)),
        sa.Column("retired_at", sa.DateTime(timezone=True)),
    )
    sa.Table(
        "ratecounter",
        meta,
        sa.Column("name", sa.String, primary_key=True),
        sa.Column("window_start", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("expires", sa.BigInteger, nullable=False, index=True),
    )
    meta.create_all(conn)


def _v13_digest_hour(conn: Connection) -> None:
    """``digest_hour``: the hour of the day (0 to 23, in the reader's own time zone) a
    reader wants their digest; NULL: the site's schedule."""
    conn.execute(sa.text("ALTER TABLE subscriber ADD COLUMN digest_hour INTEGER"))


def _v14_outbox_claims(conn: Connection) -> None:
    """The outbox as a queue: who claimed a digest to send it and until when
    (``claimed_by``, ``claimed_until``), and the senders at work with their heartbeat."""
    moment = sa.DateTime(timezone=True).compile(dialect=conn.dialect)
    conn.execute(sa.text("ALTER TABLE digest ADD COLUMN claimed_by VARCHAR"))
    conn.execute(sa.text(f"ALTER TABLE digest ADD COLUMN claimed_until {moment}"))
    # what a claim looks for: waiting digests, oldest first
    conn.execute(sa.text("CREATE INDEX ix_digest_status_id ON digest (status, id)"))
    meta = sa.MetaData()
    sa.Table(
        "sender",
        meta,
        sa.Column("name", sa.String, primary_key=True),
        sa.Column("host", sa.String, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent", sa.Integer, nullable=False),
    )
    meta.create_all(conn)


def _v15_newest_sent(conn: Connection) -> None:
    """Each reader's sent digests by time: a reader's newest items are read from their
    newest digests (``feed_rows``), not from every digest they were ever sent."""
    conn.execute(
        sa.text("CREATE INDEX ix_digest_subscriber_sent ON digest (subscriber_id, status, sent_at)")
    )


MIGRATIONS: list[Callable[[Connection], None]] = [
    _v1_initial,
    _v2_search_index,
    _v3_ingest_sequence,
    _v4_transport_state,
    _v5_stable_feed_ids,
    _v6_self_service,
    _v7_feedback,
    _v8_first_attempt,
    _v9_dump_papers,
    _v10_paper_dates,
    _v11_ended_feeds,
    _v12_site_keys_and_counters,
    _v13_digest_hour,
    _v14_outbox_claims,
    _v15_newest_sent,
]

SCHEMA_VERSION = len(MIGRATIONS)


def current_version(conn: Connection) -> int:
    """The schema version recorded in the database (0 for an empty one)."""
    if not sa.inspect(conn).has_table("schema_version"):
        return 0
    value = conn.execute(sa.text("SELECT max(version) FROM schema_version")).scalar()
    return int(value or 0)


def migrate(conn: Connection) -> int:
    """Apply every migration the database lacks, in order; return how many ran."""
    if not sa.inspect(conn).has_table("schema_version"):
        conn.execute(sa.text("CREATE TABLE schema_version (version INTEGER NOT NULL)"))
    version = current_version(conn)
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the database has schema version {version}, newer than this digest knows"
            f" ({SCHEMA_VERSION}); upgrade digest"
        )
    for number in range(version, SCHEMA_VERSION):
        MIGRATIONS[number](conn)
        conn.execute(sa.text("INSERT INTO schema_version (version) VALUES (:v)"), {"v": number + 1})
    return SCHEMA_VERSION - version
