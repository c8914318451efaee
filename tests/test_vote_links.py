"""A reader's links to a paper (its page with their token, "more like this", "not for me"):
one signed token per reader and paper, spliced into messages encoded once per paper, and
the paper page's vote buttons for the reader its link names."""

from __future__ import annotations

import email
import email.policy
import logging
import random
import re
from datetime import UTC, date, datetime
from urllib.parse import parse_qs, quote, unquote, urlsplit

import feedparser
import pytest
from markupsafe import escape

from digest.deliver.message import MessageBuilder, Sender
from digest.present.paper import DigestView, PaperView, shown
from digest.present.views import Links, paper_links
from digest.tokens import check_paper_token
from digest.web.security import CSRF_FIELD, redact
from tests.conftest import EXAMPLE_DUMPS, Site, store_rows

NOW = datetime(2026, 3, 14, 7, 0, tzinfo=UTC)
ALICE, BOB = "alice@example.org", "bob@example.org"
BASE = "https://papers.example.org"
KEY = b"k" * 32


# --- tokens and links -------------------------------------------------------------------


def test_one_token_per_reader_and_paper_checks_only_for_them() -> None:
    links = Links(BASE, KEY, "d@example.org")
    page, more, less = links.reader_links(7, "salt", "arxiv:2403.00001")
    token = page.partition("?r=")[2]
    assert page == f"{BASE}/papers/arxiv%3A2403.00001?r={token}"
    assert more == f"{BASE}/feedback/{token}?paper=arxiv%3A2403.00001&vote=up"
    assert less == f"{BASE}/feedback/{token}?paper=arxiv%3A2403.00001&vote=down"
    assert re.fullmatch(r"7\.[0-9a-f]{32}", token)
    assert check_paper_token(KEY, token, 7, "salt", "arxiv:2403.00001")
    signature = token.partition(".")[2]
    assert not check_paper_token(KEY, f"7.{'0' * 32}", 7, "salt", "arxiv:2403.00001")  # forged
    assert not check_paper_token(KEY, token[:-1], 7, "salt", "arxiv:2403.00001")  # cut short
    assert not check_paper_token(KEY, f"8.{signature}", 8, "salt", "arxiv:2403.00001")  # another
    assert not check_paper_token(KEY, token, 7, "salt", "arxiv:2403.00002")  # another paper
    assert not check_paper_token(KEY, token, 7, "new salt", "arxiv:2403.00001")  # revoked
    assert not check_paper_token(b"j" * 32, token, 7, "salt", "arxiv:2403.00001")  # another site
    assert not check_paper_token(KEY, f"7.{signature[:-1]}é", 7, "salt", "arxiv:2403.00001")
    other = links.reader_links(8, "salt", "arxiv:2403.00001")[0].partition("?r=")[2]
    assert other != token and other.startswith("8.")


# --- the message: encoded once per paper, the reader's token spliced in ------------------


def _paper(rng: random.Random, number: int) -> PaperView:
    words = ["speech", "Schrödinger", "δ-methods", ".hidden", "x" * 90, "a", "model", "—", "&amp;"]
    title = " ".join(rng.choices(words, k=rng.randint(1, 14)))
    # lines that start with a dot, spaces before a line break, long words: the encoder's cases
    abstract = " ".join(rng.choices(words, k=rng.randint(0, 80))) + rng.choice(["", " ", "\n."])
    key = rng.choice([f"arxiv:2403.{number:05d}", f"title:{title.lower()[:70]} {number}"])
    page, token_links = paper_links(BASE, key)
    return PaperView(
        key,
        title,
        abstract,
        None,
        rng.choice([None, f"2403.{number:05d}"]),
        1.0,
        interests=("speech",) if number % 2 else (),
        authors=rng.choice(["", "Ada Lovelace, Grace Hopper"]),
        because=rng.choice(["", "", "Liked <one> & “two”"]),
        page_url=page,
        token_links=token_links,
    )


