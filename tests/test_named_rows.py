"""Rows come out of the store by name: each field of ``PaperRow`` is read from the column
of that name, whatever the order a query selects them in."""

from __future__ import annotations

import random
from dataclasses import fields
from datetime import UTC, date, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from digest.store import papers
from digest.store.engine import transaction
from digest.store.models import Paper
from digest.store.papers import PaperRow

T0 = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
_PAPER = Paper.__table__  # type: ignore[attr-defined]


def _store_one(engine: Engine) -> dict[str, object]:
    row = {
        "key": "arxiv:2411.00001",
        "title_key": "a title",
        "arxiv_id": "2411.00001",
        "title": "A title",
        "abstract": "An abstract.",
        "authors": "A. Author",
        "url": "https://example.org/a",
        "listing_date": date(2026, 11, 19),
        "first_seen": T0,
        "last_seen": T0,
        "seq": 7,
        "revised": date(2026, 11, 18),
    }
    with transaction(engine) as conn:
        papers.insert_papers(conn, [row])
        conn.execute(sa.update(_PAPER).values(first_key="title:a title", times_seen=3))
        stored = conn.execute(sa.select(_PAPER)).one()._mapping
    return dict(stored)


def _same_as_stored(row: PaperRow, stored: dict[str, object]) -> None:
    for field in fields(PaperRow):
        value = getattr(row, field.name)
        expected = stored[field.name]
        if isinstance(value, datetime):
            assert value.replace(tzinfo=None) == expected.replace(tzinfo=None)  # type: ignore[attr-defined]
        else:
            assert value == expected, field.name


def test_every_query_reads_each_field_from_its_own_column(engine: Engine) -> None:
    stored = _store_one(engine)
    with engine.connect() as conn:
        found = [
            *papers.new_since(conn, 0, 10),
            *papers.newest(conn, 5),
            *papers.by_ids(conn, [int(stored["id"])]).values(),  # type: ignore[call-overload]
            papers.row_by_key(conn, "arxiv:2411.00001"),
            papers.row_by_key(conn, "title:a title"),
        ]
        page = papers.by_key(conn, "arxiv:2411.00001")
    assert page is not None
    found.append(page.row)
    assert len(found) == 6
    for row in found:
        assert row is not None
        _same_as_stored(row, stored)


def test_a_query_may_select_the_columns_in_any_order(engine: Engine) -> None:
    stored = _store_one(engine)
    names = [field.name for field in fields(PaperRow)]
    random.Random(18).shuffle(names)
    query = sa.select(sa.literal("extra").label("before"), *(_PAPER.c[n] for n in names))
    with engine.connect() as conn:
        result = conn.execute(query)
        paper = papers.reader(result.keys())
        row = paper(result.one())
    _same_as_stored(row, stored)


def test_joined_columns_are_read_under_their_prefix(engine: Engine) -> None:
    stored = _store_one(engine)
    query = sa.select(_PAPER.c.id.label("id"), *papers.paper_columns("p_"))
    with engine.connect() as conn:
        result = conn.execute(query)
        row = papers.reader(result.keys(), "p_")(result.one())
    _same_as_stored(row, stored)
