"""Pages that lead a reader on: interests tried carry into the subscribe form, matches are
said in words (no raw scores), the manage page links the reader's own feed and explains the
score it asks for, the pages after a vote and an unsubscribe lead somewhere, and the site's
"Feeds" link opens a page that explains the feeds."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

import feedparser

from digest.service.papers import strength
from digest.tokens import feed_name, link_token
from tests.conftest import EXAMPLE_A, EXAMPLE_DUMPS, Site, store_rows
from tests.test_web_pages import examples
from tests.test_web_subscription import csrf_of, footer_link, mail_to, post_form, subscribed

KEY = b"a-fixed-key-for-tests-only-0123456789"
RAW_SCORE = re.compile(r"score \d|\(score|Least score a paper needs")


def test_interests_tried_carry_into_the_subscribe_form(site: Site) -> None:
    examples(site)
    client = site.web()
    tried = "federated\nspeech -survey"
    page = client.get("/", params={"try": tried}).text
    section = page.split('id="try-heading"', 1)[1].split("</section>", 1)[0]
    assert "Subscribe with these" in section
    carry = re.search(r'<form method="get" action="/subscribe"[^>]*>(.*?)</form>', section, re.S)
    assert carry, section
    assert f'name="interests" value="{html.escape(tried)}"' in carry.group(1)
    # the form above on the same page is filled too
    subscribe_form = page.split('action="/subscribe" class="subscribe"', 1)[1].split("</form>")[0]
    assert f">{html.escape(tried, quote=False)}</textarea>" in subscribe_form

    form = client.get("/subscribe", params={"interests": tried}).text
    assert f">{html.escape(tried, quote=False)}</textarea>" in form


def test_no_raw_scores_only_how_well_a_paper_matches(site: Site) -> None:
    examples(site)
    client = site.web()
    tried = client.get("/", params={"try": "federated\nspeech"}).text
    searched = client.get("/search", params={"q": "diffusion OR speech"}).text
    for page in (tried, searched):
        assert not RAW_SCORE.search(page), RAW_SCORE.search(page)
        words = re.findall(r"<strong>(strong|good|weak) match</strong>", page)
        assert words and words[0] == "strong"  # the best of a list is a strong match
    assert [strength(s, 5.0) for s in (5.0, 3.8, 2.0, 1.9, 0.1)] == [
        "strong match",
        "strong match",
        "good match",
        "weak match",
        "weak match",
    ]


def test_the_manage_page_links_the_readers_feed_and_explains_the_score(site: Site) -> None:
    client = site.web()
    manage = subscribed(site, client, "ada@example.org", "diffusion")
    page = client.get(manage).text
    assert not RAW_SCORE.search(page)
    hint = page.split('id="min_score-hint"', 1)[1].split("</p>", 1)[0]
    assert "2 to 3" in hint and "0 sends every paper" in hint
    ((ident, salt),) = store_rows(site.data, "SELECT id, token_salt FROM subscriber")
    name = feed_name(KEY, int(str(ident)), str(salt))
    atom = f"https://papers.example.org/feeds/private/{name}.atom"
    assert f'href="{atom}"' in page and "Add feed" in page
    assert feedparser.parse(client.get(atom).content).feed.title.endswith("papers for you")


def test_after_a_vote_the_page_leads_on(site: Site) -> None:
    site.subscribe({"ada@example.org": ["diffusion"]})
    site.drop_in_inbox(EXAMPLE_DUMPS / "daily-mar13-layout-b.txt", "c.txt")
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    assert site.cli("run", "--period", yesterday).code == 0
    (digest,) = mail_to(site, "ada@example.org")
    text = str(digest.get_body(("plain",)).get_content())  # type: ignore[union-attr]
    vote = re.search(r"https://papers\.example\.org(/feedback/\S+vote=up)", text)
    assert vote
    client = site.web()
    shown = client.get(vote.group(1))
    done = client.post(vote.group(1), data={"csrf": csrf_of(shown.text)})
    assert done.status_code == 200 and "Thank you" in done.text
    links = re.findall(r'href="([^"]+)"', done.text.split("Thank you", 1)[1])
    assert any(link.startswith("/papers/") and "?r=" in link for link in links), links
    assert any(link.startswith("/manage/") for link in links), links
    paper = client.get(html.unescape(next(x for x in links if x.startswith("/papers/"))))
    assert paper.status_code == 200 and "Not for me" in paper.text


def test_the_unsubscribed_page_leads_on(site: Site) -> None:
    site.subscribe({"ada@example.org": ["federated"]})
    site.drop_in_inbox(EXAMPLE_A, "a.txt")
    assert site.cli("run").code == 0
    (digest,) = mail_to(site, "ada@example.org")
    path = footer_link(digest, "Unsubscribe")
    client = site.web()
    done = client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert "You are unsubscribed" in done.text
    after = done.text.split("You are unsubscribed", 1)[1]
    ((ident, salt),) = store_rows(site.data, "SELECT id, token_salt FROM subscriber")
    manage = link_token(KEY, int(str(ident)), str(salt), purpose="manage")
    assert f'href="/manage/{manage}/delete"' in after and 'href="/"' in after
    assert client.get(f"/manage/{manage}/delete").status_code == 200


def test_the_feeds_link_opens_a_page_about_the_feeds(site: Site) -> None:
    examples(site)
    client = site.web()
    front = client.get("/").text
    nav = front.split('<nav aria-label="Site">', 1)[1].split("</nav>", 1)[0]
    assert 'href="/feeds"' in nav and ".atom" not in nav
    page = client.get("/feeds")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for words in ("Every new paper", "Your own feed", "A feed for any interest", "Add feed"):
        assert words in page.text, words
    feeds = re.findall(r'href="https://papers\.example\.org(/feeds/[^"]+)"', page.text)
    assert "/feeds/papers.atom" in feeds and "/feeds/papers.rss" in feeds
    searches = [html.unescape(f) for f in feeds if f.startswith("/feeds/search.")]
    assert searches
    for path in ["/feeds/papers.atom", *searches]:
        parsed = feedparser.parse(client.get(path).content)
        assert not parsed.bozo and parsed.feed.title, path


def test_a_text_input_with_an_error_is_marked_as_the_textarea_is(site: Site) -> None:
    client = site.web()
    manage = subscribed(site, client, "ada@example.org", "diffusion")
    refused = post_form(
        client,
        manage,
        manage,
        {"interests": "(", "max_items": "0", "min_score": "0", "frequency": "daily"},
    )
    assert refused.status_code == 422
    assert re.search(r'<input id="max_items"[^>]*class="field-error"', refused.text)
    assert re.search(r'<textarea id="interests"[^>]*class="field-error"', refused.text)
    # the error rule names inputs by element and class, so input[type=text] cannot win
    # over it (the browser tests measure the borders themselves)
    css = client.get("/static/web.css").text
    assert re.search(r"input\.field-error, textarea\.field-error[^{]*\{[^}]*--error", css)