def _views(ident: int, papers: list[PaperView]) -> tuple[DigestView, DigestView]:
    links = Links(BASE, KEY, "d@example.org")
    linked = links.digest_view(
        to="r@example.org",
        ident=ident,
        salt=f"salt{ident}",
        period=date(2026, 3, 14),
        papers=papers,
        message_id="<m@x>",
    )
    plain = DigestView(
        to=linked.to,
        period=linked.period,
        papers=papers,
        message_id=linked.message_id,
        unsubscribe_url=linked.unsubscribe_url,
        unsubscribe_mailto=linked.unsubscribe_mailto,
        feed_url=linked.feed_url,
        manage_url=linked.manage_url,
    )
    return linked, plain


def _parts(message: bytes) -> tuple[str, str]:
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    text = parsed.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = parsed.get_body(("html",)).get_content()  # type: ignore[union-attr]
    return text.replace("\r\n", "\n"), html.replace("\r\n", "\n")


def test_a_message_with_a_readers_links_is_the_plain_one_plus_their_own() -> None:
    rng = random.Random(12)
    pool = [_paper(rng, n) for n in range(60)]
    builder = MessageBuilder(Sender("d@example.org", "Papers", "papers", BASE))
    # readers' ids of every length a token can have share the builder's encoded blocks
    for ident in (1, 42, 7_311, 99_999_999, 123_456_789_012_345_678):
        papers = rng.sample(pool, 12)
        linked, plain = _views(ident, papers)
        message = builder.build(linked, NOW)
        lines = message.partition(b"\r\n\r\n")[2].split(b"\r\n")  # the body
        assert max(len(line) for line in lines) <= 76
        assert not any(line.startswith(b".") for line in lines)  # no dot-stuffing needed
        text, html = _parts(message)
        plain_text, plain_html = _parts(builder.build(plain, NOW))
        tokens = list(linked.tokens)
        assert len(set(tokens)) == len(papers)
        for paper, token in zip(papers, tokens, strict=True):
            page = f"{paper.page_url}?r={token}"
            assert text.count(f"  Read: {page}\n") == 1
            assert text.count(f"{BASE}/feedback/{token}?") == 2
            # the title, and "Read more" under a shortened abstract
            assert html.count(f'href="{page}"') == 1 + shown(paper).truncated
            assert html.count(f'href="{BASE}/feedback/{token}?') == 2
            if paper.because:
                assert f"  Because you liked: {paper.because}\n" in text
                assert f"Because you liked “{escape(paper.because)}”." in html
        # Take the reader's own lines and tokens out: what is left is the plain message,
        # word for word (each token stood between soft line breaks only).
        own_text = re.compile(r"  (?:Because you liked: .*|More like this: .*|Not for me: .*)\n")
        own_html = re.compile(r'<p class="votes"[^\n]*</p>\n')
        bare = re.compile(r"\?r=\d+\.[0-9a-f]{32}")
        assert bare.sub("", own_text.sub("", text)) == plain_text
        assert bare.sub("", own_html.sub("", html)) == plain_html
        assert "?r=" not in plain_text + plain_html and "/feedback/" not in plain_text


def test_a_view_without_tokens_has_plain_page_links_and_no_votes() -> None:
    builder = MessageBuilder(Sender("d@example.org", "Papers", "papers", BASE))
    papers = [_paper(random.Random(n), n) for n in range(3)]
    _, plain = _views(5, papers)
    text = builder.render_text(plain)
    assert "More like this" not in text and "?r=" not in text
    assert all(f"  Read: {p.page_url}\n" in text for p in papers)


