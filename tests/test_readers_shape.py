"""Only text with the shape of a papers page is read as one: documents are refused whole.

The documents are this project's own (README, architecture notes, benchmark notes) and two
licence texts written for these tests (hard-wrapped and indented, and one paragraph a
line as a web page gives it); the listings are the examples, fixtures written for the
odd cases (one paper, very long abstracts, a messy copy) and, when beside the repo, the
two real dumps.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from digest.cli import main
from digest.errors import ListingError
from digest.ingest.dumps import Clock, ingest_inbox
from digest.ingest.readers import read_listing
from digest.ingest.readers.shape import MAX_FAULTY, Line, line_fault
from digest.store.engine import open_store
from tests.conftest import EXAMPLE_DUMPS, REAL_A, REAL_B, REPO

NOW = datetime(2024, 3, 14, 9, 0, tzinfo=UTC)
FIXTURES = REPO / "tests" / "fixtures"
DOCUMENTS = [
    REPO / "README.md",
    REPO / "docs" / "ARCHITECTURE.md",
    REPO / "bench" / "README.md",
    FIXTURES / "not_listings" / "licence.txt",
    FIXTURES / "not_listings" / "licence-unwrapped.txt",
]
LISTINGS = [
    *(pytest.param(path, id=path.name) for path in sorted(EXAMPLE_DUMPS.iterdir())),
    pytest.param(FIXTURES / "hf_text_one_paper.txt", id="one paper"),
    pytest.param(FIXTURES / "hf_text_long_abstracts.txt", id="long abstracts"),
    pytest.param(FIXTURES / "hf_text_messy.txt", id="messy"),
    pytest.param(FIXTURES / "hf_text_layout_b.txt", id="layout b"),
    pytest.param(REAL_A, id="real a", marks=pytest.mark.real_dumps),
    pytest.param(REAL_B, id="real b", marks=pytest.mark.real_dumps),
]
ABSTRACT = (
    "We study a problem that matters. Our method improves the baseline by a wide margin"
    " on every benchmark we tried, and the code is released."
)


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: path.name)
def test_documents_are_refused_naming_the_file_and_a_line(path: Path) -> None:
    with pytest.raises(ListingError) as caught:
        read_listing(path, now=NOW)
    error = caught.value
    assert error.path == str(path)
    assert error.line is not None and error.line >= 1
    assert "reads as a document, not a papers-page dump" in error.reason
    faulty, papers = map(int, re.findall(r"(\d+) of (\d+) would-be papers", error.reason)[0])
    # not a near thing: at least twice the share of faulty papers that is refused
    assert faulty * MAX_FAULTY >= 2 * papers, error.reason
    assert "\n" not in str(error)


@pytest.mark.parametrize("path", LISTINGS)
def test_listings_of_every_known_shape_are_read(path: Path) -> None:
    listing = read_listing(path, now=NOW)
    entries = list(listing.entries)
    assert entries and any(entry.abstract for entry in entries)


def test_one_paper_and_long_abstracts_pair_as_written() -> None:
    (one,) = read_listing(FIXTURES / "hf_text_one_paper.txt", now=NOW).entries
    assert one.title == "Curriculum Distillation for Small Vision-Language Models"
    assert one.abstract.endswith("while keeping its latency.")
    long = list(read_listing(FIXTURES / "hf_text_long_abstracts.txt", now=NOW).entries)
    assert len(long) == 4
    assert all(len(entry.abstract) > 3000 for entry in long)


def test_a_markdown_page_of_one_heading_and_a_paragraph_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.md"
    path.write_text(f"# Reading notes\n{ABSTRACT}\n", "utf-8")
    with pytest.raises(ListingError) as caught:
        read_listing(path, now=NOW)
    assert (caught.value.line, "a Markdown heading" in caught.value.reason) == (1, True)


def test_one_stray_line_in_a_long_dump_is_tolerated(tmp_path: Path) -> None:
    lines = (EXAMPLE_DUMPS / "trending-layout-a.txt").read_text("utf-8").splitlines()
    lines.insert(5, "- share this page")  # a stray bullet, as a careless copy might catch
    path = tmp_path / "dump.txt"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    assert len(list(read_listing(path, now=NOW).entries)) == 11


def test_a_dump_pasted_with_a_margin_is_still_a_dump(tmp_path: Path) -> None:
    text = (EXAMPLE_DUMPS / "daily-mar12-layout-b.txt").read_text("utf-8")
    path = tmp_path / "dump.txt"
    path.write_text("".join(f"    {line}" for line in text.splitlines(keepends=True)), "utf-8")
    assert len(list(read_listing(path, now=NOW).entries)) == 9


@pytest.mark.parametrize(
    ("raw", "following", "fault"),
    [
        ("## Install", None, "a Markdown heading"),
        ("```sh", None, "a code fence"),
        ("| setting | default |", None, "a table row"),
        ("- a bullet point", None, "a list item"),
        ("* another one", None, "a list item"),
        ("3. Disclaimer of Warranty.", None, "a numbered item"),
        ("(b) the second case", None, "a numbered item"),
        ("> quoted text", None, "a quotation"),
        ("---", None, "a rule"),
        ("    pip install digest", None, "an indented block"),
        ("See https://example.org/docs", None, "a link where a title should be"),
        ("Run `digest init` first", None, "inline code where a title should be"),
        ("TERMS AND CONDITIONS", None, "an all-capitals heading"),
        ("picks for each subscriber the new papers that match their", None, "cut at the end"),
        ("Everyone may copy exact copies,", None, "cut at the end"),
        ("remembers every paper it has ever", "seen, picks for each", "going on into the next"),
        # the shapes of real titles: none of these is a fault
        ("xLSTM: Extended Long Short-Term Memory", "We revisit LSTMs.", None),
        ("Is Attention All You Need? A Study of Sixteen Heads", None, None),
        ("1.58-bit LLMs Are All You Need", None, None),
        ("3D Gaussian Splatting at Scale", None, None),
        ("Scaling Laws for Neural Language Models", "iVideoGPT: Interactive", None),
        ("Attention Is All You Need Twice.", "what follows", None),
        ("GPT-4 Technical Report", None, None),
        ("LLaMA: Open and Efficient Foundation Language Models", None, None),
    ],
)
def test_line_faults(raw: str, following: str | None, fault: str | None) -> None:
    after = Line(2, following, following) if following is not None else None
    found = line_fault(Line(1, raw, " ".join(raw.split())), after, as_title=True)
    if fault is None:
        assert found is None
    else:
        assert found is not None and fault in found


def test_abstract_lines_may_carry_links_and_end_cut_short() -> None:
    line = "Code at https://github.com/x/y and results in `table 2`, as well as the"
    assert line_fault(Line(1, line, line), None, as_title=False) is None


def test_cli_ingest_refuses_a_readme_and_stores_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["init"]) == 0
    capsys.readouterr()
    readme = REPO / "README.md"
    code = main(["ingest", str(readme), "--json"])
    out = capsys.readouterr().out
    assert code == 1
    (dump,) = json.loads(out)["dumps"]
    assert dump["status"] == "failed"
    assert dump["error"].startswith(f"{readme}:1: reads as a document")
    assert main(["ingest", str(readme)]) == 1
    assert f"digest: {readme}:1: reads as a document" in capsys.readouterr().err
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["papers"]["total"] == 0


def test_inbox_sets_a_document_aside_in_failed_with_its_reason(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "LICENSE").write_bytes((FIXTURES / "not_listings" / "licence.txt").read_bytes())
    engine = open_store(f"sqlite:///{tmp_path / 'digest.db'}")
    try:
        (result,) = ingest_inbox(engine, inbox, clock=Clock(lambda: NOW))
    finally:
        engine.dispose()
    assert result.status == "failed" and not result.retry
    assert (inbox / "failed" / "LICENSE").is_file()
    note = (inbox / "failed" / "LICENSE.error").read_text("utf-8")
    assert "LICENSE:1: reads as a document, not a papers-page dump" in note
    assert not (inbox / "LICENSE").exists()
