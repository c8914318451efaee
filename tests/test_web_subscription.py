"""Self-service subscription on the web front: double opt-in, confirm, manage, one-click
unsubscribe, and every refusal, through the ASGI app over a real SQLite store, with the
confirmation email read back from a real SMTP server on loopback and the next ``digest run``
sending (or not) accordingly."""

from __future__ import annotations

import email
import email.policy
import json
import re
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from starlette.testclient import TestClient

from digest.deliver.confirm import ConfirmView, build_confirmation
from digest.deliver.message import Sender
from digest.ingest.diff import upsert_entries
from digest.ingest.listing import Entry
from digest.settings import load_settings
from digest.store import votes as feedback
from digest.store.engine import open_store, transaction
from digest.store.outbox import Planned, owed_subscribers, record
from digest.store.subscribers import (
    confirm_request,
    count_by_status,
    erase_subscriber,
    export_subscriber,
    list_subscribers,
    request_subscription,
    set_paused,
    subscriber_by_id,
    unsubscribe,
)
from digest.store.subscription import SubscriptionPatch
from digest.tokens import expiring_token, link_token
from digest.web.app import create_app
from tests.conftest import EXAMPLE_DUMPS, SITE_HOST, Site, store_rows
from tests.test_emails import check_expected
from tests.test_migrations import _store_at

BASE = f"https://{SITE_HOST}"
DUMP_C = EXAMPLE_DUMPS / "daily-mar13-layout-b.txt"


# --- helpers -------------------------------------------------------------------------


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def post_form(
    client: TestClient, page: str, action: str, data: dict[str, str], *, csrf: bool = True
) -> httpx.Response:
    """Open ``page`` as a browser would, then submit its form to ``action``."""
    shown = client.get(page)
    assert shown.status_code == 200, shown.text
    fields = {"csrf": csrf_of(shown.text)} if csrf else {}
    return client.post(action, data={**fields, **data})


def subscribe(client: TestClient, email: str, interests: str) -> httpx.Response:
    return post_form(client, "/subscribe", "/subscribe", {"email": email, "interests": interests})


def subscribers(site: Site) -> dict[str, tuple[object, ...]]:
    """email -> (status, interests, has a request awaiting confirmation)."""
    rows = store_rows(site.data, "SELECT email, status, interests, request FROM subscriber")
    return {str(r[0]): (r[1], json.loads(str(r[2])), r[3] is not None) for r in rows}


def mail_to(site: Site, address: str) -> list[EmailMessage]:
    return [message for rcpt, message in site.received() if rcpt == address]


def parts(message: EmailMessage) -> tuple[str, str]:
    text, html = (part.get_content() for part in message.iter_parts())
    assert isinstance(text, str) and isinstance(html, str)
    return text.replace("\r\n", "\n"), html.replace("\r\n", "\n")


def confirm_path(site: Site, address: str) -> str:
    """The path of the newest confirmation link sent to ``address``."""
    (*_, message) = mail_to(site, address)
    text, html = parts(message)
    links = re.findall(rf"{BASE}(/confirm/[^\s\"<>]+)", text)
    assert links and f'href="{BASE}{links[0]}"' in html
    return str(links[0])


def footer_link(message: EmailMessage, label: str) -> str:
    text, _ = parts(message)
    match = re.search(rf"^{label}: {BASE}(/\S+)$", text, re.MULTILINE)
    assert match, f"no {label} link"
    return match.group(1)


def run(site: Site, dump: Path, name: str, *period: str) -> dict[str, object]:
    site.drop_in_inbox(dump, name)
    result = site.cli("run", "--json", *period)
    assert result.code == 0, result.err
    return result.json()


def subscribed(site: Site, client: TestClient, email: str, interests: str) -> str:
    """Subscribe and confirm; returns the manage path from the confirmed page."""
    assert subscribe(client, email, interests).status_code == 200
    path = confirm_path(site, email)
    done = post_form(client, path, path, {})
    assert done.status_code == 200, done.text
    match = re.search(r'href="(/manage/[^"]+)"', done.text)
    assert match
    return match.group(1)


def app_at(moment: datetime) -> TestClient:
    """The site's web front with its clock stopped at ``moment``."""
    app = create_app(load_settings(None), now=lambda: moment)
    return TestClient(app, base_url=BASE, raise_server_exceptions=False)


