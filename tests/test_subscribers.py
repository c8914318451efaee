"""Subscribers: addresses, interests refused at the door, CSV, and signed links."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from digest.cli import main
from digest.errors import UsageError
from digest.service.keys import site_keys
from digest.service.subscriptions import (
    check_token,
    export_csv,
    find_subscriber,
    normalize_email,
    operator_patch,
    read_csv,
    upsert_subscriber,
)
from digest.store.engine import transaction
from digest.store.subscribers import (
    active_salts,
    end_feed,
    feed_ended,
    feed_salts,
    list_subscribers,
    stored_addresses,
)
from digest.store.subscription import Subscription
from digest.tokens import feed_name, link_token

NOW = datetime(2026, 3, 11, tzinfo=UTC)
KEY = b"k" * 32


def test_addresses_are_validated_and_normalized() -> None:
    assert normalize_email("  Ada.Lovelace@Example.ORG ") == "ada.lovelace@example.org"
    for bad in ("not-an-address", "a@", "@b.org", "a b@c.org", "ada@example..org"):
        with pytest.raises(UsageError):
            normalize_email(bad)


def test_malformed_interest_is_refused_with_its_position(engine: Engine) -> None:
    with pytest.raises(UsageError, match="position"):
        upsert_subscriber(engine, operator_patch("a@example.org", ['"unclosed phrase']), now=NOW)
    assert list_subscribers(engine) == []


def test_subscribe_twice_updates_in_place(engine: Engine) -> None:
    first = upsert_subscriber(engine, operator_patch("a@example.org", ["diffusion"]), now=NOW)
    second = upsert_subscriber(
        engine, operator_patch("A@Example.org", ["llm", "speech"], max_items=5), now=NOW
    )
    assert first.id == second.id
    assert json.loads(second.interests) == ["llm", "speech"]
    assert second.max_items == 5
    assert first.token_salt == second.token_salt


def test_links_verify_and_the_database_alone_cannot_forge_them(engine: Engine) -> None:
    row = upsert_subscriber(engine, operator_patch("a@example.org", ["x"]), now=NOW)
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
    from digest.store.engine import open_store

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
    from digest.store.engine import open_store

    settings = load_settings()
    engine = open_store(settings.database_url)
    row = find_subscriber(engine, "ada@example.org")
    token = link_token(site_keys(settings, engine, NOW).signing, row.id, row.token_salt)
    forged = token[:-1] + ("0" if token[-1] != "0" else "1")
    assert main(["unsubscribe", forged]) == 2
    assert find_subscriber(engine, "ada@example.org").status == "active"
    assert main(["unsubscribe", f"unsubscribe {token}"]) == 0  # as a mailto subject says it
    assert find_subscriber(engine, "ada@example.org").status == "unsubscribed"
    engine.dispose()


# --- the command line: consent, messages, bad arguments, addresses --------------------


Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    """``digest`` in a fresh folder: returns the exit code, stdout and stderr of a command."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIGEST_CONFIG", raising=False)
    capsys.readouterr()

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def refused(result: tuple[int, str, str], *words: str) -> str:
    """The one-line message of a usage error (exit 2, no traceback), checked for ``words``."""
    code, _, err = result
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, (word, err)
    return err


def stored(address: str) -> tuple[str, list[str]]:
    from digest.settings import load_settings
    from digest.store.engine import open_store

    engine = open_store(load_settings().database_url)
    try:
        row = find_subscriber(engine, address)
        return row.status, json.loads(row.interests)
    finally:
        engine.dispose()


def test_cli_subscribe_does_not_reactivate_who_unsubscribed(cli: Cli) -> None:
    assert cli("subscribe", "ada@example.org", "--interest", "graphs")[0] == 0
    assert cli("unsubscribe", "ada@example.org")[0] == 0

    err = refused(
        cli("subscribe", "ada@example.org", "--interest", "speech"),
        "ada@example.org unsubscribed",
        "--resubscribe",
    )
    assert err.startswith("digest: ada@example.org unsubscribed: not reactivated")
    assert stored("ada@example.org") == ("unsubscribed", ["graphs"])

    code, out, err = cli("subscribe", "ada@example.org", "--interest", "speech", "--resubscribe")
    assert code == 0, err
    assert out.startswith("resubscribed ada@example.org (was unsubscribed, now active)")
    assert stored("ada@example.org") == ("active", ["speech"])


