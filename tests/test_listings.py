"""Taking a listing back: its papers leave the store and the digests not yet sent, papers
other listings also had stay; the ``papers listings`` and ``papers remove`` commands."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from digest.cli import main
from digest.errors import UsageError
from digest.ingest.dumps import Clock, ingest_paths
from digest.service.listings import find_listing, take_back
from digest.store import outbox
from digest.store import votes as feedback
from digest.store.engine import ingest_sequence, open_store, reading, transaction
from digest.store.models import Subscriber
from tests.conftest import EXAMPLE_A, EXAMPLE_B
from tests.test_migrations import _store_at

T0 = datetime(2026, 3, 12, 8, 0, tzinfo=UTC)
PERIOD = date(2026, 3, 12)
CLOCK = Clock(lambda: T0)
# Worked out from the raw files: 10 titles in A, 9 in B, 3 in both.
ONLY_A, ONLY_B, BOTH = 7, 6, 3


def ingest(engine: Engine, *paths: Path) -> None:
    # one clock for every ingest, as in one process: each dump is stamped a moment later
    results = ingest_paths(engine, list(paths), clock=CLOCK)
    assert [r.status for r in results] == ["ok"] * len(paths)


def papers(engine: Engine) -> dict[str, int]:
    """Title → times seen, for every paper in the store."""
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT title, times_seen FROM paper")).all())  # type: ignore[arg-type]


def titles_of(path: Path) -> set[str]:
    from digest.ingest.readers import read_listing

    return {entry.title for entry in read_listing(path, now=T0).entries}


def test_removing_the_later_listing_leaves_the_store_as_the_first_made_it(engine: Engine) -> None:
    ingest(engine, EXAMPLE_A)
    alone = papers(engine)
    ingest(engine, EXAMPLE_B)
    assert len(papers(engine)) == ONLY_A + ONLY_B + BOTH
    removal = take_back(engine, str(EXAMPLE_B), T0 + timedelta(hours=1))
    assert (removal.deleted, removal.kept) == (ONLY_B, BOTH)
    assert papers(engine) == alone  # the shared papers are seen once again, as before
    assert removal.listing.status == "removed"
    assert removal.listing.removed_at == T0 + timedelta(hours=1)


def test_removing_the_first_listing_keeps_what_the_second_also_had(engine: Engine) -> None:
    ingest(engine, EXAMPLE_A, EXAMPLE_B)
    first = find_listing(engine, str(EXAMPLE_A))
    removal = take_back(engine, str(first.id), T0)
    assert (removal.deleted, removal.kept) == (ONLY_A, BOTH)
    left = papers(engine)
    assert set(left) == titles_of(EXAMPLE_B)
    assert set(left.values()) == {1}
    # the shared papers were added by the first listing: taking back the second now
    # leaves nothing, as no listing is left that had them
    removal = take_back(engine, str(EXAMPLE_B), T0)
    assert (removal.deleted, removal.kept) == (ONLY_B + BOTH, 0)
    assert papers(engine) == {}


def test_removing_twice_changes_nothing_and_the_bytes_stay_out(engine: Engine) -> None:
    ingest(engine, EXAMPLE_A, EXAMPLE_B)
    take_back(engine, str(EXAMPLE_B), T0)
    before = papers(engine)
    again = take_back(engine, str(EXAMPLE_B), T0 + timedelta(days=1))
    assert again.already and again.deleted == 0
    assert again.listing.removed_at == T0  # the first removal's time
    (result,) = ingest_paths(engine, [EXAMPLE_B], clock=CLOCK)
    assert result.status == "duplicate" and "taken back earlier" in result.warnings[0]
    assert papers(engine) == before


def test_a_dry_run_reports_and_changes_nothing(engine: Engine) -> None:
    ingest(engine, EXAMPLE_A, EXAMPLE_B)
    before = papers(engine)
    removal = take_back(engine, str(EXAMPLE_B), T0, dry_run=True)
    assert (removal.deleted, removal.kept) == (ONLY_B, BOTH)
    assert papers(engine) == before
    assert find_listing(engine, str(EXAMPLE_B)).status == "ok"


def _subscriber(conn: sa.Connection, email: str, *, send_empty: bool = False) -> int:
    table = Subscriber.__table__  # type: ignore[attr-defined]
    result = conn.execute(
        table.insert().values(
            email=email, token_salt="salt", created_at=T0, interests="[]", send_empty=send_empty
        )
    )
    return int(result.inserted_primary_key[0])


def _ids(conn: sa.Connection, titles: set[str]) -> list[int]:
    rows = conn.execute(sa.text("SELECT id, title FROM paper ORDER BY id")).all()
    return [int(pid) for pid, title in rows if title in titles]


def test_digests_not_yet_sent_lose_the_papers_and_an_emptied_one_is_skipped(
    engine: Engine,
) -> None:
    ingest(engine, EXAMPLE_A, EXAMPLE_B)
    only_b = titles_of(EXAMPLE_B) - titles_of(EXAMPLE_A)
    with transaction(engine) as conn:
        ada, bob, cy, dee = (
            _subscriber(conn, "ada@example.org"),  # pending: papers of B only
            _subscriber(conn, "bob@example.org"),  # pending: papers of B and of A
            _subscriber(conn, "cy@example.org"),  # already sent: papers of B
            _subscriber(conn, "dee@example.org", send_empty=True),  # pending, B only
        )
        b_ids = _ids(conn, only_b)
        a_ids = _ids(conn, titles_of(EXAMPLE_A))
        upto = ingest_sequence(conn)

        def planned(sub: int, ids: list[int]) -> outbox.Planned:
            return outbox.Planned(sub, "pending", f"<{sub}@x>", upto, [(i, 1.0, "[]") for i in ids])

        outbox.record(
            conn,
            [
                planned(ada, b_ids[:2]),
                planned(bob, [b_ids[0], a_ids[0]]),
                planned(cy, b_ids[:3]),
                planned(dee, b_ids[:1]),
            ],
            period=PERIOD,
            now=T0,
            run_id=None,
        )
        feedback.record(conn, cy, b_ids[0], "up", T0)
    with reading(engine) as conn:
        digest_of = dict(conn.execute(sa.text("SELECT subscriber_id, id FROM digest")).all())
    outbox.mark_sent(engine, digest_of[cy], T0)

    removal = take_back(engine, str(EXAMPLE_B), T0)
    assert (removal.unsent_items, removal.emptied) == (2 + 1 + 1, 1)
    assert (removal.sent_items, removal.votes) == (3, 1)
    with reading(engine) as conn:
        items = conn.execute(sa.text("SELECT digest_id, paper_id FROM digestitem")).all()
        status = dict(conn.execute(sa.text("SELECT subscriber_id, status FROM digest")).all())
    assert items == [(digest_of[bob], a_ids[0])]
    assert status == {ada: "skipped", bob: "pending", cy: "sent", dee: "pending"}


def test_a_store_from_before_knows_which_papers_its_listings_added(database_url: str) -> None:
    """Dumps recorded before schema 9 are matched to the papers they added by time."""
    old = _store_at(database_url, 7)
    moments = [T0, T0 + timedelta(hours=1)]
    with old.begin() as conn:
        for n, moment in enumerate(moments):
            conn.execute(sa.text("UPDATE ingest_sequence SET value = value + 1"))
            seq = conn.execute(sa.text("SELECT value FROM ingest_sequence")).scalar_one()
            conn.execute(
                sa.text(
                    "INSERT INTO paper (key, title_key, title, first_seen, last_seen, seq)"
                    " VALUES (:k, :k, :k, :t, :t, :s)"
                ),
                [{"k": f"title:paper {n} {i}", "t": moment, "s": seq} for i in range(3)],
            )
            conn.execute(
                sa.text(
                    "INSERT INTO dump (sha256, name, ingested_at, entries, new)"
                    " VALUES (:h, :h, :t, 3, 3)"
                ),
                {"h": f"dump{n}", "t": moment},
            )
    old.dispose()
    engine = open_store(database_url)
    try:
        with reading(engine) as conn:
            assert conn.execute(sa.text("SELECT seq FROM dump ORDER BY id")).scalars().all() == [
                1,
                2,
            ]
        assert take_back(engine, "2", T0).deleted == 3
        with reading(engine) as conn:
            left = conn.execute(sa.text("SELECT key FROM paper ORDER BY key")).scalars().all()
        assert left == [f"title:paper 0 {i}" for i in range(3)]
    finally:
        engine.dispose()


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_lists_and_removes_a_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["papers", "remove", "--listing", "1"], capsys)
    assert (code, out) == (2, "") and "nothing to remove" in err
    assert run_cli(["init"], capsys)[0] == 0
    bad = tmp_path / "data" / "inbox" / "daily.txt"
    shutil.copy(EXAMPLE_B, bad)
    assert run_cli(["ingest", str(EXAMPLE_A), "--inbox"], capsys)[0] == 0
    code, out, _ = run_cli(["papers", "listings", "--json"], capsys)
    listings = json.loads(out)["listings"]
    assert [(row["id"], row["name"], row["status"]) for row in listings] == [
        (2, "trending-layout-a.txt", "ok"),
        (1, "daily.txt", "ok"),
    ]
    code, out, _ = run_cli(["papers", "listings"], capsys)
    assert code == 0 and out.splitlines()[1].split()[0] == "1"
    assert "daily.txt (hf-text-b, listed 2026-03-12): 9 entries, 9 new, 0 seen" in out
    # the inbox moved the file: it is still found by its bytes, wherever it lies now
    moved = tmp_path / "data" / "inbox" / "processed" / "daily.txt"
    code, out, _ = run_cli(["papers", "remove", "--listing", str(moved), "--json"], capsys)
    done = json.loads(out)
    assert code == 0
    assert (done["papers_deleted"], done["papers_kept"], done["dry_run"]) == (ONLY_B, BOTH, False)
    assert done["listing"]["status"] == "removed"
    code, out, _ = run_cli(["papers", "remove", "--listing", "1"], capsys)
    assert code == 0 and "was removed" in out and "nothing changed" in out
    code, out, err = run_cli(["papers", "remove", "--listing", "7"], capsys)
    assert (code, out) == (2, "") and "no listing with id 7" in err
    code, _, err = run_cli(["papers", "remove", "--listing", str(tmp_path / "README")], capsys)
    assert code == 2 and "neither a listing id nor a file" in err
    (tmp_path / "other.txt").write_text("never ingested\n", "utf-8")
    code, _, err = run_cli(["papers", "remove", "--listing", "other.txt"], capsys)
    assert code == 2 and "never ingested" in err
    assert run_cli(["papers"], capsys)[0] == 2


def test_find_listing_refuses_what_names_none(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no listing with id 3"):
        find_listing(engine, "3")