def refused(response: httpx.Response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert words in response.text
    assert "Traceback" not in response.text


# --- the whole loop ------------------------------------------------------------------


def test_subscribe_confirm_and_the_next_run_sends(site: Site, dump_a: Path) -> None:
    site.subscribe({"old@example.org": ["diffusion"]})  # proves the runs below do send
    client = site.web()

    form = client.get("/subscribe")
    assert form.status_code == 200
    assert '<label for="email">' in form.text and '<label for="interests">' in form.text
    answer = subscribe(client, "Ada@Example.org", "diffusion\n\n  video  \n")
    assert answer.status_code == 200
    assert "Check your inbox" in answer.text and "ada@example.org" in answer.text

    assert subscribers(site)["ada@example.org"] == ("pending", [], True)
    (message,) = mail_to(site, "ada@example.org")
    assert str(message["Subject"]) == "Confirm your subscription to Paper digest"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["List-Unsubscribe"] is None
    text, html = parts(message)
    assert "  * diffusion\n  * video\n" in text
    assert "<li>diffusion</li>" in html and "<html" in html
    path = confirm_path(site, "ada@example.org")

    # pending: the run sends the others, not them
    report = run(site, dump_a, "a.txt")
    assert report["digests"]["sent"] == 1  # type: ignore[index]
    assert [rcpt for rcpt, _ in site.received()] == ["ada@example.org", "old@example.org"]

    # the link shows one button; following it changes nothing
    page = client.get(path)
    assert page.status_code == 200
    assert re.search(rf'<form method="post" action="{re.escape(path)}">', page.text)
    assert subscribers(site)["ada@example.org"][0] == "pending"
    refused(client.post(path, data={}), 403, "did not come from this site")
    assert subscribers(site)["ada@example.org"][0] == "pending"

    done = post_form(client, path, path, {})
    assert done.status_code == 200 and "You are subscribed" in done.text
    assert subscribers(site)["ada@example.org"] == ("active", ["diffusion", "video"], False)
    refused(client.get(path), 409, "already confirmed")
    refused(post_form(client, "/subscribe", path, {}), 409, "already confirmed")

    # from the next listing on: dump_b's new papers, not the ones that came before
    before = len(site.received())
    report = run(site, DUMP_C, "c.txt")
    digests = [m for m in mail_to(site, "ada@example.org") if "Your papers" in str(m["Subject"])]
    assert len(digests) == 1 and len(site.received()) > before
    digest = digests[0]
    unsubscribe = str(digest["List-Unsubscribe"])
    token = re.search(rf"<{BASE}/unsubscribe/([0-9]+\.[0-9a-f]+)>", unsubscribe)
    assert token, unsubscribe
    assert footer_link(digest, "Unsubscribe") == f"/unsubscribe/{token.group(1)}"
    manage = footer_link(digest, "Change your interests")
    assert manage.startswith("/manage/")
    shown = client.get(manage)
    assert shown.status_code == 200 and "diffusion\nvideo</textarea>" in shown.text


def test_the_confirmation_email_matches_the_expected_files(regen_expected: bool) -> None:
    view = ConfirmView(
        to="ada@example.org",
        interests=["diffusion video", '"graph neural" -survey', "a <b> & c"],
        confirm_url="https://example.org/confirm/7.1800000000.0123456789abcdef0123456789abcdef",
        expires=datetime(2027, 1, 15, 6, 30, tzinfo=UTC),
        timezone="Europe/Berlin",
    )
    sender = Sender("Paper digest <digest@example.org>", "Paper digest", "x", "https://example.org")
    raw = build_confirmation(view, sender, datetime(2027, 1, 13, 6, 30, tzinfo=UTC), b"k" * 32)
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert message["Date"] == "Wed, 13 Jan 2027 06:30:00 +0000"
    assert str(message["Message-ID"]).endswith("@example.org>")
    text, html = parts(message)
    check_expected("confirm.txt", text, regen_expected)
    check_expected("confirm.html", html, regen_expected)
    assert "The link works until 2027-01-15 07:30 (Europe/Berlin).\n" in text
    assert "<li>a &lt;b&gt; &amp; c</li>" in html


# --- no enumeration; consent ---------------------------------------------------------


def _without(text: str, *words: str) -> str:
    for word in words:
        text = text.replace(word, "ADDRESS")
    return re.sub(r'name="csrf" value="[0-9a-f]+"', "", text)


def test_known_and_unknown_addresses_get_the_same_answer(site: Site) -> None:
    site.subscribe({"ada@example.org": ["graphs"]})
    client = site.web()

    known = subscribe(client, "ada@example.org", "diffusion")
    unknown = subscribe(client, "bob@example.org", "diffusion")

    assert known.status_code == unknown.status_code == 200
    assert _without(known.text, "ada@example.org") == _without(unknown.text, "bob@example.org")
    assert sorted(rcpt for rcpt, _ in site.received()) == ["ada@example.org", "bob@example.org"]
    # the known subscriber's settings change only when they confirm
    assert subscribers(site)["ada@example.org"] == ("active", ["graphs"], True)
    path = confirm_path(site, "ada@example.org")
    assert post_form(client, path, path, {}).status_code == 200
    assert subscribers(site)["ada@example.org"] == ("active", ["diffusion"], False)


def test_an_address_that_left_comes_back_only_through_the_confirmation(site: Site) -> None:
    site.subscribe({"ada@example.org": ["graphs"]})
    assert site.cli("unsubscribe", "ada@example.org").code == 0
    client = site.web()

    assert subscribe(client, "ada@example.org", "diffusion").status_code == 200
    assert subscribers(site)["ada@example.org"] == ("unsubscribed", ["graphs"], True)
    path = confirm_path(site, "ada@example.org")
    assert client.get(path).status_code == 200
    assert subscribers(site)["ada@example.org"][0] == "unsubscribed"  # a GET changes nothing
    assert post_form(client, path, path, {}).status_code == 200
    assert subscribers(site)["ada@example.org"] == ("active", ["diffusion"], False)


def test_a_newer_request_replaces_the_older_link(site: Site) -> None:
    client = site.web()
    assert subscribe(client, "ada@example.org", "graphs").status_code == 200
    older = confirm_path(site, "ada@example.org")
    assert subscribe(client, "ada@example.org", "diffusion").status_code == 200
    newer = confirm_path(site, "ada@example.org")
    assert older != newer
    refused(client.get(older), 404, "Only the newest confirmation email works")
    assert post_form(client, newer, newer, {}).status_code == 200
    assert subscribers(site)["ada@example.org"] == ("active", ["diffusion"], False)
    refused(client.get(older), 404, "not valid")
    refused(client.get(newer), 409, "already confirmed")


def test_an_expired_confirmation_link_says_how_to_start_again(site: Site) -> None:
    now = datetime.now(UTC)
    assert subscribe(app_at(now), "ada@example.org", "graphs").status_code == 200
    path = confirm_path(site, "ada@example.org")
    (message,) = mail_to(site, "ada@example.org")
    shown = (now + timedelta(hours=48)).strftime("%Y-%m-%d %H:%M")
    assert f"The link works until {shown} (UTC)" in parts(message)[0]

    late = app_at(now + timedelta(hours=48, seconds=1))
    refused(late.get(path), 410, "has expired")
    assert 'href="/"' in late.get(path).text
    refused(post_form(late, "/subscribe", path, {}), 410, "Subscribe again")
    assert subscribers(site)["ada@example.org"] == ("pending", [], True)
    assert app_at(now + timedelta(hours=47)).get(path).status_code == 200


# --- hostile input on /subscribe -----------------------------------------------------

NESTED = "(" * 5000 + "graphs" + ")" * 5000


@pytest.mark.parametrize(
    ("email", "interests", "field_words"),
    [
        ("ada@example.org\r\nBcc: spy@evil.example", "graphs", "one plain email address"),
        ("ada@example.org\nBcc: spy@evil.example", "graphs", "one plain email address"),
        ("Bcc: spy@evil.example", "graphs", "one plain email address"),
        ("ada@example.org, spy@evil.example", "graphs", "one plain email address"),
        ("not-an-address", "graphs", "not an address we can send to"),
        ("", "graphs", "Enter your email address."),
        ("ada@example.org", "x" * 10_000, "Line 1: longer than 300 characters at position 301."),
        ("ada@example.org", NESTED, "Line 1: longer than 300 characters at position 301."),
        ("ada@example.org", "graphs\n(unbalanced", "Line 2: "),
        ("ada@example.org", "graphs\na | b", "Line 2: &#39;|&#39; is not part of the interest"),
        ("ada@example.org", "   \n  ", "Write at least one interest."),
        ("ada@example.org", "x\n" * 51, "At most 50 interests"),
    ],
)
def test_a_bad_subscribe_form_is_refused_and_nothing_is_saved(
    site: Site, email: str, interests: str, field_words: str
) -> None:
    client = site.web()
    answer = subscribe(client, email, interests)
    refused(answer, 422, field_words)
    assert "nothing was saved" in answer.text
    assert 'aria-invalid="true"' in answer.text
    assert subscribers(site) == {}
    assert site.received() == []


def test_an_apostrophe_in_an_address_is_no_header_trick(site: Site) -> None:
    assert subscribe(site.web(), "O'Brien@example.org", "graphs").status_code == 200
    assert [rcpt for rcpt, _ in site.received()] == ["o'brien@example.org"]
    assert subscribers(site)["o'brien@example.org"][0] == "pending"


def test_a_malformed_interest_is_shown_beside_its_field_with_the_position(site: Site) -> None:
    answer = subscribe(site.web(), "ada@example.org", "graphs\ndiffusion (video")
    refused(answer, 422, "Line 2: ")
    error = re.search(r'<ul class="error" id="interests-error">\s*<li>([^<]+)</li>', answer.text)
    assert error and re.fullmatch(r"Line 2: .+ at position \d+\.", error.group(1))
    # the form comes back with what was typed, escaped
    assert "graphs\ndiffusion (video</textarea>" in answer.text


def test_a_form_without_its_csrf_field_is_refused(site: Site) -> None:
    client = site.web()
    data = {"email": "ada@example.org", "interests": "graphs"}
    refused(post_form(client, "/subscribe", "/subscribe", data, csrf=False), 403, "Reload")
    forged = {**data, "csrf": "0" * 32}
    refused(post_form(client, "/subscribe", "/subscribe", forged, csrf=False), 403, "Reload")
    fresh = site.web()  # no cookie at all
    refused(fresh.post("/subscribe", data={**data, "csrf": "0" * 32}), 403, "Reload")
    assert subscribers(site) == {} and site.received() == []


def test_a_thousand_subscribe_posts_from_one_client_are_held_at_the_limit(site: Site) -> None:
    client = site.web()
    token = csrf_of(client.get("/subscribe").text)
    statuses = [
        client.post(
            "/subscribe",
            data={"csrf": token, "email": f"reader{n}@example.org", "interests": "graphs"},
        ).status_code
        for n in range(1000)
    ]
    assert statuses[:20] == [200] * 20
    assert set(statuses[20:]) == {429}
    last = client.post(
        "/subscribe", data={"csrf": token, "email": "late@example.org", "interests": "graphs"}
    )
    refused(last, 429, "Too many subscription requests")
    assert last.headers["retry-after"] == "3600"
    assert len(subscribers(site)) == 20 and "late@example.org" not in subscribers(site)
    assert len(site.received()) == 20


def test_resends_are_limited_per_address_known_or_not(site: Site) -> None:
    site.subscribe({"ada@example.org": ["graphs"]})
    start = datetime(2026, 3, 11, 9, 0, tzinfo=UTC)  # an hour's limit counts clock hours
    moment = [start]
    client = TestClient(
        create_app(load_settings(None), now=lambda: moment[0]),
        base_url=BASE,
        raise_server_exceptions=False,
    )

    def resend(to: TestClient, address: str) -> int:
        moment[0] += timedelta(minutes=2)  # a resend, not the same request again at once
        return subscribe(to, address, "graphs").status_code

    for address in ("ada@example.org", "new@example.org"):
        answers = [resend(client, address) for _ in range(4)]
        assert answers == [200, 200, 200, 429]
        assert len(mail_to(site, address)) == 3
    # the counts are kept in the store: another worker process (a fresh app) is held by them
    other = TestClient(
        create_app(load_settings(None), now=lambda: moment[0]),
        base_url=BASE,
        raise_server_exceptions=False,
    )
    assert resend(other, "ada@example.org") == 429
    moment[0] = start + timedelta(hours=1)  # the next hour: the day's five emails are the cap
    assert [resend(other, "ada@example.org") for _ in range(3)] == [200, 200, 429]
    assert len(mail_to(site, "ada@example.org")) == 5
    assert subscribe(app_at(start + timedelta(hours=25)), "ada@example.org", "x").status_code == 200


def test_an_smtp_refusal_gives_a_friendly_page(site: Site) -> None:
    site.server.handler.rcpt_replies["ada@example.org"] = "451 4.3.0 try again later"
    refused(subscribe(site.web(), "ada@example.org", "graphs"), 503, "could not be sent")


# --- bad tokens ----------------------------------------------------------------------


def _bad_tokens(good: str, other: str) -> list[str]:
    ident, _, rest = good.partition(".")
    return [
        good[:-1] + ("0" if good[-1] != "0" else "1"),  # forged
        good[:-6],  # truncated
        ident,  # no signature
        f"{ident}.{other.partition('.')[2]}",  # another subscriber's or purpose's signature
        "x" * 40,
        "99999." + rest,  # no such subscriber
        "9" * 30 + "." + rest,
    ]


def test_forged_truncated_and_wrong_purpose_tokens_never_pass(site: Site) -> None:
    client = site.web()
    manage = subscribed(site, client, "ada@example.org", "graphs")
    subscribed(site, client, "bob@example.org", "graphs")
    rows = {
        str(r[0]): (int(str(r[1])), str(r[2]))
        for r in store_rows(site.data, "SELECT email, id, token_salt FROM subscriber")
    }
    key = b"a-fixed-key-for-tests-only-0123456789"
    ada, bob = rows["ada@example.org"], rows["bob@example.org"]
    manage_token = manage.removeprefix("/manage/")
    assert manage_token == link_token(key, ada[0], ada[1], purpose="manage")
    unsubscribe_token = link_token(key, ada[0], ada[1])
    confirm_token = confirm_path(site, "ada@example.org").removeprefix("/confirm/")
    cases = {
        "/manage/": (manage_token, link_token(key, bob[0], bob[1], purpose="manage")),
        "/unsubscribe/": (unsubscribe_token, link_token(key, bob[0], bob[1])),
        "/confirm/": (confirm_token, manage_token),
    }
    before = subscribers(site)
    for prefix, (good, other) in cases.items():
        for bad in [
            *_bad_tokens(good, other),
            unsubscribe_token if prefix != "/unsubscribe/" else manage_token,
        ]:
            refused(client.get(prefix + bad), 404, "not valid")
            posted = post_form(
                client, "/subscribe", prefix + bad, {"List-Unsubscribe": "One-Click"}
            )
            refused(posted, 404, "not valid")
    # an expiring token for confirmation, signed for this subscriber but for a request it never made
    stray = expiring_token(key, ada[0], ada[1], "confirm:0000", 2**40)
    refused(client.get("/confirm/" + stray), 404, "not valid")
    assert subscribers(site) == before


# --- manage --------------------------------------------------------------------------


def settings_of(site: Site, email: str) -> tuple[object, ...]:
    (row,) = store_rows(
        site.data,
        "SELECT status, interests, max_items, min_score, frequency, timezone FROM subscriber"
        f" WHERE email = '{email}'",
    )
    return row


def test_manage_saves_valid_settings(site: Site) -> None:
    client = site.web()
    manage = subscribed(site, client, "ada@example.org", "graphs")
    page = client.get(manage)
    assert page.status_code == 200
    for label in ("interests", "max_items", "min_score", "frequency", "timezone"):
        assert f'<label for="{label}">' in page.text and f'id="{label}"' in page.text

    saved = post_form(
        client,
        manage,
        manage,
        {
            "interests": 'diffusion video\n\n"graph neural"\n',
            "max_items": "7",
            "min_score": "1.5",
            "frequency": "weekly",
            "timezone": "Europe/Berlin",
        },
    )
    assert saved.status_code == 200 and "Saved." in saved.text
    assert settings_of(site, "ada@example.org") == (
        "active",
        '["diffusion video", "\\"graph neural\\""]',
        7,
        1.5,
        "weekly",
        "Europe/Berlin",
    )
    assert "(Europe/Berlin)" in saved.text  # dates are shown in the reader's zone
    assert "your digest comes at your hour in it" in saved.text  # the reader's own hour


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("interests", "graphs\n(unbalanced", "Line 2: "),
        ("interests", "x" * 10_000, "Line 1: longer than 300 characters at position 301."),
        ("interests", NESTED, "Line 1: longer than 300 characters at position 301."),
        ("interests", "", "Write at least one interest."),
        ("max_items", "0", "The number of papers must be from 1 to 1000."),
        ("max_items", "many", "The number of papers must be a whole number."),
        ("min_score", "-1", "The score must be from 0 to 10000."),
        ("frequency", "hourly", "This must be daily or weekly."),
        ("timezone", "Mars/Olympus", "not a time zone we know"),
        ("timezone", "../../etc/passwd", "not a time zone we know"),
    ],
)
def test_manage_refuses_a_bad_field_beside_it_and_saves_nothing(
    site: Site, field: str, value: str, words: str
) -> None:
    client = site.web()
    manage = subscribed(site, client, "ada@example.org", "graphs")
    before = settings_of(site, "ada@example.org")
    data = {
        "interests": "diffusion",
        "max_items": "5",
        "min_score": "0",
        "frequency": "daily",
        "timezone": "",
        field: value,
    }
    answer = post_form(client, manage, manage, data)
    refused(answer, 422, words)
    assert "nothing was saved" in answer.text
    assert f'id="{field}-error"' in answer.text
    assert settings_of(site, "ada@example.org") == before


