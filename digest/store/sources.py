"""Where papers came from: the dumps ingested (by content hash) and the fetched sources."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from digest.clock import as_utc
from digest.store.engine import bulk_transaction, reading, transaction, write_lock
from digest.store.models import Dump, DumpPaper, SourceState

_DUMP = Dump.__table__  # type: ignore[attr-defined]
_DUMP_PAPER = DumpPaper.__table__  # type: ignore[attr-defined]
_BATCH = 10_000  # papers seen again, recorded per round trip
_SOURCE = SourceState.__table__  # type: ignore[attr-defined]


class AlreadyIngested(Exception):
    """The same dump went in from another process meanwhile."""


@contextmanager
def ingesting(engine: Engine) -> Iterator[Connection]:
    """The write transaction of one dump, holding the write lock from the start;
    ``AlreadyIngested`` when another process committed the same papers or bytes meanwhile.
    Its commit is on disk when it returns, and leaves the checkpoint for later unless the
    WAL is full enough (``bulk_transaction``)."""
    try:
        with bulk_transaction(engine) as conn:
            write_lock(conn)
            yield conn
    except IntegrityError:
        raise AlreadyIngested() from None


def dump_known(engine: Engine, sha256: str) -> str | None:
    """The status of the dump with these exact bytes (ok, removed), None if never ingested."""
    with reading(engine) as conn:
        found = conn.execute(sa.select(_DUMP.c.status).where(_DUMP.c.sha256 == sha256)).scalar()
        conn.rollback()
    return None if found is None else str(found)


def record_dump(
    conn: Connection,
    *,
    sha256: str,
    name: str,
    source: str,
    layout: str,
    listing_date: date | None,
    ingested_at: datetime,
    entries: int,
    new: int,
    seen: int,
    seq: int | None = None,
    again: Sequence[int] = (),
) -> None:
    """Record a dump ingested in this transaction: ``seq`` is the ingest number its new papers
    carry, ``again`` the ids of the known papers it saw again."""
    dump_id = conn.execute(
        sa.insert(_DUMP)
        .values(
            sha256=sha256,
            name=name,
            source=source,
            layout=layout,
            listing_date=listing_date,
            ingested_at=as_utc(ingested_at, naive="refuse"),
            entries=entries,
            new=new,
            seen=seen,
            status="ok",
            seq=seq,
        )
        .returning(_DUMP.c.id)
    ).scalar_one()
    for start in range(0, len(again), _BATCH):
        conn.execute(
            sa.insert(_DUMP_PAPER),
            [{"dump_id": dump_id, "paper_id": paper} for paper in again[start : start + _BATCH]],
        )


def source_states(engine: Engine, urls: Sequence[str]) -> dict[str, dict[str, Any]]:
    """What is known of each fetched source among ``urls``, by URL."""
    if not urls:
        return {}
    with transaction(engine) as conn:
        rows = conn.execute(sa.select(_SOURCE).where(_SOURCE.c.url.in_(urls)))
        return {row.url: dict(row._mapping) for row in rows}


def save_source_state(engine: Engine, url: str, values: dict[str, Any], *, known: bool) -> None:
    """Write what a fetch of ``url`` found; ``known`` when it has a row already."""
    with transaction(engine) as conn:
        if known:
            conn.execute(sa.update(_SOURCE).where(_SOURCE.c.url == url).values(**values))
        else:
            conn.execute(sa.insert(_SOURCE).values(url=url, **values))


def recent_dumps(conn: Connection, limit: int) -> list[Any]:
    """The newest ``limit`` dumps ingested: name, layout, when, entries and new papers."""
    return list(
        conn.execute(
            sa.select(
                _DUMP.c.name, _DUMP.c.layout, _DUMP.c.ingested_at, _DUMP.c.entries, _DUMP.c.new
            )
            .order_by(_DUMP.c.id.desc())
            .limit(limit)
        ).all()
    )


def all_states(conn: Connection) -> list[Any]:
    """What is known of every fetched source, by URL."""
    return list(conn.execute(sa.select(_SOURCE).order_by(_SOURCE.c.url)).all())
