"""Subscribers as stored: who gets digests, what they care about, the salt of their links.

Values come here validated (digest.service.subscriptions checks them); this module is the SQL.
The database holds only each subscriber's random salt, never a signed link (digest.tokens).

Consent: an address that unsubscribed or bounced stays suppressed. Saving it
again leaves it so unless the operator says the person asked to come back
(``resubscribe``); the web front's double opt-in is the other way back: a request
(:func:`request_subscription`) changes nothing a reader gets until it is confirmed
(:func:`confirm_request`).

Statuses: ``pending`` (asked, not confirmed: gets nothing), ``active``, ``paused`` (keeps
the settings, gets nothing until resumed), ``unsubscribed`` and ``bounced``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, col, select

from digest.clock import as_utc
from digest.errors import UsageError
from digest.store import votes as feedback
from digest.store.engine import ingest_sequence, insert_or_skip, reading, transaction
from digest.store.models import Digest, DigestItem, EndedFeed, Paper, Subscriber
from digest.store.subscription import STATUSES, Subscription, SubscriptionPatch, apply

SUPPRESSED = ("unsubscribed", "bounced")  # the address left: no mail until it comes back


def interests_of(subscriber: Subscriber) -> list[str]:
    """The subscriber's interest expressions."""
    value: list[str] = json.loads(subscriber.interests)
    return value


def active_salts(conn: Connection) -> dict[int, str]:
    """The link salt of every active subscriber, by id (their private feeds are named from it)."""
    query = sa.select(col(Subscriber.id), col(Subscriber.token_salt)).where(
        col(Subscriber.status) == "active"
    )
    return {ident: salt for ident, salt in conn.execute(query).all() if ident is not None}


def feed_salts(conn: Connection) -> dict[int, tuple[str, str]]:
    """Every subscriber's link salt and status, by id: whose private feed a name is, and
    whether it is served (active), kept (paused) or gone (left)."""
    query = sa.select(col(Subscriber.id), col(Subscriber.token_salt), col(Subscriber.status))
    rows = conn.execute(query).all()
    return {ident: (salt, status) for ident, salt, status in rows if ident is not None}


def stored_addresses(conn: Connection) -> set[str]:
    """Every address the store holds, of any status (mail files of no one else are stale)."""
    return {email for (email,) in conn.execute(sa.select(col(Subscriber.email))).all()}


def end_feed(conn: Connection, name: str, now: datetime) -> None:
    """Remember that the private feed ``name`` ended with its reader's data."""
    table = EndedFeed.__table__  # type: ignore[attr-defined]
    if conn.execute(sa.select(table.c.name).where(table.c.name == name)).first() is None:
        conn.execute(sa.insert(table).values(name=name, ended_at=now))


def feed_ended(engine: Engine, name: str) -> bool:
    """Whether ``name`` was the private feed of a reader who deleted their data."""
    table = EndedFeed.__table__  # type: ignore[attr-defined]
    with reading(engine) as conn:
        found = conn.execute(sa.select(table.c.name).where(table.c.name == name)).first()
        conn.rollback()
    return found is not None


@dataclass(frozen=True)
class Saved:
    """A subscriber as stored, and their status and interests before (None: a new one)."""

    row: Subscriber
    status_before: str | None = None
    interests_before: list[str] = field(default_factory=list)

    @property
    def action(self) -> str:
        """subscribed (new), resubscribed (back from suppressed) or updated."""
        if self.status_before is None:
            return "subscribed"
        if self.status_before in SUPPRESSED and self.row.status not in SUPPRESSED:
            return "resubscribed"
        return "updated"


def _stored(session: Session, forms: Sequence[str]) -> Subscriber | None:
    rows = session.exec(select(Subscriber).where(col(Subscriber.email).in_(forms))).all()
    return min(rows, key=lambda row: forms.index(row.email), default=None)


def _refusal(left: Sequence[Subscriber]) -> str:
    named = ", ".join(f"{row.email} {row.status}" for row in left[:3])
    more = f" and {len(left) - 3} more" if len(left) > 3 else ""
    return (
        f"{named}{more}: not reactivated, an address that left stays suppressed"
        " (add --resubscribe only if they asked to come back)"
    )