def test_the_reader_sets_the_hour_of_their_digest_and_finds_it_in_their_export(
    site: Site,
) -> None:
    client = site.web()
    manage = subscribed(site, client, "ada@example.org", "graphs")
    page = client.get(manage)
    assert '<label for="digest_hour">' in page.text and "The site's time" in page.text

    def hour() -> object:
        (row,) = store_rows(
            site.data, "SELECT digest_hour FROM subscriber WHERE email = 'ada@example.org'"
        )
        return row[0]

    assert hour() is None  # by default: the site's schedule
    form = {"interests": "graphs", "max_items": "5", "min_score": "0", "frequency": "daily"}
    refused(
        post_form(client, manage, manage, {**form, "digest_hour": "24"}),
        422,
        "The hour must be from 0 to 23.",
    )
    assert hour() is None
    saved = post_form(client, manage, manage, {**form, "digest_hour": "6"})
    assert saved.status_code == 200 and "Saved." in saved.text
    assert hour() == 6
    assert '<option value="6" selected>06:00</option>' in saved.text  # shown as chosen
    data = post_form(client, manage, manage + "/export", {}).json()
    assert data["digest_hour"] == 6
    post_form(client, manage, manage, {**form, "digest_hour": ""})
    assert hour() is None  # back to the site's schedule


