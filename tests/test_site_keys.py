"""The site's signing keys in the store: two hosts on one database sign and verify the same
links with nothing else shared; an older install's key file is adopted; rotation and
retirement; `digest keys`. On SQLite, and on PostgreSQL when DIGEST_TEST_POSTGRES_URL is set."""

from __future__ import annotations

import json
import os
import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from digest.cli import main
from digest.errors import UsageError
from digest.service.keys import KEY_NOTICE, list_keys, retire, rotate_key, site_keys
from digest.settings import Settings, load_settings
from digest.store.engine import open_store
from digest.store.subscribers import request_subscription
from digest.store.subscription import SubscriptionPatch
from digest.tokens import check_token, link_token
from digest.web.app import create_app

NOW = datetime(2026, 3, 11, 9, 0, tzinfo=UTC)
BASE = "https://papers.example.org"


def host(root: Path, database_url: str, **changes: str) -> Settings:
    """One host's settings: a data folder of its own, the shared database, no secret_key."""
    settings = load_settings(environ={}, cwd=root)
    return settings.model_copy(update={"database_url": database_url, "base_url": BASE, **changes})


def test_the_key_is_made_once_in_the_store_and_no_file_is_written(
    tmp_path: Path, database_url: str
) -> None:
    a, b = host(tmp_path / "a", database_url), host(tmp_path / "b", database_url)
    store_a, store_b = open_store(database_url), open_store(database_url)
    keys = site_keys(a, store_a, NOW)
    assert len(keys.signing) >= 32 and keys.verifying == (keys.signing,)
    assert site_keys(b, store_b, NOW) == keys  # the other host reads the same key
    assert site_keys(a, store_a, NOW + timedelta(days=1)) == keys
    assert not (a.data_dir / "secret.key").exists() and not (b.data_dir / "secret.key").exists()
    store_a.dispose()
    store_b.dispose()


