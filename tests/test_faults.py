"""Faults nobody is to blame for, against the real command line and a real SMTP server.

Each test asserts what an operator and a subscriber would see: the exit code, one
line on stderr and no traceback, what the server accepted, and what the store
still holds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

import digest.cli
import digest.ingest
from tests.conftest import DUMP_A, DUMP_B
from tests.test_service import PEOPLE, SENT_TO, Result, Site


def one_error_line(result: Result) -> str:
    """The single ``digest:`` line a failed command prints, with no traceback anywhere."""
    assert "Traceback" not in result.out + result.err
    lines = [line for line in result.err.splitlines() if line.startswith("digest:")]
    assert len(lines) == 1, result.err
    return lines[0]


def store_rows(site: Site, query: str) -> list[tuple[object, ...]]:
    engine = sa.create_engine(f"sqlite:///{site.data / 'digest.db'}")
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(query)).all()]
    finally:
        engine.dispose()


# --- a clock that goes backwards --------------------------------------------------------


class _TwoHoursBehind(datetime):
    @classmethod
    def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
        return datetime.now(tz) - timedelta(hours=2)  # type: ignore[arg-type]


def test_papers_ingested_with_the_clock_behind_still_reach_the_next_digest(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    site.subscribe(PEOPLE)
    site.drop_in_inbox(DUMP_B, "daily.txt")
    first = site.cli("run", "--json")
    assert first.code == 0, first.err
    assert first.json()["digests"]["sent"] == len(SENT_TO)

    # The next listing comes in while the clock is two hours behind the last run.
    with monkeypatch.context() as skewed:
        skewed.setattr(digest.ingest, "datetime", _TwoHoursBehind)
        skewed.setattr(digest.cli, "datetime", _TwoHoursBehind)
        site.drop_in_inbox(DUMP_A, "trending.txt")
        ingested = site.cli("ingest", "--inbox", "--json")
    assert ingested.code == 0, ingested.err
    new = ingested.json()["new"]
    assert new > 0
    (behind,) = store_rows(
        site,
        "SELECT count(*) FROM paper p, subscriber s WHERE p.first_seen < s.last_digest_at"
        " AND p.seq > s.seen_upto AND s.email = 'ada@example.org'",
    )
    assert behind == (new,)  # first seen "before" the last digest by the wall clock

    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    second = site.cli("run", "--json", "--period", tomorrow)

    assert second.code == 0, second.err
    sent = second.json()["digests"]["sent"]
    assert sent > 0
    assert len(site.received()) == len(SENT_TO) + sent
    (undelivered,) = store_rows(
        site,
        "SELECT count(*) FROM paper p WHERE p.seq > (SELECT min(seen_upto) FROM subscriber"
        " WHERE status = 'active')",
    )
    assert undelivered == (0,)  # every reader's cut-off has moved past the skewed ingest
    (items,) = store_rows(
        site,
        f"SELECT count(*) FROM digestitem i JOIN digest d ON d.id = i.digest_id"
        f" WHERE d.period = '{tomorrow}'",
    )
    assert items[0] > 0  # type: ignore[operator]