def test_every_manage_form_needs_its_csrf_field(site: Site) -> None:
    client = site.web()
    manage = subscribed(site, client, "ada@example.org", "graphs")
    before = settings_of(site, "ada@example.org")
    for action in ("", "/pause", "/export", "/delete"):
        answer = client.post(manage + action, data={"interests": "x"})
        refused(answer, 403, "Reload the page")
    assert settings_of(site, "ada@example.org") == before


def test_pause_and_resume_decide_what_the_next_run_sends(site: Site, dump_a: Path) -> None:
    client = site.web()
    manage = subscribed(site, client, "ada@example.org", "diffusion")
    paused = post_form(client, manage, manage + "/pause", {})
    assert paused.status_code == 200 and "Paused" in paused.text
    assert "Resume digests" in paused.text
    assert settings_of(site, "ada@example.org")[0] == "paused"
    assert post_form(client, manage, manage + "/pause", {}).status_code == 200  # idempotent

    run(site, dump_a, "a.txt")
    assert len(mail_to(site, "ada@example.org")) == 1  # the confirmation only

    resumed = post_form(client, manage, manage + "/resume", {})
    assert resumed.status_code == 200 and "Resumed" in resumed.text
    assert settings_of(site, "ada@example.org")[0] == "active"
    run(site, DUMP_C, "c.txt")
    subjects = [str(m["Subject"]) for m in mail_to(site, "ada@example.org")]
    assert len(subjects) == 2 and subjects[1].startswith("Your papers for")


