"""Subscribers: addresses, interests refused at the door, CSV, and signed links."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from digest.cli import main
from digest.errors import UsageError
from digest.subscribers import (
    SubscriberSpec,
    check_token,
    export_csv,
    feed_name,
    find_subscriber,
    link_token,
    list_subscribers,
    normalize_email,
    read_csv,
    upsert_subscriber,
)

NOW = datetime(2026, 3, 11, tzinfo=UTC)
KEY = b"k" * 32


def test_addresses_are_validated_and_normalized() -> None:
    assert normalize_email("  Ada.Lovelace@Example.ORG ") == "ada.lovelace@example.org"
    for bad in ("not-an-address", "a@", "@b.org", "a b@c.org", "ada@example..org"):
        with pytest.raises(UsageError):
            normalize_email(bad)


def test_malformed_interest_is_refused_with_its_position(engine: Engine) -> None:
    with pytest.raises(UsageError, match="position"):
        upsert_subscriber(engine, SubscriberSpec("a@example.org", ['"unclosed phrase']), now=NOW)
    assert list_subscribers(engine) == []


def test_subscribe_twice_updates_in_place(engine: Engine) -> None:
    first = upsert_subscriber(engine, SubscriberSpec("a@example.org", ["diffusion"]), now=NOW)
    second = upsert_subscriber(
        engine, SubscriberSpec("A@Example.org", ["llm", "speech"], max_items=5), now=NOW
    )
    assert first.id == second.id
    assert json.loads(second.interests) == ["llm", "speech"]
    assert second.max_items == 5
    assert first.token_salt == second.token_salt


def test_links_verify_and_the_database_alone_cannot_forge_them(engine: Engine) -> None:
    row = upsert_subscriber(engine, SubscriberSpec("a@example.org", ["x"]), now=NOW)
    token = link_token(KEY, row.id, row.token_salt)
    assert check_token(engine, KEY, token).email == "a@example.org"  # type: ignore[union-attr]
    assert check_token(engine, b"another key", token) is None
    assert check_token(engine, KEY, token[:-1] + ("0" if token[-1] != "0" else "1")) is None
    assert check_token(engine, KEY, "garbage") is None
    assert len(token.split(".")[1]) * 4 >= 128
    with engine.connect() as conn:
        stored = " ".join(str(v) for v in conn.execute(sa.text("SELECT * FROM subscriber")).one())
    assert token.split(".")[1] not in stored
    assert feed_name(KEY, row.id, row.token_salt) not in stored


def test_csv_round_trip_and_bad_rows(engine: Engine) -> None:
    text = (
        "email,interests,max_items\n"
        'ada@example.org,"federated learning; llm",10\n'
        "bob@example.org,segmentation,\n"
    )
    for spec in read_csv(text):
        upsert_subscriber(engine, spec, now=NOW)
    rows = list_subscribers(engine)
    assert [r.email for r in rows] == ["ada@example.org", "bob@example.org"]
    assert json.loads(rows[0].interests) == ["federated learning", "llm"]
    import io

    out = io.StringIO()
    assert export_csv(rows, out) == 2
    again = read_csv(out.getvalue())
    assert [s.interests for s in again] == [["federated learning", "llm"], ["segmentation"]]
    with pytest.raises(UsageError, match="line 3"):
        read_csv("email,interests\nok@example.org,x\nbroken,y\n")


def test_cli_subscribe_list_unsubscribe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIGEST_CONFIG", raising=False)
    assert (
        main(
            [
                "subscribe",
                "ada@example.org",
                "--interest",
                "diffus*",
                "--interest",
                '"graph neural"',
            ]
        )
        == 0
    )
    assert main(["subscribe", "bad@example.org", "--interest", "(unbalanced"]) == 2
    err = capsys.readouterr().err
    assert "position" in err and "Traceback" not in err
    assert main(["subscribers", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["subscribers"] == [
        {
            "email": "ada@example.org",
            "status": "active",
            "interests": ["diffus*", '"graph neural"'],
            "max_items": 20,
            "min_score": 0.0,
            "frequency": "daily",
            "created_at": data["subscribers"][0]["created_at"],
        }
    ]
    assert main(["unsubscribe", "ada@example.org"]) == 0
    assert main(["unsubscribe", "who@example.org"]) == 2
    capsys.readouterr()
    from digest.settings import load_settings
    from digest.store import open_store

    engine = open_store(load_settings().database_url)
    assert find_subscriber(engine, "ada@example.org").status == "unsubscribed"
    engine.dispose()


def test_cli_unsubscribe_by_the_token_of_a_link(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIGEST_CONFIG", raising=False)
    assert main(["subscribe", "ada@example.org", "--interest", "graphs"]) == 0
    from digest.settings import load_settings
    from digest.store import open_store

    settings = load_settings()
    engine = open_store(settings.database_url)
    row = find_subscriber(engine, "ada@example.org")
    token = link_token(settings.signing_key(), row.id, row.token_salt)
    forged = token[:-1] + ("0" if token[-1] != "0" else "1")
    assert main(["unsubscribe", forged]) == 2
    assert find_subscriber(engine, "ada@example.org").status == "active"
    assert main(["unsubscribe", f"unsubscribe {token}"]) == 0  # as a mailto subject says it
    assert find_subscriber(engine, "ada@example.org").status == "unsubscribed"
    engine.dispose()
