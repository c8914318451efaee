"""The structured readers: daily-papers JSON, arXiv Atom and RSS, the metadata snapshot."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from digest.errors import ListingError
from digest.ingest.listing import Entry
from digest.ingest.readers import read_listing
from digest.ingest.readers import snapshot as snapshot_module
from digest.ingest.readers.decoding import collapse

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NOW = datetime(2024, 3, 12, 9, 0, tzinfo=UTC)


def entries_of(path: Path) -> list[Entry]:
    return list(read_listing(path, now=NOW).entries)


# --- Hugging Face daily-papers JSON ---------------------------------------------------------


def test_daily_papers_json() -> None:
    listing = read_listing(FIXTURES / "hf_daily_papers.json", now=NOW)
    entries = list(listing.entries)
    assert listing.layout == "hf-json"
    assert listing.listing_date == date(2024, 3, 11)  # two of three posted that day
    first = entries[0]
    assert first == Entry(
        title="Sparse Mixture-of-Experts Routing for Long-Context Language Models",
        abstract=(
            "We study routing in sparse mixture-of-experts language models when the context"
            " extends to a million tokens. A load-aware router keeps expert use balanced."
        ),
        arxiv_id="2403.05525",
        authors="Mira Castellanos, Jonas Weber",
        url="https://huggingface.co/papers/2403.05525",
        published=date(2024, 3, 8),
    )
    assert [e.arxiv_id for e in entries] == ["2403.05525", "2403.06101", "2403.04420"]
    assert entries[2].abstract == ""
    assert entries[2].authors == ""


def test_daily_papers_json_accepts_bare_paper_objects(tmp_path: Path) -> None:
    path = tmp_path / "papers.json"
    paper = {"id": "2403.00001", "title": "A Title", "summary": "Text.", "authors": ["Ann Lee"]}
    path.write_text(json.dumps([paper]), "utf-8")
    [entry] = entries_of(path)
    assert (entry.title, entry.authors, entry.arxiv_id) == ("A Title", "Ann Lee", "2403.00001")
    assert read_listing(path, now=NOW).listing_date is None


def test_daily_papers_json_ids_one_digit_too_long_are_kept_whole(tmp_path: Path) -> None:
    path = tmp_path / "papers.json"
    papers = [{"id": f"2403.12345{n}", "title": f"Paper {n}"} for n in (6, 7)]
    path.write_text(json.dumps(papers), "utf-8")
    entries = entries_of(path)
    # not arXiv ids, so not cut to the same "2403.12345": two papers, each with its own link
    assert [e.arxiv_id for e in entries] == [None, None]
    assert [e.url for e in entries] == [
        "https://huggingface.co/papers/2403.123456",
        "https://huggingface.co/papers/2403.123457",
    ]


def test_daily_papers_json_unpaired_surrogates_are_replaced_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "papers.json"
    path.write_text(
        '[{"paper": {"id": "2403.00001\\ud800", "title": "A \\udc80Title \\ud83d\\ude00",'
        ' "authors": [{"name": "Ann \\udfff"}]}}]',
        "utf-8",
    )
    listing = read_listing(path, now=NOW)
    [entry] = listing.entries
    assert entry.title == "A \ufffdTitle \U0001f600"  # a proper pair is one character
    assert entry.authors == "Ann \ufffd"
    assert entry.url == "https://huggingface.co/papers/2403.00001%EF%BF%BD"
    assert listing.notes == ["3 unpaired surrogate escapes replaced with U+FFFD"]


# --- arXiv Atom API and RSS ----------------------------------------------------------------------


def test_arxiv_atom_api_response() -> None:
    listing = read_listing(FIXTURES / "arxiv_api_query.xml", now=NOW)
    entries = list(listing.entries)
    assert (listing.layout, listing.listing_date) == ("arxiv-atom", None)
    assert entries[0] == Entry(
        title="Contrastive Pretraining of Audio Encoders with Noisy Captions",
        abstract=(
            "We pretrain audio encoders on web captions. Noise in the captions is modelled"
            " explicitly, which improves retrieval by 4 points."
        ),
        arxiv_id="2403.01234",
        authors="Lena Okafor, Tomás Ruiz",
        url="https://arxiv.org/abs/2403.01234",
        published=date(2024, 3, 2),
        revised=date(2024, 3, 5),  # <updated>: the paper's last version
    )
    assert (entries[1].arxiv_id, entries[1].url) == (
        "cs/0112017",
        "https://arxiv.org/abs/cs/0112017",
    )


def test_arxiv_api_error_feed_is_refused() -> None:
    with pytest.raises(
        ListingError, match=r"arXiv API error: incorrect id format for 2403\.999999"
    ):
        read_listing(FIXTURES / "arxiv_api_error.xml", now=NOW)


def test_arxiv_rss_listing() -> None:
    listing = read_listing(FIXTURES / "arxiv_rss_cs_lg.xml", now=NOW)
    entries = list(listing.entries)
    assert (listing.layout, listing.listing_date) == ("arxiv-rss", date(2024, 3, 11))
    assert entries[0] == Entry(
        title="Self-Supervised Pretraining for Tabular Anomaly Detection",
        abstract=(
            "Tabular anomaly detection lacks labels. We pretrain with masked cell prediction"
            " and report gains on 12 benchmarks where x < 0.5."
        ),
        arxiv_id="2403.05001",
        authors="Hana Kobayashi, Omar Haddad",
        url="https://arxiv.org/abs/2403.05001",
        published=date(2024, 3, 11),
    )
    assert entries[1].authors == "Wei Zhang, Sofia Lindqvist"
    assert entries[1].abstract.startswith("We fit scaling laws")


def test_legacy_rdf_feed(tmp_path: Path) -> None:
    path = tmp_path / "cs.LG.rdf"
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<rdf:RDF xmlns="http://purl.org/rss/1.0/"'
        ' xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"'
        ' xmlns:dc="http://purl.org/dc/elements/1.1/">\n'
        '<channel rdf:about="http://arxiv.org/rss/cs.LG"><title>cs.LG</title>'
        "<dc:date>2019-05-02T20:30:00-05:00</dc:date></channel>\n"
        '<item rdf:about="http://arxiv.org/abs/1905.00001">'
        "<title>Robust Policies. (arXiv:1905.00001v1 [cs.LG])</title>"
        "<link>http://arxiv.org/abs/1905.00001</link>"
        "<description>&lt;p&gt;We learn &amp;amp; test robust policies.&lt;/p&gt;</description>"
        '<dc:creator> &lt;a href="http://arxiv.org/find/cs/1/au:+Doe_J/0/1/0/all/0/1"&gt;Jane'
        " Doe&lt;/a&gt;</dc:creator></item>\n</rdf:RDF>\n",
        "utf-8",
    )
    listing = read_listing(path, now=NOW)
    [entry] = list(listing.entries)
    assert (listing.layout, listing.listing_date) == ("arxiv-rss", date(2019, 5, 2))
    assert (entry.title, entry.abstract, entry.authors, entry.arxiv_id) == (
        "Robust Policies",
        "We learn & test robust policies.",
        "Jane Doe",
        "1905.00001",
    )


# --- arXiv metadata snapshot --------------------------------------------------------------------


def test_snapshot_streams_entries() -> None:
    listing = read_listing(FIXTURES / "arxiv_snapshot.jsonl", now=NOW)
    assert listing.layout == "arxiv-snapshot"
    assert listing.listing_date is None
    assert isinstance(listing.entries, Iterator)  # one pass, not a list in memory
    entries = list(listing.entries)
    assert entries[0] == Entry(
        title="Quantized Low-Rank Adapters for Multilingual Speech Models",
        abstract=(
            "Adapting multilingual speech models is costly. We quantize low-rank adapters to"
            " four bits and keep word error rates within 0.3 points. Code is released."
        ),
        arxiv_id="2403.00017",
        authors="Ines Moreau, Kwame Mensah and Yuki Tanaka",
        url="https://arxiv.org/abs/2403.00017",
        published=date(2024, 2, 29),
        line=1,
        revised=date(2024, 3, 6),  # update_date
    )
    assert (entries[1].arxiv_id, entries[1].title, entries[1].published) == (
        "hep-th/9901001",
        "Strings on Curved Backgrounds",
        date(1999, 1, 1),
    )
    # No versions: the update date; non-ASCII spacing and tabs collapse too.
    assert entries[2].published == date(2008, 12, 13)
    assert entries[2].title == "Sparsity-certifying Graph Decompositions"
    assert entries[2].abstract == "We describe a new algorithm, the pebble game."
    assert entries[2].authors == "L. Balázs"


def test_snapshot_skips_blank_lines_and_a_byte_order_mark(tmp_path: Path) -> None:
    lines = (FIXTURES / "arxiv_snapshot.jsonl").read_bytes().split(b"\n")
    path = tmp_path / "snap.json"
    path.write_bytes(b"\xef\xbb\xbf" + lines[0] + b"\r\n\n" + lines[1] + b"\n")
    assert [(e.line, e.arxiv_id) for e in entries_of(path)] == [
        (1, "2403.00017"),
        (3, "hep-th/9901001"),
    ]


def test_snapshot_broken_line_is_reported_when_reached(tmp_path: Path) -> None:
    good = (FIXTURES / "arxiv_snapshot.jsonl").read_text("utf-8").splitlines()
    path = tmp_path / "snap.json"
    path.write_text("\n".join([good[0], good[1], '{"id": "2403.00099", "title": "Cut', good[2]]))
    entries = iter(read_listing(path, now=NOW).entries)
    assert next(entries).line == 1
    assert next(entries).line == 2
    with pytest.raises(ListingError) as caught:
        next(entries)
    assert caught.value.line == 3
    assert str(caught.value).startswith(f"{path}:3: not valid JSON")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("[1, 2]", "not a JSON object"),
        ('{"id": 7, "title": "T"}', 'without a string "id" and "title"'),
        ('{"id": "2403.00001", "title": "  \\n "}', "empty title"),
        ('{"id": "not-an-id", "title": "T"}', "not an arXiv id"),
        ('{"id": "2403.00001", "title": "T"} trailing', "extra data"),
    ],
)
def test_snapshot_bad_records_name_their_line(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "snap.json"
    first = (FIXTURES / "arxiv_snapshot.jsonl").read_text("utf-8").splitlines()[0]
    path.write_text(f"{first}\n{line}\n", "utf-8")
    with pytest.raises(ListingError, match=reason) as caught:
        entries_of(path)
    assert caught.value.line == 2


def test_snapshot_invalid_utf8_names_its_line(tmp_path: Path) -> None:
    first = (FIXTURES / "arxiv_snapshot.jsonl").read_bytes().split(b"\n")[0]
    path = tmp_path / "snap.json"
    path.write_bytes(first + b'\n{"id": "2403.00002", "title": "Bad \xff byte"}\n')
    with pytest.raises(ListingError, match="not valid UTF-8") as caught:
        entries_of(path)
    assert caught.value.line == 2


@pytest.mark.parametrize(
    "text",
    [
        "plain",
        "  leading and trailing  ",
        "wrapped\nat\nnewlines\n",
        "title and\n  LHC energies",
        "double  spaces.  Old style",
        "tab\there",
        "carriage\r\nreturn",
        "form\x0cfeed and vertical\x0btab",
        "non\u00a0breaking and caf\u00e9",
        "\n\n",
        "",
        "file\x1cseparator and \x1fothers",
        "a control\x01character and delete\x7f",
        "em\u2003space",
    ],
)
def test_fast_collapses_match_the_plain_rule(text: str) -> None:
    assert collapse(text) == " ".join(text.split())
    if "\x1c" not in text and "\x1f" not in text:  # the snapshot's rule leaves these
        assert snapshot_module._collapse(text) == " ".join(text.split())


def test_snapshot_builds_entries_positionally() -> None:
    # The fast path depends on Entry's field order; a reordering must be noticed.
    assert snapshot_module._make_entry is Entry