def test_export_gives_everything_stored_as_json(site: Site, dump_a: Path) -> None:
    client = site.web()
    manage = subscribed(site, client, "ada@example.org", "diffusion")
    run(site, dump_a, "a.txt")  # nothing for them: they start from the next listing
    run(site, DUMP_C, "c.txt")

    answer = post_form(client, manage, manage + "/export", {})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    assert "attachment" in answer.headers["content-disposition"]
    data = answer.json()
    assert data["email"] == "ada@example.org" and data["status"] == "active"
    assert data["interests"] == ["diffusion"]
    (digest,) = data["digests"]
    assert digest["status"] == "sent" and digest["papers"]
    assert all("diffusion" in p["title"].lower() or p["paper"] for p in digest["papers"])
    assert "token_salt" not in json.dumps(data)
    (row,) = store_rows(site.data, "SELECT token_salt FROM subscriber")
    assert str(row[0]) not in answer.text


def test_delete_erases_the_subscriber_and_their_outbox(site: Site, dump_a: Path) -> None:
    site.subscribe({"old@example.org": ["diffusion"]})
    client = site.web()
    manage = subscribed(site, client, "ada@example.org", "diffusion")
    run(site, DUMP_C, "c.txt")
    assert len(site.digests()) == 2

    ask = client.get(manage + "/delete")
    assert ask.status_code == 200 and 'class="danger"' in ask.text
    assert "ada@example.org" in subscribers(site)  # asking changes nothing
    gone = post_form(client, manage + "/delete", manage + "/delete", {})
    assert gone.status_code == 200 and "are gone" in gone.text

    assert list(subscribers(site)) == ["old@example.org"]
    assert [row.email for row in site.digests()] == ["old@example.org"]
    assert store_rows(
        site.data,
        "SELECT count(*) FROM digestitem WHERE subscriber_id NOT IN (SELECT id FROM subscriber)",
    ) == [(0,)]
    refused(client.get(manage), 404, "not valid")