def test_cli_subscribe_does_not_reactivate_a_bounced_address(cli: Cli) -> None:
    from digest.service.subscriptions import set_status
    from digest.settings import load_settings
    from digest.store.engine import open_store

    assert cli("subscribe", "bob@example.org", "--interest", "graphs")[0] == 0
    engine = open_store(load_settings().database_url)
    set_status(engine, "bob@example.org", "bounced")  # as a 5xx answer does it
    engine.dispose()

    refused(cli("subscribe", "BOB@example.org", "--interest", "x"), "bounced", "--resubscribe")
    assert stored("bob@example.org") == ("bounced", ["graphs"])
    code, out, _ = cli("subscribe", "bob@example.org", "--interest", "x", "--resubscribe")
    assert code == 0 and "was bounced, now active" in out


def test_cli_import_does_not_reactivate_who_left(cli: Cli, tmp_path: Path) -> None:
    for address in ("ada@example.org", "bob@example.org"):
        assert cli("subscribe", address, "--interest", "graphs")[0] == 0
    assert cli("unsubscribe", "bob@example.org")[0] == 0
    sheet = tmp_path / "list.csv"
    sheet.write_text(
        "email,interests\nada@example.org,speech\nbob@example.org,speech\ncy@example.org,speech\n"
    )

    refused(
        cli("subscribers", "--import", str(sheet)), "bob@example.org unsubscribed", "--resubscribe"
    )
    # all or nothing: not even the others changed
    assert stored("ada@example.org") == ("active", ["graphs"])
    assert stored("bob@example.org") == ("unsubscribed", ["graphs"])
    refused(cli("preview", "cy@example.org"), "no subscriber cy@example.org")

    # an export carries the status along: importing it again keeps bob suppressed
    assert cli("subscribers", "--export", str(tmp_path / "all.csv"))[0] == 0
    code, out, err = cli("subscribers", "--import", str(tmp_path / "all.csv"))
    assert code == 0, err
    assert stored("bob@example.org") == ("unsubscribed", ["graphs"])

    code, out, err = cli("subscribers", "--import", str(sheet), "--resubscribe")
    assert code == 0, err
    assert "1 subscribed, 1 updated, 1 resubscribed" in out
    assert stored("bob@example.org") == ("active", ["speech"])
    refused(cli("subscribers", "--resubscribe"), "--import")


def test_cli_subscribe_again_shows_the_interests_before_and_after(cli: Cli) -> None:
    code, out, _ = cli("subscribe", "ada@example.org", "--interest", "graphs", "--interest", "llm")
    assert (code, out) == (0, "subscribed ada@example.org (2 interests, active)\n")
    code, out, _ = cli("subscribe", "ada@example.org", "--interest", "speech")
    assert code == 0
    assert out.splitlines() == [
        "updated ada@example.org (active)",
        "  interests before: graphs; llm",
        "  interests now:    speech",
    ]
    code, out, _ = cli("subscribe", "ada@example.org", "--interest", "speech", "--json")
    data = json.loads(out)
    assert data["action"] == "updated"
    assert data["before"] == {"status": "active", "interests": ["speech"]}


def test_cli_interest_starting_with_a_dash_reaches_the_interest_language(cli: Cli) -> None:
    err = refused(
        cli("subscribe", "ada@example.org", "--interest", "graphs", "--interest", "-survey"),
        "interest '-survey'",
        "diffusion -survey",
    )
    assert "expected one argument" not in err
    code, _, err = cli("subscribe", "ada@example.org", "--interest", "-survey graphs")
    assert code == 0, err
    assert stored("ada@example.org") == ("active", ["-survey graphs"])


def test_cli_one_interest_separator_for_the_list_and_csv(cli: Cli, tmp_path: Path) -> None:
    assert cli("subscribe", "ada@example.org", "--interest", "a b", "--interest", "c")[0] == 0
    assert cli("subscribers") == (0, "ada@example.org\tactive\ta b; c\n", "")
    code, out, _ = cli("subscribers", "--export", "-")
    assert code == 0 and "ada@example.org,active,a b; c," in out
    refused(cli("subscribe", "bob@example.org", "--interest", "x; y"), "';' separates interests")
    sheet = tmp_path / "piped.csv"
    sheet.write_text("email,interests\nbob@example.org,x | y\n")
    refused(cli("subscribers", "--import", str(sheet)), "CSV line 2", "'|'", "OR")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--max-items", "99999999999999999999999"], "--max-items"),
        (["--max-items", "0"], "--max-items"),
        (["--min-score", "nan"], "--min-score"),
        (["--min-score", "-1"], "--min-score"),
    ],
)
def test_cli_subscribe_bad_limits(cli: Cli, args: list[str], named: str) -> None:
    refused(cli("subscribe", "ada@example.org", "--interest", "x", *args), f"argument {named}:")
    assert not Path("data").exists()


