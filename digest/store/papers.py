"""Papers: the one row type the rest of the code reads them as, and its named queries."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from digest.store.models import Paper

_PAPER = Paper.__table__  # type: ignore[attr-defined]
PARAMETERS = 900  # ids per ``IN (...)``: under every backend's bound-parameter cap


@dataclass(frozen=True, slots=True)
class PaperRow:
    """A stored paper as the ranker, the emails and the feeds read it."""

    id: int
    key: str
    title: str
    abstract: str
    url: str | None
    arxiv_id: str | None
    times_seen: int
    first_seen: datetime
    authors: str = ""
    seq: int = 0  # the ingest that first saw it
    first_key: str | None = None  # the key before it adopted an arXiv id

    @property
    def guid_key(self) -> str:
        """The key a paper was first seen under: what its feed GUID is made of."""
        return self.first_key or self.key


_ROW = sa.select(
    _PAPER.c.id,
    _PAPER.c.key,
    _PAPER.c.title,
    _PAPER.c.abstract,
    _PAPER.c.url,
    _PAPER.c.arxiv_id,
    _PAPER.c.times_seen,
    _PAPER.c.first_seen,
    _PAPER.c.authors,
    _PAPER.c.seq,
    _PAPER.c.first_key,
)
ROW_COLUMNS = tuple(_ROW.selected_columns)  # for queries that join papers to other tables


def row_of(values: Sequence[Any]) -> PaperRow:
    """A ``PaperRow`` from the ``ROW_COLUMNS`` values of a result row, in that order."""
    return PaperRow(*values)


def _rows(conn: Connection, query: Any) -> list[PaperRow]:
    return [PaperRow(*row) for row in conn.execute(query)]


def new_since(conn: Connection, after: int, upto: int) -> list[PaperRow]:
    """Papers of the ingests numbered after ``after`` and up to ``upto``, by id."""
    return _rows(conn, _ROW.where(_PAPER.c.seq > after, _PAPER.c.seq <= upto).order_by(_PAPER.c.id))


def newest(
    conn: Connection, limit: int, *, by: Literal["id", "first_seen"] = "id"
) -> list[PaperRow]:
    """The ``limit`` newest papers, newest first: by id, or by when first seen."""
    if by == "id":
        return _rows(conn, _ROW.order_by(_PAPER.c.id.desc()).limit(limit))
    return _rows(conn, _ROW.order_by(_PAPER.c.first_seen.desc(), _PAPER.c.id.desc()).limit(limit))


def by_ids(conn: Connection, ids: Sequence[int]) -> dict[int, PaperRow]:
    """The papers with these ids, by id."""
    found: dict[int, PaperRow] = {}
    for start in range(0, len(ids), PARAMETERS):
        for row in _rows(conn, _ROW.where(_PAPER.c.id.in_(ids[start : start + PARAMETERS]))):
            found[row.id] = row
    return found


def stats_sample(conn: Connection, sample: int) -> list[tuple[str, str]]:
    """(title, abstract) of every paper, or of a uniform sample of ``sample`` of them.

    The sample is seeded by the store's size, so the same store always gives the same one.
    """
    newest_id = conn.execute(sa.select(sa.func.max(_PAPER.c.id))).scalar() or 0
    query = sa.select(_PAPER.c.title, _PAPER.c.abstract)
    if newest_id <= sample:
        return [(title, abstract) for title, abstract in conn.execute(query)]
    chosen = random.Random(newest_id).sample(range(1, newest_id + 1), sample)
    rows: list[tuple[str, str]] = []
    for start in range(0, sample, PARAMETERS):
        part = query.where(_PAPER.c.id.in_(chosen[start : start + PARAMETERS]))
        rows.extend((title, abstract) for title, abstract in conn.execute(part))
    return rows


def fts_candidates(conn: Connection, match: str, limit: int) -> list[PaperRow] | None:
    """The best ``limit`` papers the SQLite full-text index finds for the ``MATCH``
    expression ``match``, by id; None off SQLite (no index there)."""
    if conn.dialect.name != "sqlite":
        return None
    ids = [
        row[0]
        for row in conn.exec_driver_sql(
            "SELECT rowid FROM paper_fts WHERE paper_fts MATCH ? ORDER BY rank LIMIT ?",
            (match, limit),
        ).all()
    ]
    found = by_ids(conn, ids)
    return [found[i] for i in sorted(found)]


def has_any(conn: Connection) -> bool:
    """Whether the store holds any paper at all."""
    return conn.execute(sa.select(_PAPER.c.id).limit(1)).first() is not None


def counts(conn: Connection) -> int:
    """How many papers the store holds."""
    return int(conn.execute(sa.select(sa.func.count()).select_from(_PAPER)).scalar_one())
