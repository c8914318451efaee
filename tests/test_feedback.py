"""Feedback from readers: the store's votes, the ``feedback`` command, the signed vote links
in the email and on the web, and the per-reader model in the ranking."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, quote, urlsplit

import feedparser
import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from digest.deliver.message import MessageBuilder, Sender
from digest.ingest.diff import upsert_entries
from digest.ingest.listing import Entry
from digest.present.paper import PaperView
from digest.present.views import Links, paper_links
from digest.rank import cutoff, ranker
from digest.rank import reader_model as model
from digest.rank.reader_model import Vote
from digest.rank.types import CorpusStats, PlainPaper, Profile
from digest.store import votes as feedback
from digest.store.engine import reading, transaction
from digest.store.models import Subscriber
from digest.web.security import CSRF_FIELD, redact
from tests.conftest import EXAMPLE_DUMPS, Site, store_rows

T0 = datetime(2026, 3, 12, 7, 0, tzinfo=UTC)
ALICE = "alice@example.org"


# --- the store ------------------------------------------------------------------------


def _reader(conn: sa.Connection, email: str) -> int:
    table = Subscriber.__table__  # type: ignore[attr-defined]
    result = conn.execute(
        table.insert().values(email=email, token_salt="salt", created_at=T0, interests="[]")
    )
    return int(result.inserted_primary_key[0])


def _papers(conn: sa.Connection, titles: list[str]) -> dict[str, int]:
    upsert_entries(conn, [Entry(t, f"All about {t.lower()}.") for t in titles], T0)
    rows = conn.execute(sa.text("SELECT title, id FROM paper")).all()
    return {str(title): int(pid) for title, pid in rows}


def test_a_later_vote_replaces_an_earlier_and_each_reader_has_their_own(engine: Engine) -> None:
    with transaction(engine) as conn:
        ada, bob = _reader(conn, "ada@example.org"), _reader(conn, "bob@example.org")
        ids = _papers(conn, ["Paper One", "Paper Two"])
        one, two = ids["Paper One"], ids["Paper Two"]
        feedback.record(conn, ada, one, "up", T0)
        feedback.record(conn, ada, one, "down", T0 + timedelta(hours=1))  # changed her mind
        feedback.record(conn, ada, two, "up", T0 + timedelta(hours=2))
        feedback.record(conn, bob, one, "up", T0)
    with reading(engine) as conn:
        votes = feedback.votes_of(conn, ada)
        assert [(v.paper.title, v.vote) for v in votes] == [
            ("Paper Two", "up"),
            ("Paper One", "down"),
        ]
        assert votes[1].voted_at == T0 + timedelta(hours=1)
        assert feedback.count(conn, ada) == {"up": 1, "down": 1}
        assert feedback.count(conn) == {"up": 2, "down": 1}
        by_reader = feedback.votes_by_reader(conn, {ada, bob, 999})
        assert sorted(by_reader) == [ada, bob]
        assert [v.paper.title for v in by_reader[ada]] == ["Paper One", "Paper Two"]  # oldest first
        assert feedback.vote_on(conn, bob, two) is None


def test_a_paper_is_found_under_the_key_its_links_were_sent_with(engine: Engine) -> None:
    with transaction(engine) as conn:
        ids = _papers(conn, ["Paper One"])
        first_key = conn.execute(sa.text("SELECT key FROM paper")).scalar_one()
        # Listed again with its arXiv id: the paper takes the arXiv key, vote links already
        # sent still carry the title key.
        upsert_entries(conn, [Entry("Paper One", "All about it.", arxiv_id="2403.00001")], T0)
    with reading(engine) as conn:
        assert conn.execute(sa.text("SELECT key FROM paper")).scalar_one() == "arxiv:2403.00001"
        found = feedback.paper_named(conn, str(first_key))
        assert found is not None and found.id == ids["Paper One"]
        assert feedback.paper_named(conn, "arxiv:2403.00001") == found
        assert feedback.paper_named(conn, "title:no such paper") is None


def test_export_and_erase_take_every_vote_of_one_reader_only(engine: Engine) -> None:
    with transaction(engine) as conn:
        ada, bob = _reader(conn, "ada@example.org"), _reader(conn, "bob@example.org")
        ids = _papers(conn, ["Paper One", "Paper Two"])
        feedback.record(conn, ada, ids["Paper One"], "up", T0)
        feedback.record(conn, ada, ids["Paper Two"], "down", T0 + timedelta(minutes=5))
        feedback.record(conn, bob, ids["Paper One"], "down", T0)
    with reading(engine) as conn:
        exported = feedback.export_rows(conn, ada)
    assert exported == [
        {
            "paper": "title:paper two",
            "title": "Paper Two",
            "vote": "down",
            "voted_at": (T0 + timedelta(minutes=5)).isoformat(),
        },
        {
            "paper": "title:paper one",
            "title": "Paper One",
            "vote": "up",
            "voted_at": T0.isoformat(),
        },
    ]
    with transaction(engine) as conn:
        assert feedback.erase(conn, ada) == 2
    with reading(engine) as conn:
        assert feedback.export_rows(conn, ada) == []
        assert feedback.count(conn) == {"up": 0, "down": 1}  # Bob's is still there


def test_a_vote_is_up_or_down_and_undo_takes_it_back(engine: Engine) -> None:
    with transaction(engine) as conn:
        ada = _reader(conn, "ada@example.org")
        one = _papers(conn, ["Paper One"])["Paper One"]
        with pytest.raises(ValueError, match="'up' or 'down'"):
            feedback.record(conn, ada, one, "sideways", T0)
        feedback.record(conn, ada, one, "up", T0)
        assert feedback.withdraw(conn, ada, one)
        assert not feedback.withdraw(conn, ada, one)
        assert feedback.count(conn, ada) == {"up": 0, "down": 0}


# --- the command ----------------------------------------------------------------------


def _installed(site: Site) -> None:
    site.subscribe({ALICE: ["speech"]})
    result = site.cli("ingest", str(EXAMPLE_DUMPS))
    assert result.code == 0, result.err


def _votes(site: Site) -> list[tuple[object, ...]]:
    return store_rows(
        site.data,
        "SELECT s.email, p.key, f.vote FROM feedback f JOIN subscriber s ON s.id = f.subscriber_id"
        " JOIN paper p ON p.id = f.paper_id ORDER BY p.key",
    )


def _a_key(site: Site, title_word: str) -> str:
    rows = store_rows(site.data, f"SELECT key FROM paper WHERE title LIKE '%{title_word}%'")
    assert len(rows) == 1, rows
    return str(rows[0][0])


def test_the_command_records_and_replaces_a_vote(site: Site) -> None:
    _installed(site)
    key = _a_key(site, "Whisper")
    result = site.cli("feedback", ALICE, key, "up")
    assert result.code == 0, result.err
    assert result.out.startswith(f"{ALICE}: more like this: Distilling")
    assert site.cli("feedback", "Alice@Example.org", key, "down").code == 0
    assert _votes(site) == [(ALICE, key, "down")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nobody@example.org", "{key}", "up"], "no subscriber nobody@example.org"),
        ([ALICE, "arxiv:9999.99999", "up"], "no paper 'arxiv:9999.99999' in the store"),
        ([ALICE, "not a paper", "down"], "no paper 'not a paper' in the store"),
        ([ALICE, "{key}", "sideways"], "invalid choice: 'sideways'"),
    ],
)
def test_the_command_refuses_in_one_line_and_changes_nothing(
    site: Site, args: list[str], message: str
) -> None:
    _installed(site)
    key = _a_key(site, "Whisper")
    result = site.cli("feedback", *[a.replace("{key}", key) for a in args])
    assert result.code == 2
    assert message in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert "Traceback" not in result.err
    assert _votes(site) == []


# --- the links: email, web ------------------------------------------------------------


def _digest_of(site: Site) -> tuple[str, str]:
    result = site.cli("run", "--period", "2026-03-14")
    assert result.code == 0, result.err
    ((to, message),) = site.received()
    assert to == ALICE
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    return text, html


def test_every_item_of_the_email_carries_both_vote_links(site: Site) -> None:
    _installed(site)
    text, html = _digest_of(site)
    items = text.count("\n* ")
    assert items >= 2
    more = re.findall(r"More like this: (\S+)", text)
    less = re.findall(r"Not for me: (\S+)", text)
    assert len(more) == len(less) == items
    assert html.count(">More like this</a>") == html.count(">Not for me</a>") == items
    for url in more:
        assert url.startswith("https://papers.example.org/feedback/")
        assert f'href="{url.replace("&", "&amp;")}"' in html
        assert parse_qs(urlsplit(url).query)["vote"] == ["up"]
    assert all(parse_qs(urlsplit(url).query)["vote"] == ["down"] for url in less)


def _first_links(site: Site) -> tuple[str, str, str]:
    text, _ = _digest_of(site)
    more = re.findall(r"More like this: (\S+)", text)[0]
    less = re.findall(r"Not for me: (\S+)", text)[0]
    return more, less, parse_qs(urlsplit(more).query)["paper"][0]


def _path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_a_link_asks_first_then_records_and_can_be_undone(site: Site) -> None:
    _installed(site)
    more, less, key = _first_links(site)
    web = site.web()
    asked = web.get(_path(more))
    assert asked.status_code == 200
    assert "More like this?" in asked.text
    assert _votes(site) == []  # a scanner opening the link votes nothing
    csrf = re.search(rf'name="{CSRF_FIELD}" value="([0-9a-f]+)"', asked.text)
    assert csrf is not None
    done = web.post(_path(more), data={CSRF_FIELD: csrf.group(1)})
    assert done.status_code == 200 and "Thank you" in done.text and "Undo" in done.text
    assert _votes(site) == [(ALICE, key, "up")]
    assert web.post(_path(more), data={CSRF_FIELD: csrf.group(1)}).status_code == 200
    assert _votes(site) == [(ALICE, key, "up")]  # the same vote again changes nothing
    web.post(_path(less), data={CSRF_FIELD: csrf.group(1)})
    assert _votes(site) == [(ALICE, key, "down")]
    undone = web.post(_path(less), data={CSRF_FIELD: csrf.group(1), "undo": "1"})
    assert "Taken back" in undone.text
    assert _votes(site) == []


def test_altered_links_get_a_friendly_404_and_change_nothing(site: Site) -> None:
    _installed(site)
    more, less, key = _first_links(site)
    other = _a_key(site, "Zero-Shot")
    token = urlsplit(more).path.rsplit("/", 1)[1]
    ident, _, sig = token.partition(".")
    forged = f"{ident}.{'0' * len(sig)}"
    bad = [
        more.replace(token, forged),  # forged signature
        more.replace(token, token[:-4]),  # truncated
        more.replace(token, f"{int(ident) + 1}.{sig}"),  # another reader
        more.replace("vote=up", "vote=maybe"),
        more.replace(f"paper={quote(key, safe='')}", f"paper={quote(other, safe='')}"),
        less.split("?")[0] + "?vote=down",  # no paper
        "https://papers.example.org/feedback/?paper=x&vote=up",
    ]
    web = site.web()
    csrf = re.search(rf'name="{CSRF_FIELD}" value="([0-9a-f]+)"', web.get("/").text)
    assert csrf is not None
    assert len(set(bad)) == len(bad) and more not in bad
    for url in bad:
        for response in (
            web.get(_path(url)),
            web.post(_path(url), data={CSRF_FIELD: csrf.group(1)}),
        ):
            assert response.status_code == 404, url
            assert "not valid" in response.text or "no page" in response.text
            assert "Traceback" not in response.text
    assert _votes(site) == []
    # The right link without the form's CSRF value is refused too.
    assert web.post(_path(more), data={}).status_code == 403
    assert _votes(site) == []


def test_feedback_paths_are_redacted_in_logs() -> None:
    assert redact("/feedback/12.abcdef0123") == "/feedback/***"


# --- the model in the ranking ---------------------------------------------------------


PAPERS = [
    PlainPaper(
        1, "Speech recognition with transducers", "Streaming speech recognition for phones."
    ),
    PlainPaper(2, "Speech synthesis from text", "Expressive speech synthesis with diffusion."),
    PlainPaper(
        3, "Speech recognition for low-resource languages", "Speech recognition, few hours."
    ),
    PlainPaper(4, "Speech emotion in call centres", "Emotion from speech in customer calls."),
    PlainPaper(5, "Speech enhancement by diffusion", "Denoising speech with diffusion models."),
    PlainPaper(6, "Acoustic models for phones", "Recognition of words from audio on device."),
    PlainPaper(7, "Graph networks for molecules", "Message passing over molecular graphs."),
]
EARLIER = [
    PlainPaper(11, "End-to-end speech recognition", "Recognition of speech with transducers."),
    PlainPaper(12, "Multilingual speech recognition", "Recognition of speech in many languages."),
    PlainPaper(13, "On-device recognition of words", "Recognition of spoken words from audio."),
    PlainPaper(
        14, "Diffusion for speech synthesis", "Speech synthesis and denoising with diffusion."
    ),
]
STATS = CorpusStats.from_texts((p.title, p.abstract) for p in PAPERS + EARLIER)
# A day with other topics too, as real days are: a paper that leans a reader's way stands
# out of it (among the seven papers above, everything leans alike).
WEAK = PlainPaper(
    8,
    "Diffusion models for image synthesis",
    "Denoising diffusion synthesis of images at high resolution, with fast samplers,"
    " classifier-free guidance and distillation; an appendix adds speech.",
)
OTHER_TOPICS = [
    "Graph neural networks for traffic",
    "Protein folding with transformers",
    "Robot grasping from images",
    "Reinforcement learning for chess",
    "Image classification with convolutions",
    "Weather forecasting from satellites",
    "Recommender systems for shopping",
    "Code generation with language models",
    "Question answering over tables",
    "Object detection in street scenes",
    "Time series anomalies in sensors",
    "Machine translation for legal text",
    "Sparse attention for long documents",
    "Federated learning on hospitals",
    "Tabular data with gradient boosting",
    "Point clouds for driving",
]
DAY = [
    *PAPERS,
    WEAK,
    *(
        PlainPaper(20 + n, title, f"We study {title.lower()} and report results on benchmarks.")
        for n, title in enumerate(OTHER_TOPICS)
    ),
]
DAY_STATS = CorpusStats.from_texts((p.title, p.abstract) for p in DAY + EARLIER)
LIKES = [Vote(p, True) for p in EARLIER[:3]]  # recognition, three times
DISLIKE = Vote(EARLIER[3], False)  # synthesis and diffusion


def test_readers_without_votes_get_exactly_what_they_got_before() -> None:
    profiles = [Profile(1, ("speech",), max_items=3), Profile(2, ("speech", "graph"), max_items=2)]
    before = ranker.rank(PAPERS, profiles, STATS)
    votes = {1: [Vote(EARLIER[0], True), Vote(EARLIER[3], False)]}
    with_other_votes = ranker.rank(PAPERS, profiles, STATS, votes=votes)
    assert with_other_votes[2] == before[2]  # reader 2 gave no feedback
    assert ranker.rank(PAPERS, profiles, STATS, votes={}) == before
    assert with_other_votes[1] != before[1]  # reader 1's votes do change their list


def test_a_voter_on_a_day_without_papers_gets_an_empty_list() -> None:
    profile = Profile(1, ("speech",), max_items=8)
    assert ranker.rank([], [profile], DAY_STATS, votes={1: [*LIKES, DISLIKE]}) == {1: []}


def test_votes_rerank_and_cut_only_the_weak_matches() -> None:
    profile = Profile(1, ("speech",), max_items=8)
    before = [r.paper_id for r in ranker.rank(DAY, [profile], DAY_STATS)[1]]
    after = ranker.rank(DAY, [profile], DAY_STATS, votes={1: [*LIKES, DISLIKE]})[1]
    ids = [r.paper_id for r in after]
    assert before[:3] == [1, 2, 5] and 8 in before  # "speech" in the title; once, in passing
    assert set(ids[:2]) == {1, 3}  # recognition, liked three times, first
    # Synthesis and diffusion lean the disliked paper's way: a strong match goes down the
    # list, the weak one (under half the best score) is not sent at all.
    assert ids.index(2) > ids.index(4) and ids.index(5) > ids.index(4)
    assert 8 not in ids
    assert {r.because for r in after if r.paper_id in (1, 3)} <= {p.title for p in EARLIER[:3]}
    assert all(r.because for r in after if r.paper_id in (1, 3))


def test_a_paper_no_interest_matches_joins_when_it_stands_out_of_the_day() -> None:
    profile = Profile(1, ("speech",), max_items=8)
    after = ranker.rank(DAY, [profile], DAY_STATS, votes={1: LIKES})[1]
    # Paper 6 says no "speech": it joins for the likes, last, named after the nearest one.
    assert [r.paper_id for r in after][-1] == 6
    assert after[-1].hits == () and after[-1].because == "On-device recognition of words"
    # A reader who set a floor on the interests' score gets no paper below it.
    floored = Profile(1, ("speech",), max_items=8, min_score=0.1)
    assert 6 not in [
        r.paper_id for r in ranker.rank(DAY, [floored], DAY_STATS, votes={1: LIKES})[1]
    ]
    # Among the seven speech papers, paper 6 leans the reader's way as much as ever (its
    # cosine clears the join) but does not stand out of a day that all leans alike.
    vectors = model.Vectors(STATS)
    reader = model.learn(LIKES, vectors)
    assert reader is not None and reader.join is not None
    assert model.dot(vectors.of(PAPERS[5]), reader.direction) >= reader.join
    small_day = ranker.rank(PAPERS, [profile], STATS, votes={1: LIKES})[1]
    assert 6 not in [r.paper_id for r in small_day]


@pytest.mark.parametrize("dense_terms", [0, 8, 512])  # all terms by paper, some, none
def test_the_days_leans_are_the_dot_products_of_the_papers_vectors(
    dense_terms: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model, "DENSE_TERMS", dense_terms)
    vectors = model.Vectors(DAY_STATS)
    day = model.Day(DAY, vectors)
    assert day.block.shape == (len(DAY), min(dense_terms, len(np.unique(day.indices))))
    readers = [model.learn(votes, vectors) for votes in ([*LIKES, DISLIKE], LIKES[:1])]
    directions = [reader.direction for reader in readers if reader is not None]
    unknown = model.Vector(np.array([vectors.width + 1]), np.array([1.0]))  # numbered later
    leans = day.leans([*directions, unknown])
    assert leans.shape == (3, len(DAY))
    for direction, found in zip(directions, leans, strict=False):
        expected = [model.dot(vectors.of(p), direction) for p in DAY]
        assert found.tolist() == pytest.approx(expected, abs=1e-12)
    assert not leans[2].any()
    reader = readers[0]
    assert reader is not None
    liked = [v for _, v in reader.liked]
    rows = [0, 5, 7]
    cosines = day.cosines(rows, liked)
    assert cosines.shape == (3, 3)
    for n, row in enumerate(rows):
        want = [model.dot(vectors.of(DAY[row]), v) for v in liked]
        assert cosines[n].tolist() == pytest.approx(want, abs=1e-12)


def test_readers_models_worked_out_in_processes_give_the_same_lists() -> None:
    profiles = [Profile(n, ("speech", "graph")[: 1 + n % 2], max_items=12) for n in range(1, 9)]
    deeper = [model.deeper(p) for p in profiles]
    votes = {p.id: LIKES if p.id % 3 else [*LIKES, DISLIKE] for p in profiles if p.id != 4}
    lists = {}
    for processes in (1, 2, 3):
        ranked = ranker.rank(DAY, deeper, DAY_STATS)
        lists[processes] = model.rerank_readers(
            ranked, profiles, DAY, votes, DAY_STATS, processes=processes
        )
    assert lists[2] == lists[1] and lists[3] == lists[1]
    assert any(r.because for items in lists[1].values() for r in items)
    assert any(not r.hits for items in lists[1].values() for r in items)  # joined papers


def test_the_model_learns_a_threshold_only_from_both_kinds_of_votes() -> None:
    vectors = model.Vectors(STATS)
    assert model.learn([], vectors) is None
    only_likes = model.learn(LIKES, vectors)
    assert only_likes is not None and only_likes.threshold is None
    assert only_likes.join is not None  # a like: papers no interest matches may join
    both = model.learn([*LIKES, DISLIKE], vectors)
    assert both is not None and both.threshold is not None
    assert both.threshold <= model.CUT_MOST
    only_dislikes = model.learn([DISLIKE], vectors)
    assert only_dislikes is not None and only_dislikes.join is None


def test_the_email_says_why_a_paper_came_from_feedback() -> None:
    builder = MessageBuilder(Sender("d@example.org", "Papers", "papers", "https://x.example"))
    links = Links("https://x.example", b"k" * 32, "d@example.org")

    page, token_links = paper_links("https://x.example", "arxiv:2403.00001")
    paper = PaperView(
        "arxiv:2403.00001",
        "A & B",
        "Abstract.",
        None,
        "2403.00001",
        1.0,
        because="Liked <one>",
        page_url=page,
        token_links=token_links,
    )
    view = links.digest_view(
        to="r@example.org", ident=7, salt="s", period=T0.date(), papers=[paper], message_id="<m@x>"
    )
    text, html = builder.render_text(view), builder.render_html(view)
    assert "  Because you liked: Liked <one>\n" in text
    assert "Because you liked “Liked &lt;one&gt;”." in html
    more = re.findall(r"More like this: (\S+)", text)[0]
    assert (
        more.startswith("https://x.example/feedback/7.")
        and "paper=arxiv%3A2403.00001&vote=up" in more
    )


def test_private_feed_entries_carry_the_readers_vote_links(site: Site) -> None:
    _installed(site)
    text, _ = _digest_of(site)
    sent = set(re.findall(r"More like this: (\S+)", text))
    (path,) = (site.data / "feeds" / "private").glob("*.atom")
    entries = feedparser.parse(path.read_bytes()).entries
    assert len(entries) == len(sent)
    found = set()
    for entry in entries:
        links = re.findall(r'href="([^"]+)">More like this<', entry.summary)
        assert len(links) == 1 and ">Not for me<" in entry.summary
        found.add(links[0].replace("&amp;", "&"))
    assert found == sent  # the same signed links as the email's
    (global_feed,) = (site.data / "feeds").glob("papers.atom")
    assert "More like this" not in global_feed.read_text(encoding="utf-8")  # no reader there


def test_the_next_digest_says_which_liked_paper_chose_an_item(site: Site) -> None:
    site.subscribe({ALICE: ["speech"]})
    assert site.cli("ingest", str(EXAMPLE_DUMPS / "daily-mar12-layout-b.txt")).code == 0
    assert site.cli("run", "--period", "2026-03-12").code == 0
    liked = _a_key(site, "Podcasts")
    assert site.cli("feedback", ALICE, liked, "up").code == 0
    assert site.cli("ingest", str(EXAMPLE_DUMPS / "daily-mar13-layout-b.txt")).code == 0
    assert site.cli("run", "--period", "2026-03-13").code == 0
    first, second = (message for _, message in site.received())
    assert "Because you liked" not in first.as_string()
    text = second.get_body(("plain",)).get_content().replace("\r\n", "\n")  # type: ignore[union-attr]
    assert "* Zero-Shot Text-to-Speech with Discrete Diffusion over Codec Tokens" in text
    assert (
        "  Because you liked: Self-Supervised Speech Representations from Untranscribed Podcasts\n"
        in text
    )
    matched = store_rows(site.data, "SELECT matched FROM digestitem ORDER BY id DESC LIMIT 1")
    assert '"liked": "Self-Supervised Speech Representations' in str(matched[0][0])


def test_the_whole_store_preview_ranks_with_the_readers_votes(site: Site) -> None:
    site.subscribe({ALICE: ["speech"]})
    for name in ("daily-mar12-layout-b.txt", "daily-mar13-layout-b.txt"):
        assert site.cli("ingest", str(EXAMPLE_DUMPS / name)).code == 0

    def liked() -> list[str]:
        """What the preview says each paper was chosen for, beyond the interests."""
        result = site.cli("preview", ALICE, "--all", "--json")
        assert result.code == 0, result.err
        papers = result.json()["papers"]
        assert papers
        return [m["liked"] for p in papers for m in p["matched"] if "liked" in m]

    assert liked() == []
    assert site.cli("feedback", ALICE, _a_key(site, "Podcasts"), "up").code == 0
    # as the next digest would: ranked with the reader's vote, and saying so
    assert liked() and set(liked()) == {
        "Self-Supervised Speech Representations from Untranscribed Podcasts"
    }


def test_one_cut_off_leaves_out_weak_objected_papers_but_the_best_few() -> None:
    scores = [5.0, 4.0, 3.0, 2.0, 1.0, 0.5]
    weak, strong = cutoff.WEAK / 2, cutoff.WEAK * 1.5
    objections: list[float | None] = [weak] * cutoff.MIN_KEPT + [weak, strong, None]
    # The best few stay whatever the votes say; past them only strong or unobjected ones.
    assert cutoff.kept(scores, 10, objections=objections) == [*range(cutoff.MIN_KEPT), 4, 5]
    assert cutoff.kept(scores, cutoff.MIN_KEPT + 1, objections=objections) == [
        *range(cutoff.MIN_KEPT),
        4,
    ]
    # Without votes the same function stops at the floor.
    assert cutoff.kept(scores, 10, floor=2.5) == [0, 1, 2]