def test_cli_csv_bad_limits_name_the_column(cli: Cli, tmp_path: Path) -> None:
    sheet = tmp_path / "list.csv"
    sheet.write_text("email,interests,max_items\nada@example.org,x,lots\n")
    refused(cli("subscribers", "--import", str(sheet)), "CSV line 2", "max_items")
    refused(cli("subscribers", "--import", str(tmp_path / "missing.csv")), "--import")


@pytest.mark.parametrize("token", ["", "   ", "².ab", "9" * 30 + ".ab", "12", "unsubscribe"])
def test_cli_unsubscribe_bad_token(cli: Cli, token: str) -> None:
    assert cli("subscribe", "ada@example.org", "--interest", "x")[0] == 0
    refused(cli("unsubscribe", token), "unsubscribe: EMAIL|TOKEN")
    assert stored("ada@example.org")[0] == "active"


def test_cli_addresses_beyond_ascii(cli: Cli) -> None:
    refused(cli("subscribe", "üser@example.org", "--interest", "x"), "üser@example.org", "ASCII")
    assert not Path("data").exists()

    code, out, err = cli("subscribe", "User@Bücher.example", "--interest", "x")
    assert code == 0, err
    assert "user@xn--bcher-kva.example" in out  # the IDNA form every mail server takes
    assert stored("user@bücher.example")[0] == "active"  # found by either form
    assert cli("unsubscribe", "user@BÜCHER.example")[0] == 0
    assert stored("user@xn--bcher-kva.example")[0] == "unsubscribed"


def test_plain_rows_and_the_salts_of_active_subscribers(engine: Engine) -> None:
    ada = upsert_subscriber(engine, operator_patch("ada@example.org", ["llm", "speech"]), now=NOW)
    upsert_subscriber(engine, operator_patch("bob@example.org", ["x"], status="bounced"), now=NOW)
    row = Subscription.of(ada)
    assert (row.id, row.email, row.interests) == (ada.id, "ada@example.org", ("llm", "speech"))
    with engine.connect() as conn:
        assert active_salts(conn) == {row.id: ada.token_salt}


def test_feed_salts_addresses_and_ended_feeds(engine: Engine) -> None:
    ada = upsert_subscriber(engine, operator_patch("ada@example.org", ["llm"]), now=NOW)
    bob = upsert_subscriber(
        engine, operator_patch("bob@example.org", ["x"], status="unsubscribed"), now=NOW
    )
    with engine.connect() as conn:
        assert feed_salts(conn) == {
            ada.id: (ada.token_salt, "active"),
            bob.id: (bob.token_salt, "unsubscribed"),
        }
        assert stored_addresses(conn) == {"ada@example.org", "bob@example.org"}
    assert not feed_ended(engine, "f" * 32)
    for _ in range(2):  # remembering it twice is once
        with transaction(engine) as conn:
            end_feed(conn, "f" * 32, NOW)
    assert feed_ended(engine, "f" * 32) and not feed_ended(engine, "e" * 32)


def test_cli_and_csv_keep_the_hour_of_a_readers_digest(cli: Cli, tmp_path: Path) -> None:
    def hour(address: str) -> int | None:
        from digest.settings import load_settings
        from digest.store.engine import open_store

        engine = open_store(load_settings().database_url)
        try:
            return find_subscriber(engine, address).digest_hour
        finally:
            engine.dispose()

    refused(
        cli("subscribe", "ada@example.org", "--interest", "x", "--hour", "24"), "--hour", "0 to 23"
    )
    assert cli("subscribe", "ada@example.org", "--interest", "x", "--hour", "7")[0] == 0
    assert hour("ada@example.org") == 7
    code, out, _ = cli("subscribers", "--export", "-")
    assert code == 0 and out.splitlines() == [
        "email,status,interests,max_items,min_score,frequency,digest_hour",
        "ada@example.org,active,x,20,0.0,daily,7",
    ]
    sheet = tmp_path / "hours.csv"
    sheet.write_text("email,interests,digest_hour\nada@example.org,x,\nbob@example.org,y,23\n")
    assert cli("subscribers", "--import", str(sheet))[0] == 0
    assert (hour("ada@example.org"), hour("bob@example.org")) == (None, 23)
    sheet.write_text("email,interests,digest_hour\nbob@example.org,y,noon\n")
    refused(cli("subscribers", "--import", str(sheet)), "CSV line 2", "digest_hour")
