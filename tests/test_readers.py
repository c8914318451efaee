"""The papers-page text readers: real dumps, layouts, chrome, pairing, encodings, dates."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from digest.ingest.identity import normalize_title
from digest.ingest.listing import Entry
from digest.ingest.readers import read_listing
from digest.ingest.readers.hf_text import looks_like_abstract, resolve_year
from tests.conftest import EXAMPLE_A, EXAMPLE_B, EXAMPLE_DUMPS, REAL_A, REAL_B, REPO

FIXTURES = REPO / "tests" / "fixtures"
NOW = datetime(2024, 3, 12, 9, 0, tzinfo=UTC)
real = pytest.mark.real_dumps


def read(path: Path, now: datetime = NOW) -> tuple[str, date | None, list[Entry]]:
    listing = read_listing(path, now=now)
    return listing.layout, listing.listing_date, list(listing.entries)


def titles_of(path: Path) -> list[str]:
    return [entry.title for entry in read_listing(path, now=NOW).entries]


def raw_pairs(path: Path) -> list[tuple[int, str, str]]:
    """Titles and abstracts the naive way (strict alternation after the header).

    An independent count for the example and real dumps, which happen to alternate cleanly.
    """
    numbered = [
        (number, line.strip())
        for number, line in enumerate(path.read_text("utf-8").split("\n"), start=1)
        if line.strip()
    ]
    chrome = {"new", "Subscribe", "byAK and the research community"}
    body = [
        (number, line)
        for number, line in numbered
        if line not in chrome
        and not line.startswith("Get trending papers")
        and not re.fullmatch(r"[A-Z][a-z]{2} \d{1,2}", line)  # the listing date: "Mar 11"
    ]
    first_number, first_line = body[0]
    body[0] = (first_number, first_line.removeprefix("Subscribe"))
    return [
        (body[i][0], body[i][1], body[i + 1][1] if i + 1 < len(body) else "")
        for i in range(0, len(body), 2)
    ]


# --- whole dumps: the examples, and the real ones when they are beside the repo ---------
# Counts, lines and overlaps worked out from the raw files (awk and grep), not by the reader.


@pytest.mark.parametrize(
    ("path", "count", "first_title"),
    [
        pytest.param(
            EXAMPLE_A,
            10,
            "Sparse Expert Routing for Long-Context Large Language Models",
            id="examples",
        ),
        pytest.param(
            REAL_A,
            266,
            "Boundary-Aware Segmentation Network for Mobile and Web Applications",
            id="real",
            marks=real,
        ),
    ],
)
def test_layout_a_dump_pairs_every_title_with_its_abstract(
    path: Path, count: int, first_title: str
) -> None:
    listing = read_listing(path, now=NOW)
    entries = list(listing.entries)
    assert listing.layout == "hf-text-a"
    assert listing.listing_date is None
    assert len(entries) == count
    assert [(e.line, e.title, e.abstract) for e in entries] == raw_pairs(path)
    assert entries[0].title == first_title
    assert entries[0].line == 3
    assert all(entry.abstract for entry in entries)


@pytest.mark.parametrize(
    ("path", "listed", "count", "first_title"),
    [
        pytest.param(
            EXAMPLE_B,
            date(2024, 3, 12),
            9,
            "Federated Instruction Tuning of Large Language Models",
            id="examples",
        ),
        pytest.param(
            REAL_B,
            date(2024, 3, 11),
            64,
            "FedCompass: Efficient Cross-Silo Federated Learning",
            id="real",
            marks=real,
        ),
    ],
)
def test_layout_b_dump_pairs_every_title_and_dates_the_listing(
    path: Path, listed: date, count: int, first_title: str
) -> None:
    listing = read_listing(path, now=NOW)
    entries = list(listing.entries)
    assert listing.layout == "hf-text-b"
    assert listing.listing_date == listed
    assert len(entries) == count
    assert [(e.line, e.title, e.abstract) for e in entries] == raw_pairs(path)
    assert entries[0].line == 11
    assert entries[0].title.startswith(first_title)


@pytest.mark.parametrize(
    ("path_a", "path_b", "sizes", "in_both", "in_either", "common"),
    [
        pytest.param(
            EXAMPLE_A,
            EXAMPLE_B,
            (10, 9),
            3,
            16,
            "sparse expert routing for long context large language models",
            id="examples",
        ),
        pytest.param(REAL_A, REAL_B, (266, 64), 5, 325, "pointer networks", id="real", marks=real),
    ],
)
def test_dumps_unique_titles_and_overlap(
    path_a: Path,
    path_b: Path,
    sizes: tuple[int, int],
    in_both: int,
    in_either: int,
    common: str,
) -> None:
    keys_a = {normalize_title(title) for title in titles_of(path_a)}
    keys_b = {normalize_title(title) for title in titles_of(path_b)}
    assert (len(keys_a), len(keys_b)) == sizes
    assert len(keys_a & keys_b) == in_both
    assert len(keys_a | keys_b) == in_either
    assert common in keys_a & keys_b


@pytest.mark.parametrize(
    "path",
    [
        *(pytest.param(path, id=path.name) for path in sorted(EXAMPLE_DUMPS.glob("*.txt"))),
        pytest.param(REAL_A, id="real-a", marks=real),
        pytest.param(REAL_B, id="real-b", marks=real),
    ],
)
def test_no_title_has_the_shape_of_an_abstract(path: Path) -> None:
    pairs = raw_pairs(path)
    assert pairs
    for _, title, abstract in pairs:
        assert not looks_like_abstract(title), title
        assert not looks_like_abstract(title, expecting_abstract=True), title
        assert looks_like_abstract(abstract), abstract[:80]


# --- the sample dumps shipped for the demo ---------------------------------------------


def test_example_dumps_read_with_overlap() -> None:
    listings = {
        path.name: read_listing(path, now=NOW) for path in sorted(EXAMPLE_DUMPS.glob("*.txt"))
    }
    assert {name: listing.layout for name, listing in listings.items()} == {
        "daily-mar12-layout-b.txt": "hf-text-b",
        "daily-mar13-layout-b.txt": "hf-text-b",
        "trending-layout-a.txt": "hf-text-a",
    }
    entries = {name: list(listing.entries) for name, listing in listings.items()}
    assert [len(found) for found in entries.values()] == [9, 8, 10]
    assert all(entry.abstract for found in entries.values() for entry in found)
    unique = {normalize_title(entry.title) for found in entries.values() for entry in found}
    assert len(unique) == 18
    assert listings["daily-mar13-layout-b.txt"].listing_date == date(2024, 3, 13)


# --- pairing and chrome ---------------------------------------------------------------


def test_messy_dump_pairs_robustly() -> None:
    layout, listing_date, entries = read(FIXTURES / "hf_text_messy.txt")
    assert layout == "hf-text-a"
    assert listing_date is None
    got = [(e.line, e.title, e.abstract[:24]) for e in entries]
    assert got == [
        (3, "Tokenizer-Free Language Modeling with Byte Patches", "Byte-level models avoid "),
        (5, "Attention Is All You Need Twice.", ""),
        (6, "What Makes a Good Speech Tokenizer? An Empirical Study", "Discrete speech tokens p"),
        (9, "Federated Learning with Stale Clients", "Clients in cross-device "),
        (13, "Masked Autoencoders for Satellite Imagery", "Self-supervised pretrain"),
        (15, "Diffusion Policies Without Demonstrations", "We release code and trai"),
    ]
    stale = entries[3].abstract
    assert stale.endswith(
        "bounded delay. In a second paragraph, we show that the method"
        " also reduces communication by half on three benchmarks."
    )


def test_layout_b_fixture_drops_stray_chrome() -> None:
    layout, listing_date, entries = read(FIXTURES / "hf_text_layout_b.txt")
    assert (layout, listing_date) == ("hf-text-b", date(2024, 3, 11))
    assert [e.title for e in entries] == [
        "Retrieval-Augmented Generation for Code Review",
        "Subscriber-Aware Caching for Streaming Recommenders",
    ]
    assert [e.line for e in entries] == [11, 17]


ABSTRACT = (
    "We study a problem that matters. Our method improves the baseline by a wide margin"
    " on every benchmark we tried, and the code is released."
)


@pytest.mark.parametrize(
    ("first", "title"),
    [
        ("SubscribeVisualQuality-R1: Reasoning", "VisualQuality-R1: Reasoning"),
        ("Subscribe3D Gaussian Splatting at Scale", "3D Gaussian Splatting at Scale"),
        ('Subscribe"Quoted" Titles Considered Harmful', '"Quoted" Titles Considered Harmful'),
        (
            "Subscriber Churn Prediction with Transformers",
            "Subscriber Churn Prediction with Transformers",
        ),
        ("Subscribe to Less: Sparse Updates", "Subscribe to Less: Sparse Updates"),
    ],
)
def test_glued_subscribe_is_cut_only_before_a_non_lowercase_start(
    tmp_path: Path, first: str, title: str
) -> None:
    path = tmp_path / "dump.txt"
    path.write_text(f"Get trending papers in your email inbox!\n{first}\n{ABSTRACT}\n", "utf-8")
    assert titles_of(path) == [title]


def test_subscribe_is_not_cut_from_a_later_title(tmp_path: Path) -> None:
    path = tmp_path / "dump.txt"
    path.write_text(f"First Title\n{ABSTRACT}\nSubscribeLater Title\n{ABSTRACT}\n", "utf-8")
    assert titles_of(path) == ["First Title", "SubscribeLater Title"]


def test_abstract_before_any_title_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "dump.txt"
    path.write_text(f"{ABSTRACT}\nA Real Title\n{ABSTRACT}\n", "utf-8")
    _, _, entries = read(path)
    assert [(e.line, e.title) for e in entries] == [(2, "A Real Title")]


def test_title_shapes() -> None:
    assert not looks_like_abstract("Is Attention All You Need? A Study of Sixteen Heads")
    assert not looks_like_abstract("Attention Is All You Need.", expecting_abstract=True)
    assert looks_like_abstract("We release the code.", expecting_abstract=True)
    assert not looks_like_abstract("We release the code.")
    assert looks_like_abstract("x" * 301)


# --- encodings and line ends ------------------------------------------------------------


SAMPLE = (
    "Get trending papers in your email inbox!\n"
    "Subscribe\u201cSmall\u201d Models Can Reason \u2014 Sometimes\n"
    "We show that small models reason when trained on curated traces. Caf\u00e9 results included.\n"
    "Second Title\n"
    "Another abstract that is long enough to be prose. It has two sentences, clearly.\n"
)


@pytest.mark.parametrize(
    ("encoding", "bom", "newline"),
    [
        ("utf-8", b"", "\n"),
        ("utf-8", b"\xef\xbb\xbf", "\r\n"),
        ("utf-16-le", b"\xff\xfe", "\r\n"),
        ("utf-16-be", b"\xfe\xff", "\n"),
        ("cp1252", b"", "\r\n"),
        ("utf-8", b"", "\r"),
    ],
)
def test_encodings_line_ends_and_byte_order_marks(
    tmp_path: Path, encoding: str, bom: bytes, newline: str
) -> None:
    path = tmp_path / "dump.txt"
    text = SAMPLE.replace("\n", " \t" + newline)  # trailing spaces too
    path.write_bytes(bom + text.encode(encoding))
    _, _, entries = read(path)
    assert [(e.line, e.title) for e in entries] == [
        (2, "\u201cSmall\u201d Models Can Reason \u2014 Sometimes"),
        (4, "Second Title"),
    ]
    assert entries[0].abstract.endswith("Caf\u00e9 results included.")


def test_bytes_cp1252_cannot_decode_fall_back_to_latin1(tmp_path: Path) -> None:
    path = tmp_path / "dump.txt"
    # 0x81 is undefined in cp1252, so the whole file is read as latin-1.
    path.write_bytes(b"Title \x81 \xe9t\xe9\n" + ABSTRACT.encode("ascii") + b"\n")
    assert titles_of(path) == ["Title \x81 \u00e9t\u00e9"]
    assert read_listing(path, now=NOW).notes == ["not UTF-8; read as latin-1"]


def test_a_bad_byte_in_utf8_is_replaced_alone_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "dump.txt"
    text = f"A Study By Gerv\u00e1sio Of Caf\u00e9s\n{ABSTRACT}\nSecond Title\n{ABSTRACT}\n"
    data = text.encode("utf-8").replace(b"Second", b"Sec\xe1ond")  # one stray latin-1 byte
    path.write_bytes(data)
    listing = read_listing(path, now=NOW)
    titles = [entry.title for entry in listing.entries]
    assert titles == ["A Study By Gerv\u00e1sio Of Caf\u00e9s", "Sec\ufffdond Title"]
    assert listing.notes == ["1 byte that is not valid UTF-8 replaced with U+FFFD (line 3)"]
    path.write_bytes(b"\xef\xbb\xbf" + data)  # the same behind a byte-order mark
    assert [entry.title for entry in read_listing(path, now=NOW).entries] == titles


# --- listing dates -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "month", "day", "expected"),
    [
        (datetime(2024, 3, 12, tzinfo=UTC), 3, 11, date(2024, 3, 11)),
        (datetime(2024, 3, 10, tzinfo=UTC), 3, 11, date(2024, 3, 11)),
        (datetime(2024, 3, 9, tzinfo=UTC), 3, 11, date(2024, 3, 11)),
        (datetime(2024, 3, 8, tzinfo=UTC), 3, 11, date(2023, 3, 11)),
        (datetime(2024, 1, 2, tzinfo=UTC), 12, 30, date(2023, 12, 30)),
        (datetime(2024, 12, 31, tzinfo=UTC), 1, 1, date(2025, 1, 1)),
        (datetime(2025, 3, 1, tzinfo=UTC), 2, 29, date(2024, 2, 29)),
    ],
)
def test_year_of_a_dateless_listing(now: datetime, month: int, day: int, expected: date) -> None:
    assert resolve_year(month, day, now) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Mar 11", date(2024, 3, 11)),
        ("March 11", date(2024, 3, 11)),
        ("Mar 11, 2023", date(2023, 3, 11)),
        ("2022-03-11", date(2022, 3, 11)),
        ("Feb 30", None),
    ],
)
def test_date_chrome_lines(tmp_path: Path, line: str, expected: date | None) -> None:
    path = tmp_path / "dump.txt"
    path.write_text(f"{line}\nA Title\n{ABSTRACT}\n", "utf-8")
    _, listing_date, entries = read(path)
    assert listing_date == expected
    assert [e.title for e in entries] == ["A Title"]


def test_sniffing_ignores_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "listing.json"
    path.write_text(f"A Title\n{ABSTRACT}\n", "utf-8")
    assert read_listing(path, now=NOW).layout == "hf-text-a"
