"""The keys that sign the site's links, kept in the store so that every host shares them.

A key of a generation signs from its ``signs_from`` on (the newest generation whose time
has come signs); every key verifies until it is retired, so rotating never breaks a link
already sent. A key without a generation never signs: it was adopted from a host's old
key file so that what it signed keeps working. Keys are written with ``ON CONFLICT DO
NOTHING`` against unique columns, so hosts making the first key at once agree on one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from digest.clock import as_utc
from digest.errors import StoreError, UsageError
from digest.store.engine import insert_or_skip
from digest.store.models import SiteKey

_KEY = SiteKey.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class KeyRow:
    """A stored key; ``key`` is secret and never shown."""

    id: int
    generation: int | None
    key: bytes
    created_at: datetime
    signs_from: datetime | None
    retired_at: datetime | None


def _row(row: sa.Row[tuple[object, ...]]) -> KeyRow:
    m = row._mapping
    return KeyRow(
        id=int(m["id"]),
        generation=m["generation"],
        key=str(m["key"]).encode(),
        created_at=as_utc(m["created_at"]),
        signs_from=None if m["signs_from"] is None else as_utc(m["signs_from"]),
        retired_at=None if m["retired_at"] is None else as_utc(m["retired_at"]),
    )


def key_rows(conn: Connection) -> list[KeyRow]:
    """Every key, retired ones included, oldest first."""
    return [_row(row) for row in conn.execute(sa.select(_KEY).order_by(_KEY.c.id))]


def _text(key: bytes) -> str:
    try:
        return key.decode()
    except UnicodeDecodeError:
        raise StoreError("a signing key must be text (as secret_key and secret.key hold)") from None


def add_first_key(conn: Connection, key: bytes, now: datetime) -> None:
    """Make ``key`` generation 1, signing at once, unless there is a generation 1 already
    (or this very key): the first host to get here makes the key, the others read it."""
    now = as_utc(now, naive="refuse")
    conn.execute(
        insert_or_skip(conn, _KEY)
        .values(generation=1, key=_text(key), created_at=now, signs_from=now)
        .on_conflict_do_nothing()
    )


def adopt_key(conn: Connection, key: bytes, now: datetime) -> None:
    """Keep ``key`` to verify with (never to sign), unless it is stored already (a retired
    key stays retired)."""
    conn.execute(
        insert_or_skip(conn, _KEY)
        .values(generation=None, key=_text(key), created_at=as_utc(now, naive="refuse"))
        .on_conflict_do_nothing()
    )


def add_generation(conn: Connection, key: bytes, now: datetime, signs_from: datetime) -> KeyRow:
    """A new key of the next generation, signing from ``signs_from``; a StoreError when
    another host added one at the same moment."""
    newest = conn.execute(sa.select(sa.func.max(_KEY.c.generation))).scalar()
    try:
        with conn.begin_nested():
            ident = conn.execute(
                sa.insert(_KEY)
                .values(
                    generation=int(newest or 0) + 1,
                    key=_text(key),
                    created_at=as_utc(now, naive="refuse"),
                    signs_from=as_utc(signs_from, naive="refuse"),
                )
                .returning(_KEY.c.id)
            ).scalar_one()
    except IntegrityError:
        raise StoreError("another key was added at the same moment; see digest keys list") from None
    return _row(conn.execute(sa.select(_KEY).where(_KEY.c.id == ident)).one())


def retire_key(conn: Connection, ident: int, now: datetime) -> KeyRow:
    """Retire key ``ident``: links it signed stop working. A UsageError when there is no
    such key; retiring one already retired changes nothing."""
    found = conn.execute(sa.select(_KEY).where(_KEY.c.id == ident).with_for_update()).first()
    if found is None:
        raise UsageError(f"keys retire: there is no key {ident} (see digest keys list)")
    row = _row(found)
    if row.retired_at is None:
        now = as_utc(now, naive="refuse")
        conn.execute(sa.update(_KEY).where(_KEY.c.id == ident).values(retired_at=now))
        row = replace(row, retired_at=now)
    return row