def test_lines_starting_with_a_dot_are_escaped_within_76_characters() -> None:
    builder = MessageBuilder(Sender("d@example.org", "Papers", "papers", BASE))
    long_line = "." + "y" * 60 + " " + "z" * 20  # wrapped: a line of its own starts with "."
    paper = PaperView("title:x", "X", f"{long_line} .{'é' * 70}", None, None, 1.0)
    _, plain = _views(1, [paper])
    message = builder.build(plain, NOW)
    body = message.partition(b"\r\n\r\n")[2].split(b"\r\n")
    assert max(len(line) for line in body) <= 76
    assert not any(line.startswith(b".") for line in body)
    assert b"\r\n=2E" in message
    text, html = _parts(message)
    abstract = f"{long_line} .{'é' * 70}"
    assert re.findall(r'<p class="abstract"[^>]*>(.*?)</p>', html) == [abstract]
    shown_text = text.partition("* X\n")[2].partition("\n  Read: ")[0]
    assert " ".join(shown_text.split()) == abstract


# --- through a real installation: the email, the private feed, the paper page -------------


def _installed(site: Site) -> None:
    site.subscribe({ALICE: ["speech"], BOB: ["speech"]})
    assert site.cli("ingest", str(EXAMPLE_DUMPS)).code == 0
    result = site.cli("run", "--period", "2026-03-14")
    assert result.code == 0, result.err


def _email_of(site: Site, address: str) -> tuple[str, str]:
    (message,) = (m for to, m in site.received() if to == address)
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    return text.replace("\r\n", "\n"), html


def _path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def _page_links(text: str) -> list[str]:
    """The paper pages a digest's text part links, each with the reader's token."""
    return re.findall(rf"  Read: ({re.escape(BASE)}/papers/\S+\?r=\S+)\n", text)


def _buttons(page: str) -> list[tuple[str, str]]:
    """(form action, button) of each vote button on a page."""
    forms = re.findall(r'<form method="post" action="([^"]+)">(.*?)</form>', page, re.S)
    return [
        (action.replace("&amp;", "&"), re.sub(r"<[^>]+>", "", body).strip())
        for action, body in forms
        if action.startswith("/feedback/")
    ]


def test_every_email_item_links_its_page_with_the_readers_token(site: Site) -> None:
    _installed(site)
    text, html = _email_of(site, ALICE)
    pages = _page_links(text)
    more = re.findall(r"More like this: (\S+)", text)
    assert len(pages) == len(more) == text.count("\n* ") >= 2
    for page, vote in zip(pages, more, strict=True):
        token = parse_qs(urlsplit(page).query)["r"][0]
        assert urlsplit(vote).path == f"/feedback/{token}"  # one token for the item's links
        key = parse_qs(urlsplit(vote).query)["paper"][0]
        assert urlsplit(page).path == f"/papers/{quote(key, safe='')}"
        # the title and (under a shortened abstract) "Read more" link the same page
        assert f'href="{page}"' in html
    bob_pages = _page_links(_email_of(site, BOB)[0])
    assert set(bob_pages).isdisjoint(pages)


def test_the_paper_page_shows_vote_buttons_only_for_the_reader_its_link_names(
    site: Site,
) -> None:
    _installed(site)
    alice = _page_links(_email_of(site, ALICE)[0])
    bob = _page_links(_email_of(site, BOB)[0])
    web = site.web()
    page = _path(alice[0])
    path, _, query = page.partition("?")
    token = query.removeprefix("r=")
    ident, _, signature = token.partition(".")
    shown = web.get(page)
    assert shown.status_code == 200
    key = unquote_key(path)
    assert _buttons(shown.text) == [
        (f"/feedback/{token}?paper={quote(key, safe='')}&vote=up", "More like this"),
        (f"/feedback/{token}?paper={quote(key, safe='')}&vote=down", "Not for me"),
    ]
    assert f'name="{CSRF_FIELD}"' in shown.text
    other_paper = _path(alice[1]).partition("?")[0]
    refused = [
        path,  # no token: a plain page
        f"{path}?r=",
        f"{path}?r={ident}.{'0' * 32}",  # forged
        f"{path}?r={token[:-3]}",  # cut short
        f"{path}?r={int(ident) + 1}.{signature}",  # another reader's id, this signature
        f"{other_paper}?r={token}",  # another paper
        f"{path}?r=99999999999999999999999.{signature}",
        f"{path}?r={quote('1.é' * 40)}",
    ]
    for url in refused:
        answer = web.get(url)
        assert answer.status_code == 200, url  # the page, never an error
        assert _buttons(answer.text) == [], url
        assert "Traceback" not in answer.text
    assert store_rows(site.data, "SELECT COUNT(*) FROM feedback") == [(0,)]
    # Bob's own link to the same paper: his buttons, with his token
    (bob_page,) = (u for u in bob if urlsplit(u).path == path)
    bob_token = bob_page.partition("?r=")[2]
    assert bob_token != token
    assert [a for a, _ in _buttons(web.get(_path(bob_page)).text)] == [
        f"/feedback/{bob_token}?paper={quote(key, safe='')}&vote={vote}" for vote in ("up", "down")
    ]


