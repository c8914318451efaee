"""The web front in a real browser: headless Chromium on ``digest web`` served on loopback.

Each page is tried at 375 and 1280 px, light and dark: it must not scroll sideways, log
nothing to the console (a CSP violation included), label every control, and keep its text
at 4.5:1 contrast or better. Screenshots land in ``tests/screenshots/`` (see tests/browser.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from digest.web.security import CSRF_FIELD
from tests.browser import WIDTHS, Browser, LiveServer, chromium, live_server
from tests.conftest import EXAMPLE_A, EXAMPLE_B, EXAMPLE_DUMPS, REPO, Site, store_rows

EXAMPLE_MAR13 = EXAMPLE_DUMPS / "daily-mar13-layout-b.txt"
HF_JSON = REPO / "tests" / "fixtures" / "hf_daily_papers.json"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as made:
        yield made


@pytest.fixture
def live(site: Site, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveServer]:
    """The site with two listings in its store, served by ``digest web``."""
    result = site.cli("ingest", str(EXAMPLE_A), str(EXAMPLE_B))
    assert result.code == 0, result.err
    with live_server(site, monkeypatch) as server:
        yield server


def test_front_page_in_the_browser(browser: Browser, live: LiveServer) -> None:
    assert browser.check(f"{live.url}/", "front") == []
    # The stylesheet got through the CSP (body margin 0 is ours, 8px the browser's own).
    assert browser.run("return getComputedStyle(document.body).margin") == "0px"
    form = browser.run(
        "const f = document.querySelector('form[action=\"/subscribe\"]');"
        "return f && [...f.elements].map((e) => [e.name, e.type]);"
    )
    assert ["email", "email"] in form and ["interests", "textarea"] in form
    assert [CSRF_FIELD, "hidden"] in form


def test_error_page_in_the_browser(browser: Browser, live: LiveServer) -> None:
    assert browser.check(f"{live.url}/no/such/page", "not-found", status=404) == []
    assert browser.run("return document.querySelector('h1').textContent") == "Nothing here"
    assert "There is no page at this address." in browser.run("return document.body.innerText")


def test_every_page_the_front_page_links_to(browser: Browser, live: LiveServer) -> None:
    browser.open(f"{live.url}/")
    hrefs = browser.run("return [...document.querySelectorAll('a[href]')].map((a) => a.href)")
    pages, kinds = [], set()
    for href in hrefs:
        url = href.split("#", 1)[0]
        if not url.startswith(f"{live.url}/") or url == f"{live.url}/":
            continue
        kind = url[len(live.url) :].split("/")[1].split("?")[0]  # one page of each kind
        if kind not in kinds:
            kinds.add(kind)
            pages.append(url)
    assert "search" in kinds and "papers" in kinds, hrefs
    with httpx.Client(trust_env=False, timeout=10) as client:
        for url in pages:
            answer = client.get(url)
            assert answer.status_code == 200, url
            if not answer.headers["content-type"].startswith("text/html"):
                continue  # a feed: read back by the feed tests
            name = url[len(live.url) + 1 :].split("/")[0].split("?")[0]
            assert browser.check(url, f"linked-{name}") == [], url


def test_paper_page_with_a_readers_vote_buttons(
    browser: Browser, live: LiveServer, site: Site
) -> None:
    from selenium.webdriver.common.by import By

    reader = "reader@example.org"
    site.subscribe({reader: ["diffusion"]})
    site.drop_in_inbox(EXAMPLE_MAR13, "mar13.txt")
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    ran = site.cli("run", "--period", yesterday.isoformat(), "--json")
    assert ran.code == 0, ran.err
    [digest] = live.emails(reader)
    pages = sorted(
        set(re.findall(rf"{re.escape(live.url)}/papers/[^\s\"'<>]+\?r=[0-9a-f.]+", _text(digest)))
    )
    assert pages
    assert browser.check(pages[0], "paper-votes") == []
    buttons = browser.driver.find_elements(By.CSS_SELECTOR, 'form[action^="/feedback/"] button')
    assert [b.text for b in buttons] == ["More like this", "Not for me"]
    browser.press('form[action$="vote=up"] [type=submit]')
    assert "Thank you" in browser.run("return document.body.innerText")
    assert browser.problems() == []
    [(vote,)] = store_rows(site.data, "SELECT vote FROM feedback")
    assert vote == "up"


def test_the_checks_catch_what_is_wrong(browser: Browser, tmp_path: Path) -> None:
    # Each fault once: so a page that passes passed for a reason.
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><head>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="Content-Security-Policy" content="script-src \'none\'">'
        "<style>.wide { width: 900px; } .faint { color: #aaaaaa; background: #ffffff; }</style>"
        "</head><body>"
        '<script>document.title = "ran";</script>'
        '<div class="wide">wide</div>'
        '<p class="faint">faint words</p>'
        '<form><input name="email"><label for="x">Named</label><input id="x" name="x">'
        "<button></button></form>"
        "</body></html>"
    )
    browser.resize(375)
    browser.open(page.as_uri())
    problems = browser.problems()
    assert any("console:" in p and "Content Security Policy" in p for p in problems), problems
    assert any(p.startswith("scrolls sideways: 9") for p in problems), problems
    unlabelled = [p for p in problems if p.startswith("no label:")]
    assert len(unlabelled) == 2 and 'name="email"' in unlabelled[0], problems
    assert "<button></button>" in unlabelled[1]
    [faint] = [p for p in problems if p.startswith("contrast")]
    assert "'faint words'" in faint and "2.32:1" in faint, faint
    browser.resize(1280)  # wide enough now; the rest stays wrong
    assert browser.problems() == [*unlabelled, faint]
    assert browser.screenshot("bad").stat().st_size > 0


# The contract of the subscription pages, written down as the steps a person takes. It
# assumes: the form on / posts ``email`` and ``interests`` (one per line) with its CSRF field;
# the confirmation email links ``/confirm/{token}`` (the page may ask to press a button);
# digests link ``/manage/{token}`` in their footer and carry ``List-Unsubscribe``; the manage
# page saves ``interests`` from its form; the "try it" preview is the GET form on the front
# page, and shows its papers as ``.paper`` items with a ``.title`` in the form's section.
def test_subscribe_confirm_manage_unsubscribe(
    browser: Browser, live: LiveServer, site: Site
) -> None:
    from selenium.webdriver.common.by import By

    reader, control = "reader@example.org", "control@example.org"
    today = datetime.now(UTC).date()
    # Someone subscribed by the operator, so that "sends nothing" means something.
    site.subscribe({control: ["speech"]})

    # 1. Subscribe on the front page, on a phone.
    browser.resize(375)
    browser.open(f"{live.url}/")
    form = browser.driver.find_element(By.CSS_SELECTOR, 'form[action="/subscribe"]')
    form.find_element(By.NAME, "email").send_keys(reader)
    form.find_element(By.NAME, "interests").send_keys("diffusion")
    browser.press('form[action="/subscribe"] [type=submit]')
    assert browser.problems() == []
    browser.screenshot("flow-1-subscribed")
    assert _status(site, reader) == "pending"

    # 2. The confirmation email is in the outbox; nothing else went to the reader.
    [confirmation] = live.emails(reader)
    confirm_url = _link(confirmation, f"{live.url}/confirm/")

    # 3. Open its link (and press the button, if the page asks for one).
    browser.open(confirm_url)
    buttons = browser.driver.find_elements(
        By.CSS_SELECTOR, 'form[action*="/confirm/"] [type=submit]'
    )
    if buttons:
        browser.press('form[action*="/confirm/"] [type=submit]')
    assert browser.problems() == []
    browser.screenshot("flow-2-confirmed")
    assert _status(site, reader) == "active"

    # A new listing: the first digest arrives, with its manage link and one-click header.
    site.drop_in_inbox(EXAMPLE_MAR13, "mar13.txt")
    assert site.cli("run", "--period", (today - timedelta(days=1)).isoformat()).code == 0
    digest = live.emails(reader)[-1]
    assert "Latent Diffusion for Music Generation" in _text(digest)
    manage_url = _link(digest, f"{live.url}/manage/")
    assert digest["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    [unsubscribe_url] = re.findall(r"<(https?://[^>]+)>", str(digest["List-Unsubscribe"]))
    assert unsubscribe_url.startswith(f"{live.url}/unsubscribe/")

    # 4. Manage: the interests become "speech".
    browser.open(manage_url)
    field = browser.driver.find_element(By.NAME, "interests")
    field.clear()
    field.send_keys("speech")
    browser.press("form:has(textarea[name=interests]) [type=submit]")
    assert browser.problems() == []
    browser.screenshot("flow-3-managed")

    # 5. The "try it" preview (the GET form on the front page) shows the change with the
    # interests as saved: speech papers, no longer the diffusion ones.
    browser.open(manage_url)
    saved = browser.driver.find_element(By.NAME, "interests").get_attribute("value")
    assert saved.strip() == "speech"
    browser.open(f"{live.url}/")
    field = browser.driver.find_element(By.CSS_SELECTOR, 'form[method="get"] textarea')
    field.send_keys(saved)
    browser.press('form[method="get"]:has(textarea) [type=submit]')
    preview = browser.driver.find_element(
        By.CSS_SELECTOR, 'form[method="get"] textarea'
    ).find_element(By.XPATH, "ancestor::section")
    titles = [e.text for e in preview.find_elements(By.CSS_SELECTOR, ".paper .title")]
    assert "Distilling Whisper-Style Speech Recognizers for Microcontrollers" in titles
    assert not any(t.startswith("Latent Diffusion for Music Generation") for t in titles)
    assert browser.problems() == []
    browser.screenshot("flow-4-preview")

    # 6. One-click unsubscribe, as a mail client does it (RFC 8058).
    answer = httpx.post(
        unsubscribe_url, data={"List-Unsubscribe": "One-Click"}, trust_env=False, timeout=10
    )
    assert answer.status_code == 200
    assert _status(site, reader) == "unsubscribed"

    # 7. The next run sends that address nothing, and the others theirs.
    sent_before, control_before = len(live.emails(reader)), len(live.emails(control))
    site.drop_in_inbox(HF_JSON, "hf.json")
    assert site.cli("run", "--period", today.isoformat()).code == 0
    assert len(live.emails(reader)) == sent_before
    assert len(live.emails(control)) == control_before + 1


def _status(site: Site, address: str) -> str:
    [(status,)] = store_rows(site.data, f"SELECT status FROM subscriber WHERE email = '{address}'")
    return str(status)


def _text(message: EmailMessage) -> str:
    return "\n".join(
        part.get_content() for part in message.walk() if part.get_content_maintype() == "text"
    )


def _link(message: EmailMessage, prefix: str) -> str:
    """The one distinct link in ``message`` that starts with ``prefix``."""
    found = set(re.findall(re.escape(prefix) + r"[^\s\"'<>]+", _text(message)))
    assert len(found) == 1, (prefix, found)
    return found.pop()


FRONT_PAGE_MOST = 3000  # px at 1280 wide: the front page is read, not scrolled through
# Each word (run of non-spaces) of the syntax table's examples that the browser laid out
# over two lines.
_BROKEN_WORDS = """
const out = [];
for (const code of document.querySelectorAll('table.syntax code')) {
  for (const node of code.childNodes) {
    if (node.nodeType !== 3) continue;
    for (const m of node.data.matchAll(/\\S+/g)) {
      const range = document.createRange();
      range.setStart(node, m.index);
      range.setEnd(node, m.index + m[0].length);
      if (range.getClientRects().length > 1) out.push(m[0]);
    }
  }
}
return out;
"""


def test_the_front_page_is_short_and_keeps_its_examples_whole(
    browser: Browser, live: LiveServer
) -> None:
    for width in (1280, 375):
        browser.resize(width)
        browser.open(f"{live.url}/")
        height = browser.run("return document.documentElement.scrollHeight")
        if width == 1280:
            assert height <= FRONT_PAGE_MOST, height
        # no word of an example of the interest language broken (never title:transfo/rmer)
        broken = browser.run(_BROKEN_WORDS)
        assert broken == [], (width, broken)
        new, trending = browser.run(
            "return ['new-heading', 'trending-heading'].map((id) => [...document"
            ".getElementById(id).closest('section').querySelectorAll('.paper .title')]"
            ".map((a) => a.getAttribute('href')))"
        )
        assert new and trending and not set(new) & set(trending)
        assert browser.overflow() == []


def test_try_it_then_subscribe_with_these(browser: Browser, live: LiveServer) -> None:
    from selenium.webdriver.common.by import By

    assert browser.check(f"{live.url}/?try=diffusion%0Aspeech#try", "front-tried") == []
    assert "score" not in browser.run("return document.getElementById('try').innerText")
    browser.resize(375)
    browser.open(f"{live.url}/?try=diffusion%0Aspeech#try")
    browser.press('form[action="/subscribe"].carry [type=submit]')
    field = browser.driver.find_element(By.CSS_SELECTOR, "textarea[name=interests]")
    assert field.get_attribute("value") == "diffusion\nspeech"
    assert browser.problems() == []
    browser.screenshot("subscribe-with-these")


def test_the_feeds_page_and_the_top_bars_link_to_it(browser: Browser, live: LiveServer) -> None:
    browser.open(f"{live.url}/")
    browser.press('header nav a[href="/feeds"]')
    assert browser.run("return document.querySelector('h1').textContent") == "Feeds"
    assert browser.check(f"{live.url}/feeds", "feeds") == []


def test_manage_vote_and_unsubscribed_pages_in_the_browser(
    browser: Browser, live: LiveServer, site: Site
) -> None:
    from selenium.webdriver.common.by import By

    reader = "reader@example.org"
    site.subscribe({reader: ["diffusion"]})
    site.drop_in_inbox(EXAMPLE_MAR13, "mar13.txt")
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    assert site.cli("run", "--period", yesterday.isoformat()).code == 0
    [digest] = live.emails(reader)
    manage_url = _link(digest, f"{live.url}/manage/")
    assert browser.check(manage_url, "manage") == []
    assert "Your feed" in browser.run("return document.body.innerText")

    # a text input with an error looks like the textarea with one
    for width in WIDTHS:
        browser.resize(width)
        browser.open(manage_url)
        field = browser.driver.find_element(By.NAME, "interests")
        field.clear()
        field.send_keys("(")
        items = browser.driver.find_element(By.NAME, "max_items")
        items.clear()
        items.send_keys("0")
        browser.press("form:has(textarea[name=interests]) [type=submit]")
        borders = browser.run(
            "return ['interests', 'max_items'].map((id) => {"
            " const s = getComputedStyle(document.getElementById(id));"
            " return [s.borderTopColor, s.borderTopWidth]; })"
        )
        assert borders[0] == borders[1], borders
        assert browser.problems(status=422) == []
        browser.screenshot("manage-errors")

    # the thank-you page after a vote leads on
    votes = re.findall(re.escape(f"{live.url}/feedback/") + r"[^\s\"'<>]+", _text(digest))
    browser.resize(375)
    browser.open(sorted(v.replace("&amp;", "&") for v in votes if v.endswith("vote=up"))[0])
    browser.press('form[action*="/feedback/"] [type=submit]')
    links = browser.run(
        "return [...document.querySelectorAll('main a')].map((a) => a.getAttribute('href'))"
    )
    assert any(h.startswith("/papers/") for h in links) and any(
        h.startswith("/manage/") for h in links
    ), links
    assert browser.problems() == []
    browser.screenshot("voted")

    # the unsubscribed page leads on
    [unsubscribe_url] = re.findall(r"<(https?://[^>]+)>", str(digest["List-Unsubscribe"]))
    browser.open(unsubscribe_url)
    browser.press('form[action*="/unsubscribe/"] [type=submit]')
    assert "You are unsubscribed" in browser.run("return document.body.innerText")
    links = browser.run(
        "return [...document.querySelectorAll('main a')].map((a) => a.getAttribute('href'))"
    )
    assert "/" in links and any(h.endswith("/delete") for h in links), links
    assert browser.problems() == []
    browser.screenshot("unsubscribed")