def store_subscribers(
    engine: Engine,
    checked: Sequence[tuple[SubscriptionPatch, Sequence[str]]],
    *,
    now: datetime,
    resubscribe: bool = False,
) -> list[Saved]:
    """Add subscribers or change their settings, all in one transaction (or none of them).

    Each entry is a checked change naming an address, and the address forms a stored row
    may have (canonical first). An address that unsubscribed or bounced is made active
    again only with ``resubscribe``; otherwise a UsageError names it and nothing is saved.
    """
    with Session(engine, expire_on_commit=False) as session:
        rows: dict[str, Subscriber | None] = {}
        for patch, forms in checked:
            if patch.email not in rows:
                rows[patch.email] = _stored(session, forms)
        left = [
            row
            for patch, _ in checked
            if (row := rows[patch.email]) is not None
            and row.status in SUPPRESSED
            and patch.get("status", row.status) not in SUPPRESSED
        ]
        if left and not resubscribe:
            raise UsageError(_refusal(list({row.email: row for row in left}.values())))
        saved = []
        for patch, _ in checked:
            row = rows[patch.email]
            if row is None:
                row = rows[patch.email] = Subscriber(
                    email=patch.email,
                    token_salt=secrets.token_hex(16),
                    created_at=as_utc(now, naive="refuse"),
                    # their first digest holds the papers of ingests after this one
                    seen_upto=ingest_sequence(session.connection()),
                )
                before: tuple[str | None, list[str]] = (None, [])
            else:
                before = (row.status, interests_of(row))
                if row.status in SUPPRESSED and patch.get("status", row.status) not in SUPPRESSED:
                    # back after leaving: like a new subscriber, from the next listing on
                    row.seen_upto = ingest_sequence(session.connection())
            apply(row, patch)  # an address kept in an older form gets the canonical one
            session.add(row)
            saved.append((row, before))
        session.commit()
    return [Saved(row, status, interests) for row, (status, interests) in saved]


def subscriber_at(engine: Engine, forms: Sequence[str]) -> Subscriber | None:
    """The subscriber stored under one of these address forms (the first form wins)."""
    with Session(engine) as session:
        return _stored(session, forms)


def subscriber_by_id(engine: Engine, ident: int) -> Subscriber | None:
    """The subscriber with this id, if any."""
    with Session(engine) as session:
        return session.get(Subscriber, ident)


def update_status(engine: Engine, ident: int, status: str) -> Subscriber:
    """Change a subscriber's status (unsubscribe, bounce, reactivate); returns the row."""
    with Session(engine) as session:
        row = session.get(Subscriber, ident)
        assert row is not None
        row.status = status
        session.add(row)
        session.commit()
        session.refresh(row)
        return row


def list_subscribers(engine: Engine, *, status: str | None = None) -> list[Subscriber]:
    """All subscribers (or those with ``status``), by address."""
    with Session(engine) as session:
        query = select(Subscriber).order_by(col(Subscriber.email))
        if status is not None:
            query = query.where(col(Subscriber.status) == status)
        return list(session.exec(query).all())


def count_by_status(engine: Engine) -> dict[str, int]:
    """How many subscribers have each status."""
    with reading(engine) as conn:
        rows = conn.execute(
            sa.select(col(Subscriber.status), sa.func.count()).group_by(col(Subscriber.status))
        ).all()
    counts = dict.fromkeys(STATUSES, 0)
    counts.update({status: int(n) for status, n in rows})
    return counts


# --- self-service: requests, confirmation, preferences, pause, unsubscribe, export, erase ---

CONFIRM_WINDOW = timedelta(hours=24)  # confirmation emails are counted per address per window


# The same request again this soon (a double click, a client retrying, a burst of the same
# form) sends no second email: the first one's link is on its way and stays the one that works.
REPEAT_WINDOW = timedelta(minutes=1)
_SUBSCRIBER = Subscriber.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Requested:
    """A stored request: whose it is, and what its confirmation link is signed with;
    ``repeat``: the same request was stored a moment ago, and nothing changed."""

    subscriber_id: int
    token_salt: str
    nonce: str
    repeat: bool = False


def _pending_request(row: Subscriber) -> tuple[SubscriptionPatch, str] | None:
    if not row.request:
        return None
    data = json.loads(row.request)
    nonce = data.pop("nonce")
    data.pop("at", None)  # when it was asked (requests stored before it have none)
    return SubscriptionPatch(**data), nonce