def unquote_key(path: str) -> str:
    return unquote(path.removeprefix("/papers/"))


def test_a_vote_from_the_paper_page_lands_and_shows_on_the_manage_export(site: Site) -> None:
    _installed(site)
    text, _ = _email_of(site, ALICE)
    page = _path(_page_links(text)[0])
    manage = _path(re.findall(r"Change your interests: (\S+)", text)[0])
    web = site.web()
    shown = web.get(page)
    (_, _), (down, _) = _buttons(shown.text)
    csrf = re.search(rf'name="{CSRF_FIELD}" value="([0-9a-f]+)"', shown.text)
    assert csrf is not None
    assert web.post(down, data={}).status_code == 403  # no CSRF value: refused
    done = web.post(down, data={CSRF_FIELD: csrf.group(1)})
    assert done.status_code == 200 and "Thank you" in done.text
    again = web.get(page)
    assert "Your vote so far: <strong>not for me</strong>" in again.text
    exported = web.post(f"{manage}/export", data={CSRF_FIELD: csrf.group(1)})
    assert exported.status_code == 200
    key = unquote_key(page.partition("?")[0])
    (vote,) = exported.json()["votes"]
    assert (vote["paper"], vote["vote"]) == (key, "down")
    # Bob, sent the same paper, has no vote
    rows = store_rows(
        site.data,
        "SELECT s.email, f.vote FROM feedback f JOIN subscriber s ON s.id = f.subscriber_id",
    )
    assert rows == [(ALICE, "down")]


def test_private_feed_entries_link_the_page_with_the_readers_token(site: Site) -> None:
    _installed(site)
    text, _ = _email_of(site, ALICE)
    pages = set(_page_links(text))
    files = sorted((site.data / "feeds" / "private").glob("*.atom"))
    linked = []
    for path in files:
        entries = feedparser.parse(path.read_bytes()).entries
        linked.append({entry.link for entry in entries})
    assert pages in linked  # Alice's feed links her pages, as her email does
    web = site.web()
    some = sorted(pages)[0]
    assert len(_buttons(web.get(_path(some)).text)) == 2
    public = feedparser.parse((site.data / "feeds" / "papers.atom").read_bytes()).entries
    assert public and all("?r=" not in entry.link for entry in public)
    assert all(urlsplit(entry.link).path.startswith("/papers/") for entry in public)


def test_the_token_of_a_paper_page_stays_out_of_the_access_log(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    _installed(site)
    page = _path(_page_links(_email_of(site, ALICE)[0])[0])
    token = page.partition("?r=")[2]
    with caplog.at_level(logging.INFO, logger="digest.web.access"):
        assert site.web().get(page).status_code == 200
    logged = [r.getMessage() for r in caplog.records if r.name == "digest.web.access"]
    assert logged and all(token not in line for line in logged)
    assert all(token.partition(".")[2] not in line for line in logged)
    assert redact(page) == page.replace(token, "***")
    assert redact(f"/papers/x?for=a&r={token}") == "/papers/x?for=a&r=***"