# --- unsubscribe ---------------------------------------------------------------------


def test_one_click_unsubscribe_is_immediate_and_idempotent(site: Site, dump_a: Path) -> None:
    site.subscribe({"ada@example.org": ["diffusion"], "bob@example.org": ["diffusion"]})
    run(site, dump_a, "a.txt")
    digest = next(m for m in mail_to(site, "ada@example.org"))
    path = footer_link(digest, "Unsubscribe")
    assert f"<{BASE}{path}>" in str(digest["List-Unsubscribe"])
    client = site.web()

    page = client.get(path)  # a link scanner: nothing happens
    assert page.status_code == 200 and '<button type="submit">Unsubscribe</button>' in page.text
    assert subscribers(site)["ada@example.org"][0] == "active"
    refused(client.post(path, data={}), 400, "Unsubscribe button")
    assert subscribers(site)["ada@example.org"][0] == "active"

    # a mail client (RFC 8058): no cookie, no CSRF field; the token is the authority
    mail_client = TestClient(client.app, base_url=BASE)
    for _ in range(2):
        answer = mail_client.post(
            path,
            content=b"List-Unsubscribe=One-Click",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert answer.status_code == 200 and "You are unsubscribed" in answer.text
        assert subscribers(site)["ada@example.org"][0] == "unsubscribed"
    assert "You are unsubscribed" in client.get(path).text

    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    run(site, DUMP_C, "c.txt", "--period", tomorrow)
    assert len(mail_to(site, "ada@example.org")) == 1
    assert len(mail_to(site, "bob@example.org")) == 2


def test_the_pages_button_unsubscribes_and_withdraws_a_waiting_digest(
    site: Site, dump_a: Path
) -> None:
    site.server.handler.rcpt_replies["ada@example.org"] = "451 4.3.0 try again later"
    site.subscribe({"ada@example.org": ["diffusion"]})
    run(site, dump_a, "a.txt")
    assert [row.status for row in site.digests()] == ["pending"]
    (row,) = store_rows(site.data, "SELECT id, token_salt FROM subscriber")
    token = link_token(b"a-fixed-key-for-tests-only-0123456789", int(str(row[0])), str(row[1]))
    client = site.web()
    page = client.get(f"/unsubscribe/{token}")
    assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in page.text
    done = client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200
    site.server.handler.rcpt_replies.clear()
    report = site.cli("run", "--json").json()
    assert report["digests"]["withdrawn"] == 1
    assert [row.status for row in site.digests()] == ["skipped"]
    assert mail_to(site, "ada@example.org") == []


# --- the store's queries, on SQLite and PostgreSQL -----------------------------------

T0 = datetime(2026, 3, 11, 7, 0, tzinfo=UTC)
WANTED = SubscriptionPatch(
    interests=["graphs"], max_items=20, min_score=0.0, frequency="daily", timezone=None
)


def test_requests_wait_for_confirmation_and_planning_skips_pending_and_paused(
    engine: Engine,
) -> None:
    first = request_subscription(engine, ["ada@example.org"], WANTED, now=T0, sends_allowed=2)
    assert first is not None
    ident = first.subscriber_id
    with transaction(engine) as conn:
        assert [row.id for row in owed_subscribers(conn, T0.date())] == []  # pending
    second = request_subscription(
        engine, ["ada@example.org"], WANTED.but(interests=["video"]), now=T0, sends_allowed=2
    )
    assert second is not None and second.nonce != first.nonce
    assert (
        request_subscription(engine, ["ada@example.org"], WANTED, now=T0, sends_allowed=2) is None
    )

    assert not confirm_request(engine, ident, first.nonce)  # replaced
    assert confirm_request(engine, ident, second.nonce)
    assert not confirm_request(engine, ident, second.nonce)  # once only
    row = subscriber_by_id(engine, ident)
    assert row is not None and (row.status, row.interests) == ("active", '["video"]')
    with transaction(engine) as conn:
        assert [row.id for row in owed_subscribers(conn, T0.date())] == [ident]

    assert set_paused(engine, ident, True) == "paused"
    with transaction(engine) as conn:
        assert owed_subscribers(conn, T0.date()) == []
    assert count_by_status(engine)["paused"] == 1
    assert set_paused(engine, ident, False) == "active"
    assert unsubscribe(engine, ident) == "unsubscribed"
    assert set_paused(engine, ident, False) == "unsubscribed"  # no way back but confirmation
    assert count_by_status(engine) == {
        "pending": 0,
        "active": 0,
        "paused": 0,
        "unsubscribed": 1,
        "bounced": 0,
    }


def test_export_and_erase_cover_the_subscriber_and_their_outbox(engine: Engine) -> None:
    kept = request_subscription(engine, ["bob@example.org"], WANTED, now=T0, sends_allowed=2)
    asked = request_subscription(engine, ["ada@example.org"], WANTED, now=T0, sends_allowed=2)
    assert kept is not None and asked is not None
    for who in (kept, asked):
        assert confirm_request(engine, who.subscriber_id, who.nonce)
    with transaction(engine) as conn:
        upsert_entries(conn, [Entry(title="Graphs for all", abstract="graphs")], T0)
    with transaction(engine) as conn:
        (paper_id,) = conn.execute(sa.text("SELECT id FROM paper")).scalars()
        record(
            conn,
            [
                Planned(who.subscriber_id, "pending", f"<m{n}@x>", 1, [(paper_id, 2.5, "[]")])
                for n, who in enumerate((kept, asked))
            ],
            period=T0.date(),
            now=T0,
            run_id=None,
        )
        for who in (kept, asked):
            feedback.record(conn, who.subscriber_id, paper_id, "up", T0)
    with transaction(engine) as conn:
        data = export_subscriber(conn, asked.subscriber_id)
    assert data["email"] == "ada@example.org" and data["interests"] == ["graphs"]
    assert data["digests"][0]["papers"] == [
        {
            "rank": 1,
            "score": 2.5,
            "paper": data["digests"][0]["papers"][0]["paper"],
            "title": "Graphs for all",
        }
    ]
    assert "token_salt" not in data
    ((vote,),) = [[v["vote"] for v in data["votes"]]]
    assert vote == "up" and data["votes"][0]["title"] == "Graphs for all"

    with transaction(engine) as conn:
        assert erase_subscriber(conn, asked.subscriber_id)
        assert not erase_subscriber(conn, asked.subscriber_id)
    with transaction(engine) as conn:
        assert export_subscriber(conn, asked.subscriber_id) == {}
        left = conn.execute(sa.text("SELECT subscriber_id FROM digestitem")).scalars().all()
        digests = conn.execute(sa.text("SELECT subscriber_id FROM digest")).scalars().all()
        voters = conn.execute(sa.text("SELECT subscriber_id FROM feedback")).scalars().all()
    assert left == digests == voters == [kept.subscriber_id]
    assert subscriber_by_id(engine, asked.subscriber_id) is None


def test_migration_6_keeps_existing_subscribers_as_they_were(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = _store_at(url, 5)
    with old.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO subscriber (email, token_salt, created_at, interests)"
                " VALUES ('ada@example.org', 'salt', :t, :i)"
            ),
            {"t": T0, "i": json.dumps(["graphs"])},
        )
    old.dispose()
    engine = open_store(url)
    (row,) = list_subscribers(engine)
    assert (row.status, row.interests, row.timezone, row.request) == (
        "active",
        '["graphs"]',
        None,
        None,
    )
    assert (row.confirm_sends, row.confirm_window, row.confirmed_nonce) == (0, None, None)
    engine.dispose()


