"""The reading pages: the front page with its "try it" preview, paper pages and the search,
on a real installation (store file, CLI, SMTP on loopback)."""

from __future__ import annotations

import html
import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, unquote, urlencode, urlsplit

import pytest
from starlette.testclient import TestClient

from digest.settings import load_settings
from digest.web import browse
from digest.web.app import create_app
from tests.conftest import EXAMPLE_A, EXAMPLE_DUMPS, REAL_A, REAL_B, REPO, Site, store_rows

MARK = re.compile(r'<mark class="hit">|</mark>')
TITLE_LINK = re.compile(r'<a class="title" href="(/papers/[^"]+)">(.*?)</a>', re.S)
ABSTRACT = re.compile(r'<p class="abstract">(.*?)(?: <a href="[^"]+">Read more</a>)?</p>', re.S)


def ingest(site: Site, *dumps: Path) -> None:
    for dump in dumps:
        result = site.cli("ingest", str(dump))
        assert result.code == 0, result.err


def examples(site: Site) -> None:
    ingest(
        site,
        EXAMPLE_A,
        EXAMPLE_DUMPS / "daily-mar12-layout-b.txt",
        EXAMPLE_DUMPS / "daily-mar13-layout-b.txt",
    )


def stored_titles(site: Site) -> dict[str, str]:
    """Stored key -> title (spacing folded, as pages show it)."""
    return {
        str(key): " ".join(str(title).split())
        for key, title in store_rows(site.data, "SELECT key, title FROM paper")
    }


def listed(page: str) -> list[tuple[str, str]]:
    """(paper page path, title HTML) of each paper a page lists, in order."""
    return [(path, title) for path, title in TITLE_LINK.findall(page)]


def key_of(path: str) -> str:
    return unquote(path.removeprefix("/papers/"))