def _asked_at(row: Subscriber) -> datetime | None:
    at = json.loads(row.request).get("at") if row.request else None
    return None if at is None else as_utc(datetime.fromisoformat(at))


def pending_nonce(row: Subscriber) -> str | None:
    """The nonce of the subscriber's request awaiting confirmation, if any."""
    pending = _pending_request(row)
    return None if pending is None else pending[1]


def request_subscription(
    engine: Engine,
    forms: Sequence[str],
    wanted: SubscriptionPatch,
    *,
    now: datetime,
    sends_allowed: int,
) -> Requested | None:
    """Keep a request to subscribe ``forms[0]`` with ``wanted``, for confirmation by email.

    A new address is stored ``pending``; a known one keeps its status and settings until
    the request is confirmed (a newer request replaces an older one; the same one again
    within ``REPEAT_WINDOW`` changes nothing and is a ``repeat``). None, with nothing
    changed, when the address has had ``sends_allowed`` confirmation emails this window.
    Requests for one address at once (from any process or host) take turns on its row:
    one row, and each sees what the one before it counted.
    """
    now = as_utc(now, naive="refuse")
    with Session(engine, expire_on_commit=False) as session:
        conn = session.connection()
        if _stored(session, forms) is None:
            conn.execute(
                insert_or_skip(conn, _SUBSCRIBER)
                .values(
                    email=forms[0],
                    status="pending",
                    token_salt=secrets.token_hex(16),
                    created_at=now,
                    seen_upto=ingest_sequence(conn),
                )
                .on_conflict_do_nothing()
            )
        query = select(Subscriber).where(col(Subscriber.email).in_(forms)).with_for_update()
        rows = session.exec(query.execution_options(populate_existing=True)).all()
        row = min(rows, key=lambda row: forms.index(row.email))
        pending = _pending_request(row)
        asked = _asked_at(row)
        if (
            pending is not None
            and pending[0] == wanted
            and asked is not None
            # either way: a request that took its time arrives after a later one
            and abs(now - asked) < REPEAT_WINDOW
        ):
            session.rollback()
            return Requested(int(row.id or 0), row.token_salt, pending[1], repeat=True)
        window = as_utc(row.confirm_window) if row.confirm_window else None
        if window is None or now - window >= CONFIRM_WINDOW:
            row.confirm_window, row.confirm_sends = now, 0
        if row.confirm_sends >= sends_allowed:
            session.rollback()
            return None
        row.confirm_sends += 1
        nonce = secrets.token_hex(8)
        row.request = json.dumps(
            {
                **wanted.as_json(),
                "nonce": nonce,
                "at": now.isoformat(),
            }
        )
        session.add(row)
        session.commit()
        return Requested(int(row.id or 0), row.token_salt, nonce)


def forget_unconfirmed(engine: Engine, before: datetime) -> int:
    """Delete the addresses that asked on the web and never confirmed, when their last
    request was made before ``before`` (its link long expired): nobody consented to keeping
    them. Rows made any other way (an operator's ``pending``) have no request window and stay.
    """
    with transaction(engine) as conn:
        gone = conn.execute(
            sa.delete(Subscriber).where(
                col(Subscriber.status) == "pending",
                col(Subscriber.confirmed_nonce).is_(None),
                col(Subscriber.confirm_window) < as_utc(before, naive="refuse"),
            )
        )
        return int(gone.rowcount)


def confirm_request(engine: Engine, ident: int, nonce: str) -> bool:
    """Apply the request with ``nonce``: the settings it asked for, and the subscriber
    active from the next listing on (when they were not active). False when no request
    with that nonce waits (confirmed already, or replaced): nothing changes."""
    with Session(engine) as session:
        row = session.get(Subscriber, ident)
        pending = None if row is None else _pending_request(row)
        if row is None or pending is None or pending[1] != nonce:
            return False
        wanted = pending[0]
        if row.status != "active":
            # like a new subscriber: from the next listing on; what came before is not owed
            row.seen_upto = ingest_sequence(session.connection())
        row.status = "active"
        apply(row, wanted)
        row.request = None
        row.confirmed_nonce = nonce
        session.add(row)
        session.commit()
        return True