def test_the_operator_can_unsubscribe_by_the_link_itself(site: Site) -> None:
    site.subscribe({"ada@example.org": ["graphs"]})
    (row,) = store_rows(site.data, "SELECT id, token_salt FROM subscriber")
    token = link_token(b"a-fixed-key-for-tests-only-0123456789", int(str(row[0])), str(row[1]))
    refused_link = site.cli("unsubscribe", f"{BASE}/unsubscribe/{token[:-1]}")
    assert refused_link.code == 2 and "Traceback" not in refused_link.err
    done = site.cli("unsubscribe", f"{BASE}/unsubscribe/{token}")
    assert done.code == 0, done.err
    assert subscribers(site)["ada@example.org"][0] == "unsubscribed"


def test_addresses_never_confirmed_are_forgotten_once_their_link_ran_out(site: Site) -> None:
    sheet = site.root / "pending.csv"
    sheet.write_text("email,interests,status\nops@example.org,graphs,pending\n")
    assert site.cli("subscribers", "--import", str(sheet)).code == 0
    site.subscribe({"ada@example.org": ["graphs"]})
    now = datetime.now(UTC)
    first = app_at(now)
    for address in ("ada@example.org", "bob@example.org"):
        assert subscribe(first, address, "diffusion").status_code == 200
    assert set(subscribers(site)) == {"ops@example.org", "ada@example.org", "bob@example.org"}

    soon = app_at(now + timedelta(hours=47))
    assert subscribe(soon, "cy@example.org", "diffusion").status_code == 200
    assert "bob@example.org" in subscribers(site)  # its link still works

    later = app_at(now + timedelta(hours=49))
    assert subscribe(later, "dee@example.org", "diffusion").status_code == 200
    # bob never confirmed and his link ran out: gone; a subscriber's own request is kept,
    # as is an operator's pending row, and cy's request is still within its time
    assert set(subscribers(site)) == {
        "ops@example.org",
        "ada@example.org",
        "cy@example.org",
        "dee@example.org",
    }