def readme_interest_table() -> list[str]:
    """The ``write`` column of README's interest-language table."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Interests", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [row.split("|")[1].strip() for row in rows]


def test_front_page_explains_the_language_beside_the_subscribe_form(site: Site) -> None:
    page = site.web().get("/").text
    assert 'action="/subscribe"' in page  # the subscribe form partial
    for written in readme_interest_table():
        for code in re.findall(r"`([^`]+)`", written):
            assert f"<code>{html.escape(code, quote=False)}</code>" in page, code
    assert 'name="try"' in page and 'method="get"' in page


def test_front_page_lists_new_and_trending_papers(site: Site) -> None:
    examples(site)
    page = site.web().get("/").text
    new = page.split('id="new-heading"', 1)[1].split("</section>", 1)[0]
    trending = page.split('id="trending-heading"', 1)[1].split("</section>", 1)[0]
    titles = stored_titles(site)
    assert len(listed(new)) == browse.NEW_SHOWN  # 18 papers, all first seen just now
    seen_twice = {
        str(key) for (key,) in store_rows(site.data, "SELECT key FROM paper WHERE times_seen > 1")
    }
    trending_keys = [key_of(path) for path, _ in listed(trending)]
    new_keys = {key_of(path) for path, _ in listed(new)}
    assert not new_keys & set(trending_keys)  # a paper shows in one of the two lists
    assert set(trending_keys) <= seen_twice
    assert len(trending_keys) == min(browse.TRENDING_SHOWN, len(seen_twice - new_keys)) > 0
    assert "Seen in 2 listings" in trending
    for path, title in listed(new) + listed(trending):
        assert html.unescape(MARK.sub("", title)) == titles[key_of(path)]


def test_try_it_ranks_as_the_search_does_and_marks_the_words(site: Site) -> None:
    examples(site)
    interest = "federated"
    page = site.web().get("/", params={"try": interest}).text
    tried = page.split('id="try-heading"', 1)[1].split("</section>", 1)[0]
    paths = [path for path, _ in listed(tried)]
    assert paths
    searched = site.cli("search", interest, "--json")
    assert searched.code == 0, searched.err
    keys = [hit["key"] for hit in searched.json()["papers"]]
    assert [key_of(path) for path in paths] == keys  # one ranking path
    titles = stored_titles(site)
    for path, title in listed(tried):
        assert html.unescape(MARK.sub("", title)) == titles[key_of(path)]
    assert '<mark class="hit">' in tried and "Matched: federated" in tried


def test_try_it_sums_several_interests_one_per_line(site: Site) -> None:
    examples(site)
    page = site.web().get("/", params={"try": "federated\r\nspeech\n"}).text
    tried = page.split('id="try-heading"', 1)[1].split("</section>", 1)[0]
    assert "Matched: federated" in tried and "Matched: speech" in tried


def test_try_it_only_looks_at_the_last_seven_days(site: Site) -> None:
    examples(site)
    site.cli("ingest", str(EXAMPLE_A))
    later = datetime.now(UTC) + timedelta(days=8)
    app = create_app(load_settings(None), now=lambda: later)
    page = TestClient(app, base_url=site.env["DIGEST_BASE_URL"]).get(
        "/", params={"try": "federated"}
    )
    assert page.status_code == 200
    assert "Nothing of the last 7 days matches" in page.text


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("federated\nspeech (", "Interest 2 ('speech ('): "),
        ('"unclosed', "Interest 1 ('\"unclosed'): "),
        ("-survey", "Interest 1 ('-survey'): only exclusions"),
        ("x" * 600, "Interest 1 is longer than 500 characters."),
        ("(" * 5000 + "a" + ")" * 5000, "Interest 1 is longer than 500 characters."),
        ("speech\n" * 5000, "Those interests are too long to try."),
        ("\n".join(["speech"] * 21), "At most 20 interests, one per line."),
        ("  \n ", "Write at least one interest, one per line."),
    ],
)
def test_a_malformed_interest_is_shown_with_its_position(site: Site, text: str, words: str) -> None:
    examples(site)
    response = site.web().get("/", params={"try": text})
    assert response.status_code in (400, 422)
    shown = html.unescape(response.text)
    assert words in shown
    if words.endswith(": "):  # the parser's refusal: the reason and where
        assert re.search(re.escape(words) + r"[^<]+ at position \d+\.", shown)
    assert "Traceback" not in response.text
    assert store_rows(site.data, "SELECT count(*) FROM subscriber") == [(0,)]


def test_the_paper_page_shows_the_paper_and_its_links(site: Site, tmp_path: Path) -> None:
    listing = [
        {
            "paper": {
                "id": "2403.05525",
                "authors": [{"name": "Mira Castellanos"}, {"name": "Jonas  Weber"}],
                "title": "Sparse Routing\n  for Long Contexts",
                "summary": "Code at https://github.com/example/sparse-routing. Data at"
                " https://example.org/data, and <b>bold</b> claims & more.",
            },
            "publishedAt": "2024-03-11T01:22:09.123Z",
            "title": "Sparse Routing for Long Contexts",
        }
    ]
    dump = tmp_path / "daily.json"
    dump.write_text(json.dumps(listing), encoding="utf-8")
    ingest(site, dump)
    (key,) = [k for k in stored_titles(site)]
    client = site.web()
    response = client.get(f"/papers/{quote(key, safe='')}")
    assert response.status_code == 200
    page = response.text
    assert "<h1>Sparse Routing for Long Contexts</h1>" in page
    assert "Mira Castellanos, Jonas Weber" in page
    assert "&lt;b&gt;bold&lt;/b&gt; claims &amp; more." in page  # escaped, never markup
    assert 'href="https://arxiv.org/abs/2403.05525"' in page
    assert 'href="https://huggingface.co/papers/2403.05525"' in page
    assert "arxiv.org/search" not in page
    code = page.split("<h2>Code</h2>", 1)[1].split("</ul>", 1)[0]
    assert 'href="https://github.com/example/sparse-routing"' in code
    assert "https://example.org/data" not in code
    assert 'href="https://example.org/data"' in page
    assert '<th scope="row">Times seen</th><td>1</td>' in page
    assert "First seen" in page and "Last seen" in page


def test_the_paper_page_marks_the_interests_it_is_given(site: Site) -> None:
    examples(site)
    titles = stored_titles(site)
    key = next(k for k, t in titles.items() if "Federated" in t)
    page = site.web().get(f"/papers/{quote(key, safe='')}", params={"for": "federated"}).text
    heading = page.split("<h1>", 1)[1].split("</h1>", 1)[0]
    assert '<mark class="hit">' in heading
    assert html.unescape(MARK.sub("", heading)) == titles[key]
    # no arXiv id known: the arXiv page is one title search away
    search = urlencode({"query": titles[key], "searchtype": "title"})
    assert f'href="https://arxiv.org/search/?{html.escape(search)}"' in page


@pytest.mark.parametrize("path", ["/papers/arxiv%3A9999.99999", "/papers/", "/papers/%00x"])
def test_an_unknown_paper_gets_a_friendly_404(site: Site, path: str) -> None:
    examples(site)
    response = site.web().get(path)
    assert response.status_code == 404
    assert "Traceback" not in response.text
    assert "Nothing here" in response.text


def test_emailed_items_link_to_the_paper_page_and_it_answers(site: Site) -> None:
    site.subscribe({"ada@example.org": ["federated"]})
    site.drop_in_inbox(EXAMPLE_A, "a.txt")
    assert site.cli("run").code == 0
    ((_, message),) = site.received()
    body = message.get_body(("html",))
    assert body is not None
    text = body.get_content()
    base = site.env["DIGEST_BASE_URL"]
    links = re.findall(r'<a class="title" href="([^"]+)"', text)
    assert links and all(link.startswith(f"{base}/papers/") for link in links)
    client = site.web()
    titles = stored_titles(site)
    for link in links:
        page = client.get(urlsplit(link).path)
        assert page.status_code == 200
        assert html.escape(titles[key_of(urlsplit(link).path)], quote=False) in page.text
    plain = message.get_body(("plain",))
    assert plain is not None and f"Read: {base}/papers/" in plain.get_content()


def test_search_explains_and_marks_each_hit(site: Site) -> None:
    examples(site)
    page = site.web().get("/search", params={"q": "language"}).text
    hits = listed(page)
    assert hits
    searched = site.cli("search", "language", "--json").json()["papers"]
    assert [key_of(path) for path, _ in hits] == [hit["key"] for hit in searched][: len(hits)]
    assert page.count("Matched: language") == len(hits)
    titles = stored_titles(site)
    for path, title in hits:
        assert html.unescape(MARK.sub("", title)) == titles[key_of(path)]
    assert 'href="/feeds/search.atom?q=language"' in page


def test_search_is_paginated(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    examples(site)
    monkeypatch.setattr(browse, "PAGE_SIZE", 2)
    client = site.web()
    everything = site.cli("search", "language", "--json").json()["papers"]
    assert len(everything) > 4
    seen: list[str] = []
    url: str | None = "/search?q=language"
    while url:
        page = client.get(url).text
        seen += [key_of(path) for path, _ in listed(page)]
        found = re.search(r'<a href="([^"]+)">Next page</a>', page)
        url = html.unescape(found.group(1)) if found else None
    assert seen == [hit["key"] for hit in everything]
    assert client.get("/search?q=language&page=0").status_code == 400
    assert client.get("/search?q=language&page=x").status_code == 400


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("speech (", "at position"),
        ("-survey", "only exclusions"),
        ("title:", "at position"),
        ("y" * 501, "at most 500 characters"),
    ],
)
def test_a_bad_search_gets_a_friendly_400_with_the_position(
    site: Site, query: str, words: str
) -> None:
    examples(site)
    response = site.web().get("/search", params={"q": query})
    assert response.status_code == 400
    assert words in html.unescape(response.text)
    assert "Traceback" not in response.text


@pytest.mark.real_dumps
def test_real_dumps_listed_text_equals_the_source(site: Site) -> None:
    ingest(site, REAL_A, REAL_B)
    page = site.web().get("/", params={"try": "language model\nspeech\ndiffusion"}).text
    titles = stored_titles(site)
    hits = listed(page)
    assert hits
    for path, title in hits:
        assert html.unescape(MARK.sub("", title)) == titles[key_of(path)]
    abstracts = {
        str(k): " ".join(str(a).split())
        for k, a in store_rows(site.data, "SELECT key, abstract FROM paper")
    }
    for (path, _), abstract in zip(hits, ABSTRACT.findall(page), strict=False):
        shown = html.unescape(MARK.sub("", abstract))
        full = abstracts[key_of(path)]
        # Its beginning, or a window around the first word that matched ("… " before it).
        part = shown.removesuffix("…").rstrip(" ,;:-")
        if part.startswith("… "):
            part = part.removeprefix("… ")
            assert f" {part}" in full
        else:
            assert full.startswith(part)


def test_statistics_are_refreshed_after_an_ingest_without_waiting(site: Site) -> None:
    ingest(site, EXAMPLE_A)
    client = site.web()
    state = client.app.state.digest  # type: ignore[attr-defined]
    assert client.get("/", params={"try": "federated"}).status_code == 200
    first, stats = state.caches["stats"]
    ingest(site, EXAMPLE_DUMPS / "daily-mar12-layout-b.txt")
    # answered with the statistics it has, while the new ones are worked out
    assert client.get("/", params={"try": "federated"}).status_code == 200
    deadline = time.monotonic() + 30
    while state.caches["stats"][0] == first and time.monotonic() < deadline:
        time.sleep(0.05)
    sequence, refreshed = state.caches["stats"]
    assert sequence > first
    assert refreshed.documents > stats.documents


def test_search_refuses_a_lower_case_or_and_says_where(site: Site) -> None:
    client = site.web()
    refused = client.get("/search", params={"q": "gan or diffusion"})
    assert refused.status_code == 400
    assert "position 5" in refused.text and "OR" in refused.text
    assert client.get("/search", params={"q": "gan OR diffusion"}).status_code == 200
