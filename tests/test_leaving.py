"""A reader who leaves leaves nothing behind: deleting on the web front removes their
``.eml`` files and private feed files, at once where the web front reaches them and at the
next run where it does not; unsubscribing takes the private feed down; and the live
private feed of a reader who left answers 410 Gone."""

from __future__ import annotations

import email
import email.policy
import os
import re
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from digest.deliver.mail_files import mail_file_name, recipient_tag, sweep_mail
from digest.settings import load_settings
from digest.store.engine import open_store
from digest.store.subscribers import set_paused
from digest.tokens import feed_name
from digest.web.app import create_app
from tests.conftest import EXAMPLE_DUMPS, Site, store_rows
from tests.test_web_subscription import csrf_of, post_form

KEY = b"a-fixed-key-for-tests-only-0123456789"
DUMP_C = EXAMPLE_DUMPS / "daily-mar13-layout-b.txt"
ADA, BOB = "ada@example.org", "bob@example.org"


@pytest.fixture
def files_site(site: Site, monkeypatch: pytest.MonkeyPatch) -> Site:
    """The site with mail going to ``.eml`` files and private feeds written as files."""
    outbox = site.data / "outbox"
    monkeypatch.setenv("DIGEST_MAIL_TRANSPORT", f"file://{outbox}")
    monkeypatch.setenv("DIGEST_FEED_FILES", "all")
    site.env["DIGEST_MAIL_TRANSPORT"] = f"file://{outbox}"
    return site


def outbox(site: Site) -> Path:
    return site.data / "outbox"