def test_hosts_making_the_first_key_at_once_agree_on_one(tmp_path: Path, database_url: str) -> None:
    stores = [open_store(database_url) for _ in range(6)]
    start = threading.Barrier(len(stores))
    found: list[bytes] = []

    def make(n: int) -> None:
        start.wait()
        found.append(site_keys(host(tmp_path / str(n), database_url), stores[n], NOW).signing)

    threads = [threading.Thread(target=make, args=(n,)) for n in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == len(stores) and len(set(found)) == 1
    assert [key.state for key in list_keys(host(tmp_path, database_url), stores[0], NOW)] == [
        "signs"
    ]
    for store in stores:
        store.dispose()


def _manage_token(client: TestClient) -> str:
    """A manage link made by the host behind ``client``, for a reader who asked there."""
    state = client.app.state.digest  # type: ignore[attr-defined]
    requested = request_subscription(
        state.engine,
        ["ada@example.org"],
        SubscriptionPatch(
            interests=["graphs"], max_items=20, min_score=0.0, frequency="daily", timezone=None
        ),
        now=NOW,
        sends_allowed=5,
    )
    assert requested is not None
    return link_token(state.key, requested.subscriber_id, requested.token_salt, "manage")


def test_a_link_and_a_form_from_one_host_work_on_the_other(
    tmp_path: Path, database_url: str
) -> None:
    a = TestClient(create_app(host(tmp_path / "a", database_url)), base_url=BASE)
    b = TestClient(create_app(host(tmp_path / "b", database_url)), base_url=BASE)
    token = _manage_token(a)
    assert b.get(f"/manage/{token}").status_code == 200
    # a form shown by host A, posted to host B (the same browser: its cookie goes along)
    shown = a.get("/subscribe")
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', shown.text)
    assert csrf is not None
    cookies = {"digest_csrf": a.cookies["digest_csrf"]}
    b.cookies.update(cookies)
    answer = b.post(f"/manage/{token}/pause", data={"csrf": csrf.group(1)})
    assert answer.status_code == 200, answer.text  # not 403: B knows A's forms


def test_an_older_installs_key_file_is_adopted_and_a_second_hosts_still_verifies(
    tmp_path: Path, database_url: str
) -> None:
    a, b = host(tmp_path / "a", database_url), host(tmp_path / "b", database_url)
    for settings, key in ((a, "the-key-host-a-had-0123456789abcdef"), (b, "host-b-own-key-98765")):
        settings.data_dir.mkdir(parents=True)
        (settings.data_dir / "secret.key").write_text(key + "\n")
    store = open_store(database_url)
    mailed_by_b = link_token(b"host-b-own-key-98765", 7, "salt")
    keys = site_keys(a, store, NOW)
    assert keys.signing == b"the-key-host-a-had-0123456789abcdef"  # links already mailed work
    keys = site_keys(b, store, NOW)
    assert keys.signing == b"the-key-host-a-had-0123456789abcdef"  # one key signs for both
    assert check_token(keys.verifying, mailed_by_b, 7, "salt")  # B's old links still work
    states = {key.id: key.state for key in list_keys(a, store, NOW)}
    assert sorted(states.values()) == ["signs", "verifies"]
    store.dispose()


def test_a_secret_key_setting_still_signs_and_stored_keys_still_verify(
    tmp_path: Path, database_url: str
) -> None:
    store = open_store(database_url)
    stored = site_keys(host(tmp_path, database_url), store, NOW).signing
    given = host(tmp_path, database_url, secret_key="a-shared-key-from-the-settings-0123")
    keys = site_keys(given, store, NOW)
    assert keys.signing == b"a-shared-key-from-the-settings-0123"
    assert keys.verifying == (keys.signing, stored)
    store.dispose()


def test_rotation_signs_later_and_old_links_work_until_the_key_is_retired(
    tmp_path: Path, database_url: str
) -> None:
    settings = host(tmp_path, database_url)
    store = open_store(database_url)
    old = site_keys(settings, store, NOW)
    mailed = link_token(old.signing, 12, "salt")
    new = rotate_key(settings, store, NOW)
    assert new.state == "waits" and new.signs_from == NOW + KEY_NOTICE
    # until every host has read the new key, the old one signs; both verify
    soon = site_keys(settings, store, NOW + KEY_NOTICE - timedelta(seconds=1))
    assert soon.signing == old.signing and len(soon.verifying) == 2
    later = site_keys(settings, store, NOW + KEY_NOTICE)
    assert later.signing != old.signing and later.verifying == (later.signing, old.signing)
    assert check_token(later.verifying, mailed, 12, "salt")
    [first] = [key for key in list_keys(settings, store, NOW + KEY_NOTICE) if key.generation == 1]
    with pytest.raises(UsageError, match="rotate first"):
        retire(settings, store, new.id, NOW + KEY_NOTICE)  # the key that signs
    assert check_token(site_keys(settings, store, NOW + KEY_NOTICE).verifying, mailed, 12, "salt")
    retire(settings, store, first.id, NOW + timedelta(days=30))
    after = site_keys(settings, store, NOW + timedelta(days=30))
    assert after.verifying == (later.signing,)
    assert not check_token(after.verifying, mailed, 12, "salt")
    # a retired key stays retired, even when a host still has it as its old key file
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    (settings.data_dir / "secret.key").write_bytes(old.signing)
    assert site_keys(settings, store, NOW + timedelta(days=31)).verifying == (later.signing,)
    store.dispose()


def test_the_keys_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("DIGEST_")]:
        monkeypatch.delenv(name)
    assert main(["keys", "list", "--json"]) == 0
    [first] = json.loads(capsys.readouterr().out)["keys"]
    assert first["state"] == "signs" and "key" not in first and len(first["fingerprint"]) == 12
    assert main(["keys", "rotate"]) == 0
    said = capsys.readouterr().out
    assert "waits" in said and "signs in 5 minutes" in said
    assert main(["keys", "retire", str(first["id"])]) == 2  # it still signs
    assert "rotate first" in capsys.readouterr().err
    assert main(["keys", "rotate", "--at-once"]) == 0
    assert " signs " in capsys.readouterr().out
    assert main(["keys", "retire", str(first["id"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["keys"][0]["state"] == "retired"
    assert main(["keys", "list", "--json"]) == 0
    states = [key["state"] for key in json.loads(capsys.readouterr().out)["keys"]]
    assert states == ["retired", "waits", "signs"]
    for bad in (["keys", "retire"], ["keys", "retire", "99"], ["keys", "list", "3"]):
        assert main(bad) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("digest: keys"), err
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'data' / 'digest.db'}")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM sitekey")).scalar() == 3
    engine.dispose()
