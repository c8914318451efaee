"""Feeds served live: the public feed, private feeds and search feeds, read back with
feedparser; ETag, Last-Modified and 304; the cache after a new ingest; feed_files."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import feedparser
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import col
from starlette.testclient import TestClient

from digest.service import scheduler
from digest.service.keys import site_keys
from digest.service.live_feeds import REBUILD_SECONDS, FeedNames
from digest.service.subscriptions import operator_patch, upsert_subscriber
from digest.settings import load_settings
from digest.store import outbox
from digest.store.engine import open_store, transaction
from digest.store.models import Digest
from digest.store.outbox import Planned, feed_state
from digest.tokens import feed_name
from tests.conftest import EXAMPLE_A, EXAMPLE_DUMPS, Site, store_rows

JOINED = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)
EXAMPLE_B12 = EXAMPLE_DUMPS / "daily-mar12-layout-b.txt"
EXAMPLE_B13 = EXAMPLE_DUMPS / "daily-mar13-layout-b.txt"


def ingest(site: Site, *dumps: Path) -> None:
    for dump in dumps:
        result = site.cli("ingest", str(dump))
        assert result.code == 0, result.err


def private_feed_path(site: Site, address: str) -> str:
    """The private feed's path, as the subscriber's last email gives it."""
    for to, message in reversed(site.received()):
        if to == address:
            body = message.get_body(("plain",))
            assert body is not None
            found = re.search(r"Your feed: (\S+)", body.get_content())
            assert found
            return urlsplit(found.group(1)).path
    raise AssertionError(f"no mail to {address}")


@pytest.mark.parametrize("kind", ["atom", "rss"])
def test_the_public_feed_is_served_from_the_store(site: Site, kind: str) -> None:
    ingest(site, EXAMPLE_A)
    response = site.web().get(f"/feeds/papers.{kind}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(f"application/{kind}+xml")
    feed = feedparser.parse(response.content)
    assert not feed.bozo, feed.get("bozo_exception")
    titles = {str(t) for (t,) in store_rows(site.data, "SELECT title FROM paper")}
    assert {entry.title for entry in feed.entries} == titles
    base = site.env["DIGEST_BASE_URL"]
    assert all(entry.link.startswith(f"{base}/papers/") for entry in feed.entries)


def test_the_live_feed_says_what_the_feed_file_says(site: Site) -> None:
    site.drop_in_inbox(EXAMPLE_A, "a.txt")
    assert site.cli("run").code == 0
    written = feedparser.parse((site.data / "feeds" / "papers.atom").read_bytes())
    served = feedparser.parse(site.web().get("/feeds/papers.atom").content)
    assert [(e.id, e.title, e.link, e.summary) for e in served.entries] == [
        (e.id, e.title, e.link, e.summary) for e in written.entries
    ]
    assert served.feed.id == written.feed.id


def conditional(client: TestClient, path: str) -> tuple[str, str]:
    first = client.get(path)
    assert first.status_code == 200
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    return etag, modified


def test_conditional_requests_get_304(site: Site) -> None:
    ingest(site, EXAMPLE_A)
    client = site.web()
    etag, modified = conditional(client, "/feeds/papers.atom")
    again = client.get("/feeds/papers.atom", headers={"if-none-match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    assert (
        client.get("/feeds/papers.atom", headers={"if-modified-since": modified}).status_code == 304
    )
    other = client.get("/feeds/papers.atom", headers={"if-none-match": '"0000"'})
    assert other.status_code == 200 and other.content
    # If-None-Match wins over If-Modified-Since
    both = client.get(
        "/feeds/papers.atom", headers={"if-none-match": '"0000"', "if-modified-since": modified}
    )
    assert both.status_code == 200
    old = client.get(
        "/feeds/papers.atom", headers={"if-modified-since": "Mon, 01 Jan 2001 00:00:00 GMT"}
    )
    assert old.status_code == 200
    garbled = client.get("/feeds/papers.atom", headers={"if-modified-since": "yesterday-ish"})
    assert garbled.status_code == 200
    # a fresh process (another worker) gives the same validators for the same store
    assert conditional(site.web(), "/feeds/papers.atom") == (etag, modified)


def test_a_new_ingest_invalidates_the_cached_feed(site: Site) -> None:
    ingest(site, EXAMPLE_A)
    client = site.web()
    etag, _ = conditional(client, "/feeds/papers.atom")
    before = feedparser.parse(client.get("/feeds/papers.atom").content)
    ingest(site, EXAMPLE_B12)
    after = client.get("/feeds/papers.atom", headers={"if-none-match": etag})
    assert after.status_code == 200
    assert after.headers["etag"] != etag
    entries = feedparser.parse(after.content).entries
    assert len(entries) == len(before.entries) + 6  # the six new papers of B
    ingest(site, EXAMPLE_B12)  # the same dump again: nothing new, nothing changes
    assert (
        client.get(
            "/feeds/papers.atom", headers={"if-none-match": after.headers["etag"]}
        ).status_code
        == 304
    )


def test_a_private_feed_is_served_by_its_name(site: Site) -> None:
    site.subscribe({"ada@example.org": ["federated"], "bob@example.org": ["diffusion"]})
    site.drop_in_inbox(EXAMPLE_A, "a.txt")
    assert site.cli("run").code == 0
    client = site.web()
    path = private_feed_path(site, "ada@example.org")
    assert path.startswith("/feeds/private/") and path.endswith(".atom")
    response = client.get(path)
    assert response.status_code == 200
    assert "private" in response.headers["cache-control"]
    feed = feedparser.parse(response.content)
    assert not feed.bozo
    sent = store_rows(
        site.data,
        "SELECT p.title FROM digestitem i JOIN paper p ON p.id = i.paper_id"
        " JOIN subscriber s ON s.id = i.subscriber_id WHERE s.email = 'ada@example.org'",
    )
    assert sorted(e.title for e in feed.entries) == sorted(str(t) for (t,) in sent)
    assert all("Matched: federated" in e.summary for e in feed.entries)
    rss = feedparser.parse(client.get(path.removesuffix(".atom") + ".rss").content)
    assert [e.title for e in rss.entries] == [e.title for e in feed.entries]
    etag = response.headers["etag"]
    assert client.get(path, headers={"if-none-match": etag}).status_code == 304
    bob = private_feed_path(site, "bob@example.org")
    assert bob != path and client.get(bob).status_code == 200


def test_a_private_feed_changes_with_the_next_digest(site: Site) -> None:
    site.subscribe({"ada@example.org": ["federated"]})
    site.drop_in_inbox(EXAMPLE_A, "a.txt")
    assert site.cli("run").code == 0
    client = site.web()
    path = private_feed_path(site, "ada@example.org")
    etag, _ = conditional(client, path)
    first = len(feedparser.parse(client.get(path).content).entries)
    site.drop_in_inbox(EXAMPLE_B12, "b.txt")  # brings a new federated paper
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()  # a new period
    assert site.cli("run", "--period", tomorrow).code == 0
    assert store_rows(site.data, "SELECT count(*) FROM digest WHERE status = 'sent'") == [(2,)]
    after = client.get(path, headers={"if-none-match": etag})
    assert after.status_code == 200
    assert after.headers["etag"] != etag
    assert len(feedparser.parse(after.content).entries) > first


@pytest.mark.parametrize(
    "name",
    ["0" * 32, "f" * 31, "not-a-feed", "..%2F..%2Fdigest.db", "0" * 32 + "0"],
)
def test_an_unknown_private_feed_is_a_friendly_404(site: Site, name: str) -> None:
    site.subscribe({"ada@example.org": ["federated"]})
    response = site.web().get(f"/feeds/private/{name}.atom")
    assert response.status_code == 404
    assert "Traceback" not in response.text
    assert "no feed at this address" in response.text or "no page at this address" in response.text


def test_a_feed_of_someone_who_left_is_gone(site: Site) -> None:
    site.subscribe({"ada@example.org": ["federated"]})
    site.drop_in_inbox(EXAMPLE_A, "a.txt")
    assert site.cli("run").code == 0
    client = site.web()
    path = private_feed_path(site, "ada@example.org")
    assert client.get(path).status_code == 200
    assert site.cli("unsubscribe", "ada@example.org").code == 0
    assert client.get(path).status_code == 410  # Gone, so a feed reader stops asking


def test_a_wrong_extension_is_a_404(site: Site) -> None:
    assert site.web().get("/feeds/papers.json").status_code == 404


@pytest.mark.parametrize("kind", ["atom", "rss"])
def test_a_search_feed_follows_an_interest(site: Site, kind: str) -> None:
    ingest(site, EXAMPLE_A, EXAMPLE_B12)
    client = site.web()
    response = client.get(f"/feeds/search.{kind}", params={"q": '"federated learning" OR speech'})
    assert response.status_code == 200
    feed = feedparser.parse(response.content)
    assert not feed.bozo
    searched = site.cli("search", '"federated learning" OR speech', "--json").json()["papers"]
    assert {e.title for e in feed.entries} == {hit["title"] for hit in searched}
    assert "federated" in feed.feed.title.lower()
    etag = response.headers["etag"]
    again = client.get(
        f"/feeds/search.{kind}",
        params={"q": '"federated learning" OR speech'},
        headers={"if-none-match": etag},
    )
    assert again.status_code == 304


@pytest.mark.parametrize(
    ("query", "words"),
    [("", "needs an interest"), ("speech (", "at position"), ("z" * 501, "longer than 500")],
)
def test_a_bad_search_feed_is_a_friendly_400(site: Site, query: str, words: str) -> None:
    ingest(site, EXAMPLE_A)
    response = site.web().get("/feeds/search.atom", params={"q": query})
    assert response.status_code == 400
    assert words in response.text
    assert "Traceback" not in response.text


# --- feed_files -------------------------------------------------------------------------


def private_files(site: Site) -> list[Path]:
    folder = site.data / "feeds" / "private"
    return sorted(folder.glob("*")) if folder.exists() else []


@pytest.mark.parametrize(("setting", "files"), [("all", 2), ("public", 0), ("auto", 2)])
def test_feed_files_under_run(
    site: Site, monkeypatch: pytest.MonkeyPatch, setting: str, files: int
) -> None:
    monkeypatch.setenv("DIGEST_FEED_FILES", setting)
    site.subscribe({"ada@example.org": ["federated"]})
    site.drop_in_inbox(EXAMPLE_A, "a.txt")
    assert site.cli("run").code == 0
    assert len(private_files(site)) == files
    assert (site.data / "feeds" / "papers.atom").exists()
    # the web front serves the private feed either way
    assert site.web().get(private_feed_path(site, "ada@example.org")).status_code == 200


@pytest.mark.parametrize(
    ("setting", "no_web", "files"),
    [("auto", False, 0), ("auto", True, 2), ("all", False, 2), ("public", True, 0)],
)
def test_feed_files_under_serve(
    site: Site, monkeypatch: pytest.MonkeyPatch, setting: str, no_web: bool, files: int
) -> None:
    monkeypatch.setenv("DIGEST_FEED_FILES", setting)
    site.subscribe({"ada@example.org": ["federated"]})
    site.drop_in_inbox(EXAMPLE_A, "a.txt")

    def serve_once(*, services: list[Any], run_job: Callable[[], None], **_: Any) -> int:
        run_job()  # one scheduled run, no server started
        return 0

    # cmd_serve takes the scheduler's serve when it runs
    monkeypatch.setattr(scheduler, "serve", serve_once)
    args = ["serve", "--no-web"] if no_web else ["serve"]
    result = site.cli(*args)
    assert result.code == 0, result.err
    assert store_rows(site.data, "SELECT status FROM run") == [("ok",)]
    assert len(private_files(site)) == files


def test_on_a_postgresql_store_a_run_writes_the_public_feed_file_only(
    site: Site, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    monkeypatch.setenv("DIGEST_DATABASE_URL", database_url)
    site.subscribe({"ada@example.org": ["federated"]})
    site.drop_in_inbox(EXAMPLE_A, "a.txt")
    assert site.cli("run").code == 0  # feed_files "auto"
    shared = database_url.startswith("postgres")
    assert len(private_files(site)) == (0 if shared else 2)
    assert (site.data / "feeds" / "papers.atom").exists()
    # the web front serves the private feed from the store, on any host
    assert site.web().get(private_feed_path(site, "ada@example.org")).status_code == 200
    monkeypatch.setenv("DIGEST_FEED_FILES", "all")
    refused = site.cli("run")
    if shared:  # refused before anything is done, in one line naming the setting
        assert refused.code == 2
        said = "setting feed_files ('all') from DIGEST_FEED_FILES must be public or auto with"
        assert said in refused.err and "PostgreSQL store" in refused.err
        assert "Traceback" not in refused.err
    else:
        assert refused.code == 0, refused.err


def test_the_name_index_is_rebuilt_on_a_miss_at_most_every_few_seconds(site: Site) -> None:
    settings = load_settings(None)
    site.subscribe({"ada@example.org": ["federated"]})
    engine = open_store(settings.database_url)
    key = site_keys(settings, engine, datetime.now(UTC)).signing
    now = [100.0]
    names = FeedNames(key, clock=lambda: now[0])
    builds = 0
    rebuild = names.rebuild

    def counted(engine: Any) -> None:
        nonlocal builds
        builds += 1
        rebuild(engine)

    names.rebuild = counted  # type: ignore[method-assign]

    def name_of(address: str) -> tuple[int, str]:
        ((ident, salt),) = store_rows(
            site.data, f"SELECT id, token_salt FROM subscriber WHERE email = '{address}'"
        )
        return int(str(ident)), feed_name(key, int(str(ident)), str(salt))

    ada, ada_name = name_of("ada@example.org")
    assert names.find(engine, ada_name) == ada and builds == 1
    assert names.find(engine, ada_name) == ada and builds == 1  # known: no rebuild
    site.subscribe({"bob@example.org": ["speech"]})
    bob, bob_name = name_of("bob@example.org")
    assert names.find(engine, "0" * 32) is None and builds == 1  # too soon after the last
    assert names.find(engine, bob_name) is None and builds == 1
    now[0] += REBUILD_SECONDS
    assert names.find(engine, bob_name) == bob and builds == 2
    engine.dispose()


def test_a_private_feed_links_its_readers_manage_page(site: Site) -> None:
    site.subscribe({"ada@example.org": ["federated"], "bob@example.org": ["diffusion"]})
    site.drop_in_inbox(EXAMPLE_A, "a.txt")
    assert site.cli("run").code == 0  # feed_files "auto": `run` writes every feed file
    client = site.web()
    path = private_feed_path(site, "ada@example.org")
    served = feedparser.parse(client.get(path).content)
    written = feedparser.parse((site.data / path.removeprefix("/")).read_bytes())
    found = re.search(r"Change your interests or unsubscribe: (\S+)", served.feed.subtitle)
    assert found, served.feed.subtitle
    assert written.feed.subtitle == served.feed.subtitle  # the file says the same
    manage = urlsplit(found.group(1)).path
    assert manage.startswith("/manage/")
    page = client.get(manage)
    assert page.status_code == 200 and "ada@example.org" in page.text
    bob = feedparser.parse(client.get(private_feed_path(site, "bob@example.org")).content)
    assert found.group(1) not in bob.feed.subtitle  # each reader's own page


# --- what a private feed depends on, read in one small query ----------------------------


def test_a_private_feed_depends_on_its_readers_sent_digests_only(engine: Engine) -> None:
    ada = upsert_subscriber(engine, operator_patch("ada@example.org", ["speech"]), now=JOINED)
    bob = upsert_subscriber(engine, operator_patch("bob@example.org", ["speech"]), now=JOINED)
    for day, who in ((1, ada.id), (1, bob.id), (2, ada.id), (3, ada.id), (3, bob.id)):
        with transaction(engine) as conn:
            outbox.record(
                conn,
                [Planned(who, "pending", f"<{day}.{who}@x>", 0, [])],
                period=JOINED.date() + timedelta(days=day),
                now=JOINED + timedelta(days=day),
                run_id=None,
            )
    ids = {
        (row.subscriber_id, row.period.day - JOINED.day): row.digest_id
        for row in outbox.load(engine)
    }

    def last_sent() -> object:
        state = feed_state(engine, ada.id)
        assert state is not None and state.status == "active"
        return state.last_sent

    assert last_sent() is None
    outbox.mark_sent(engine, ids[(ada.id, 1)], JOINED + timedelta(days=1))
    first = last_sent()
    assert first is not None
    # another reader's digest, a failed one and a pending one change nothing
    outbox.mark_sent(engine, ids[(bob.id, 3)], JOINED + timedelta(days=3))
    with transaction(engine) as conn:  # as a sender that claimed it sets it aside
        conn.execute(
            sa.update(Digest).where(col(Digest.id) == ids[(ada.id, 2)]).values(status="failed")
        )
    assert last_sent() == first
    outbox.mark_sent(engine, ids[(ada.id, 3)], JOINED + timedelta(days=3))
    assert last_sent() not in (None, first)


def test_a_feed_poll_reads_its_readers_digests_by_their_index(site: Site) -> None:
    """Not every sent digest of everyone through the (status, id) index: a poll of a
    private feed took 17 ms at 20,000 digests that way; nor every digest of the reader."""
    site.subscribe({"ada@example.org": ["federated"]})
    with sqlite3.connect(site.data / "digest.db") as raw:
        plan = raw.execute(
            "EXPLAIN QUERY PLAN " + outbox._FEED_STATE.format(mark="?"), (1,)
        ).fetchall()
    steps = " / ".join(str(step[-1]) for step in plan)
    # the newest of the reader's sent digests, found in the index of their sent digests
    assert (
        "SEARCH d USING COVERING INDEX ix_digest_subscriber_sent (subscriber_id=? AND status=?)"
        in steps
    ), steps
