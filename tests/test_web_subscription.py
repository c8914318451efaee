"""Self-service subscription on the web front: double opt-in, confirm, manage, one-click
unsubscribe, and every refusal, through the ASGI app over a real SQLite store, with the
confirmation email read back from a real SMTP server on loopback and the next ``digest run``
sending (or not) accordingly."""

from __future__ import annotations

import json
import re
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path

import httpx
from starlette.testclient import TestClient

from digest.settings import load_settings
from digest.web.app import create_app
from tests.conftest import EXAMPLE_DUMPS, SITE_HOST, Site, store_rows

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


def run(site: Site, dump: Path, name: str) -> dict[str, object]:
    site.drop_in_inbox(dump, name)
    result = site.cli("run", "--json")
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
