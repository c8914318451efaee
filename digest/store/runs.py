"""Runs: one row per scheduled or manual run, with its figures and how it ended."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import col

from digest.clock import as_utc
from digest.errors import StoreError
from digest.store.engine import reading, transaction, transaction_if_free
from digest.store.models import Run

INTERRUPTED = "interrupted: its process ended without finishing the run"


def interrupt_dead(engine: Engine, run_ids: Sequence[int] | None = None) -> int:
    """Mark runs still ``running`` whose process is gone (killed) as ``interrupted``.

    Only for a caller that knows no run is going on: one holding the run lock (all such
    runs, ``run_ids`` None), or ``status`` having seen the lock free after reading
    ``run_ids`` (then the write never waits: it is skipped while someone else writes).
    Returns how many were marked.
    """
    query = sa.update(Run).where(col(Run.status) == "running")
    if run_ids is not None:
        if not run_ids:
            return 0
        query = query.where(col(Run.id).in_(run_ids))
    query = query.values(status="interrupted", error=INTERRUPTED)
    if run_ids is None:
        with transaction(engine) as conn:
            return int(conn.execute(query).rowcount or 0)
    try:
        with transaction_if_free(engine) as conn:
            return int(conn.execute(query).rowcount or 0)
    except StoreError:
        return 0  # busy: the next status or run marks them


def start(engine: Engine, *, period: date, now: datetime, kind: str = "run") -> int:
    """Record a run starting now; returns its id. ``kind``: ``run`` (at the site's schedule,
    or by hand) or ``hours`` (for the readers whose own hour has come)."""
    with transaction(engine) as conn:
        return int(
            conn.execute(
                sa.insert(Run).values(
                    kind=kind, period=period, started_at=as_utc(now, naive="refuse")
                )
            ).inserted_primary_key[0]  # type: ignore[index]
        )


def finish(
    engine: Engine, run_id: int, *, status: str, figures: str, error: str | None, now: datetime
) -> None:
    """Record how a run ended, with its figures (JSON)."""
    with transaction(engine) as conn:
        conn.execute(
            sa.update(Run)
            .where(col(Run.id) == run_id)
            .values(
                finished_at=as_utc(now, naive="refuse"), status=status, figures=figures, error=error
            )
        )


def last_ok_period(engine: Engine) -> date | None:
    """The period of the newest run that finished well (of kind ``run``: a run for the
    readers with an hour of their own does not stand for the site's)."""
    with reading(engine) as conn:
        value = conn.execute(
            sa.select(sa.func.max(col(Run.period))).where(
                col(Run.status) == "ok", col(Run.kind) == "run"
            )
        ).scalar()
        conn.rollback()
    return value if isinstance(value, date) else None


def last_started(engine: Engine) -> datetime | None:
    """When the newest run started, of any kind (None: never)."""
    with reading(engine) as conn:
        value = conn.execute(sa.select(sa.func.max(col(Run.started_at)))).scalar()
        conn.rollback()
    return as_utc(value) if isinstance(value, datetime) else None


def recent(conn: Connection, limit: int) -> list[Any]:
    """The newest ``limit`` runs, newest first."""
    return list(conn.execute(sa.select(Run).order_by(col(Run.id).desc()).limit(limit)).all())


def unfinished(conn: Connection) -> list[int]:
    """The ids of the runs still marked ``running``."""
    query = sa.select(col(Run.id)).where(col(Run.status) == "running")
    return [run_id for run_id in conn.execute(query).scalars() if run_id is not None]


def last_finished(conn: Connection, *, status: str | None = None) -> Any | None:
    """The newest finished run (with ``status``, when given), or None."""
    query = sa.select(Run).where(col(Run.finished_at).is_not(None))
    if status is not None:
        query = query.where(col(Run.status) == status)
    return conn.execute(query.order_by(col(Run.finished_at).desc()).limit(1)).first()


def figures_of_finished(conn: Connection) -> list[str]:
    """The figures (JSON) of every finished run."""
    query = sa.select(col(Run.figures)).where(col(Run.finished_at).is_not(None))
    return [str(figures) for figures in conn.execute(query).scalars()]