def update_preferences(engine: Engine, ident: int, wanted: SubscriptionPatch) -> None:
    """Change a subscriber's interests and options (from their manage page)."""
    with Session(engine) as session:
        row = session.get(Subscriber, ident)
        if row is not None:
            apply(row, wanted)
            session.add(row)
            session.commit()


def set_paused(engine: Engine, ident: int, paused: bool) -> str | None:
    """Pause an active subscriber or resume a paused one; returns the status after (None:
    no such subscriber). Other statuses are left as they are: an address that left comes
    back only through a confirmed request. A resumed reader starts from the next listing."""
    with Session(engine) as session:
        row = session.get(Subscriber, ident)
        if row is None:
            return None
        if paused and row.status == "active":
            row.status = "paused"
        elif not paused and row.status == "paused":
            row.status = "active"
            row.seen_upto = ingest_sequence(session.connection())
        session.add(row)
        session.commit()
        return row.status


def unsubscribe(engine: Engine, ident: int) -> str | None:
    """Stop all mail to a subscriber (a bounced one stays bounced) and drop any request
    awaiting confirmation; returns the status after (None: no such subscriber). Digests
    still waiting for them are withdrawn when the next run sends."""
    with Session(engine) as session:
        row = session.get(Subscriber, ident)
        if row is None:
            return None
        if row.status not in SUPPRESSED:
            row.status = "unsubscribed"
        row.request = None
        session.add(row)
        session.commit()
        return row.status


def _moment(value: datetime | None) -> str | None:
    return None if value is None else as_utc(value).isoformat()


def export_subscriber(conn: Connection, ident: int) -> dict[str, Any]:
    """Everything stored about a subscriber, as JSON-ready data: their settings, a request
    awaiting confirmation, the confirmation emails counted, every digest with its papers
    and their votes on papers (not the secret salt of their links, nor the run's internal cut-off)."""
    sub = Subscriber.__table__  # type: ignore[attr-defined]
    row = conn.execute(sa.select(sub).where(sub.c.id == ident)).mappings().first()
    if row is None:
        return {}
    digests = conn.execute(
        sa.select(
            col(Digest.id),
            col(Digest.period),
            col(Digest.status),
            col(Digest.subject),
            col(Digest.created_at),
            col(Digest.sent_at),
        )
        .where(col(Digest.subscriber_id) == ident)
        .order_by(col(Digest.period))
    ).all()
    items: dict[int, list[dict[str, Any]]] = {digest.id: [] for digest in digests}
    for item in conn.execute(
        sa.select(
            col(DigestItem.digest_id),
            col(DigestItem.rank),
            col(DigestItem.score),
            col(Paper.key),
            col(Paper.title),
        )
        .join(Paper, col(Paper.id) == col(DigestItem.paper_id))
        .where(col(DigestItem.subscriber_id) == ident)
        .order_by(col(DigestItem.digest_id), col(DigestItem.rank))
    ).all():
        items[item.digest_id].append(
            {
                "rank": item.rank,
                "score": round(item.score, 4),
                "paper": item.key,
                "title": item.title,
            }
        )
    request = json.loads(row["request"]) if row["request"] else None
    if request is not None:
        request.pop("nonce", None)
        request.pop("at", None)
    return {
        **Subscription.of(Subscriber(**row)).choices(),
        "created_at": _moment(row["created_at"]),
        "last_digest_at": _moment(row["last_digest_at"]),
        "awaiting_confirmation": request,
        "confirmation_emails": {
            "sent": row["confirm_sends"],
            "counted_since": _moment(row["confirm_window"]),
        },
        "digests": [
            {
                "period": digest.period.isoformat(),
                "status": digest.status,
                "subject": digest.subject,
                "created_at": _moment(digest.created_at),
                "sent_at": _moment(digest.sent_at),
                "papers": items[digest.id],
            }
            for digest in digests
        ],
        "votes": feedback.export_rows(conn, ident),
    }


def erase_subscriber(conn: Connection, ident: int) -> bool:
    """Delete a subscriber, everything of theirs in the outbox and their votes; False when
    there was none."""
    feedback.erase(conn, ident)
    conn.execute(sa.delete(DigestItem).where(col(DigestItem.subscriber_id) == ident))
    conn.execute(sa.delete(Digest).where(col(Digest.subscriber_id) == ident))
    gone = conn.execute(sa.delete(Subscriber).where(col(Subscriber.id) == ident))
    return bool(gone.rowcount)