def mail_for(site: Site, address: str) -> list[Path]:
    """Every .eml file in the outbox addressed to ``address`` (by its To header)."""
    found = []
    for path in sorted(outbox(site).glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if address in str(message["To"]):
            found.append(path)
    return found


def text_of(path: Path) -> str:
    """The plain-text part of an .eml file."""
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def join(site: Site, client: TestClient, address: str) -> str:
    """Subscribe on the web front and confirm by the emailed link; the manage path."""
    shown = client.get("/subscribe")
    answer = client.post(
        "/subscribe",
        data={"csrf": csrf_of(shown.text), "email": address, "interests": "diffusion"},
    )
    assert answer.status_code == 200, answer.text
    (confirmation,) = mail_for(site, address)
    link = re.search(r"https://[^/\s]+(/confirm/[^\s\"<>]+)", text_of(confirmation))
    assert link
    done = post_form(client, link.group(1), link.group(1), {})
    assert done.status_code == 200, done.text
    manage = re.search(r'href="(/manage/[^"]+)"', done.text)
    assert manage
    return manage.group(1)


def private_feed_of(site: Site, address: str) -> str:
    (row,) = store_rows(
        site.data, f"SELECT id, token_salt FROM subscriber WHERE email = '{address}'"
    )
    return feed_name(KEY, int(str(row[0])), str(row[1]))


def run(site: Site, dump: Path, name: str) -> None:
    site.drop_in_inbox(dump, name)
    result = site.cli("run", "--json")
    assert result.code == 0, result.err


def test_deleting_on_the_web_removes_the_mail_files_and_the_private_feed(
    files_site: Site, dump_a: Path
) -> None:
    site = files_site
    client = site.web()
    manage = join(site, client, ADA)
    join(site, client, BOB)
    run(site, dump_a, "a.txt")
    assert len(mail_for(site, ADA)) == 2  # the confirmation and a digest
    name = private_feed_of(site, ADA)
    feeds = site.data / "feeds" / "private"
    assert {p.name for p in feeds.iterdir()} >= {f"{name}.atom", f"{name}.rss"}
    assert client.get(f"/feeds/private/{name}.atom").status_code == 200

    gone = post_form(client, manage + "/delete", manage + "/delete", {})
    assert gone.status_code == 200 and "are gone" in gone.text

    assert mail_for(site, ADA) == []
    assert not (feeds / f"{name}.atom").exists() and not (feeds / f"{name}.rss").exists()
    for kind in ("atom", "rss"):
        answer = client.get(f"/feeds/private/{name}.{kind}")
        assert answer.status_code == 410 and "has ended" in answer.text
    # a fresh web front (another process) knows the feed ended too
    assert site.web().get(f"/feeds/private/{name}.atom").status_code == 410

    run(site, DUMP_C, "c.txt")  # a later run writes nothing of theirs
    assert mail_for(site, ADA) == []
    assert not (feeds / f"{name}.atom").exists()
    assert len(mail_for(site, BOB)) >= 2  # the other reader keeps theirs


def test_a_run_removes_what_a_web_front_elsewhere_could_not(files_site: Site, dump_a: Path) -> None:
    site = files_site
    manage = join(site, site.web(), ADA)
    join(site, site.web(), BOB)
    run(site, dump_a, "a.txt")
    name = private_feed_of(site, ADA)
    feeds = site.data / "feeds" / "private"
    # mail files named before the recipient's tag: one of each reader
    for address in (ADA, BOB):
        newest = mail_for(site, address)[-1]
        newest.rename(newest.with_name(newest.name.split(".", 1)[1]))

    # the web front on another host: mail goes out by SMTP, the feeds folder is not this one
    elsewhere = load_settings(None).model_copy(
        update={"mail_transport": site.server.url(), "feeds_dir": site.root / "other"}
    )
    client = TestClient(create_app(elsewhere), base_url=site.env["DIGEST_BASE_URL"])
    gone = post_form(client, manage + "/delete", manage + "/delete", {})
    assert gone.status_code == 200
    assert len(mail_for(site, ADA)) == 2 and (feeds / f"{name}.atom").exists()

    os.utime(outbox(site), None)
    time.sleep(0.01)  # the sweep judges only files older than its start
    result = site.cli("run", "--json")
    assert result.code == 0, result.err
    assert mail_for(site, ADA) == []
    assert not (feeds / f"{name}.atom").exists() and not (feeds / f"{name}.rss").exists()
    bobs = mail_for(site, BOB)
    assert len(bobs) == 2  # kept, and the untagged one renamed to its tagged name
    assert all(p.name.startswith(recipient_tag(BOB) + ".") for p in bobs)


def test_unsubscribing_takes_the_private_feed_down(files_site: Site, dump_a: Path) -> None:
    site = files_site
    client = site.web()
    join(site, client, ADA)
    run(site, dump_a, "a.txt")
    name = private_feed_of(site, ADA)
    feeds = site.data / "feeds" / "private"
    (digest_file,) = [p for p in mail_for(site, ADA) if ".digest." in p.name]
    digest = text_of(digest_file).replace("\r\n", "\n")
    link = re.search(r"^Unsubscribe: https://[^/\s]+(/\S+)$", digest, re.MULTILINE)
    assert link
    done = client.post(link.group(1), data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200

    assert not (feeds / f"{name}.atom").exists() and not (feeds / f"{name}.rss").exists()
    assert client.get(f"/feeds/private/{name}.rss").status_code == 410
    run(site, DUMP_C, "c.txt")
    assert not (feeds / f"{name}.atom").exists()
    assert len(mail_for(site, ADA)) == 2  # their emails are theirs to delete, not gone


def test_a_sweep_spares_new_files_and_files_of_no_recipient(tmp_path: Path) -> None:
    kept = tmp_path / mail_file_name(ADA, "<a@x>")
    stale = tmp_path / mail_file_name(BOB, "<b@x>")
    stranger = tmp_path / "notes.eml"  # no To header: not a message digest wrote
    for path in (kept, stale, stranger):
        path.write_bytes(b"Subject: hi\r\n\r\nbody\r\n")
    before = time.time() + 1
    assert sweep_mail(tmp_path, [ADA], before=before) == 1
    assert kept.exists() and not stale.exists() and stranger.exists()
    newer = tmp_path / mail_file_name(BOB, "<c@x>")
    newer.write_bytes(b"To: bob@example.org\r\n\r\n")
    assert sweep_mail(tmp_path, [ADA], before=newer.stat().st_mtime - 1) == 0
    assert newer.exists()


def test_the_operator_unsubscribing_takes_the_feed_down_and_a_pause_keeps_it(
    files_site: Site, dump_a: Path
) -> None:
    site = files_site
    site.subscribe({ADA: ["diffusion"], BOB: ["diffusion"]})
    run(site, dump_a, "a.txt")
    feeds = site.data / "feeds" / "private"
    ada, bob = private_feed_of(site, ADA), private_feed_of(site, BOB)
    client = site.web()
    assert site.cli("unsubscribe", ADA).code == 0
    assert not (feeds / f"{ada}.atom").exists()
    assert client.get(f"/feeds/private/{ada}.atom").status_code == 410

    (row,) = store_rows(site.data, f"SELECT id FROM subscriber WHERE email = '{BOB}'")
    set_paused(open_store(f"sqlite:///{site.data / 'digest.db'}"), int(str(row[0])), True)
    run(site, DUMP_C, "c.txt")
    assert (feeds / f"{bob}.atom").exists()  # paused: kept, and still served
    assert client.get(f"/feeds/private/{bob}.atom").status_code == 200
