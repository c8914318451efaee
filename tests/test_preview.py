"""preview and search from the command line, on the example dumps (and the real ones when present)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from digest.cli import main
from tests.conftest import EXAMPLE_A, EXAMPLE_B, REAL_A, REAL_B

# Each case: a layout-A dump, a layout-B dump ingested after it with a new federated paper,
# an interest about federated learning, and a word in the title of a paper of A that its
# ^2 weight lifts above the federated ones (in the examples, "contrastive" alone does not).
CASES = [
    pytest.param(EXAMPLE_A, EXAMPLE_B, "federated", "contrastive", id="examples"),
    pytest.param(
        REAL_A,
        REAL_B,
        '"federated learning"',
        "segmentation",
        id="real",
        marks=pytest.mark.real_dumps,
    ),
]
# Each case: the dumps, and a word that is in the titles of more than three of their papers.
SEARCH_CASES = [
    pytest.param([EXAMPLE_A, EXAMPLE_B], "language", id="examples"),  # 4 titles
    pytest.param([REAL_A, REAL_B], "segmentation", id="real", marks=pytest.mark.real_dumps),
]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIGEST_CONFIG", raising=False)
    return tmp_path


def out_json(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    data: dict[str, object] = json.loads(capsys.readouterr().out)
    return data


@pytest.mark.parametrize(("dump_a", "dump_b", "federated", "weighted"), CASES)
def test_preview_waits_for_new_papers_then_ranks_them(
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    dump_a: Path,
    dump_b: Path,
    federated: str,
    weighted: str,
) -> None:
    assert main(["ingest", str(dump_a)]) == 0
    assert (
        main(
            [
                "subscribe",
                "ada@example.org",
                "--interest",
                federated,
                "--interest",
                f"{weighted} ^2",
            ]
        )
        == 0
    )
    capsys.readouterr()
    # joined after dump A: nothing of it is new to her
    assert main(["preview", "ada@example.org", "--json"]) == 0
    assert out_json(capsys)["papers"] == []
    # --all ranks the store instead
    assert main(["preview", "ada@example.org", "--all", "--json"]) == 0
    papers = out_json(capsys)["papers"]
    assert isinstance(papers, list) and papers
    assert all({"title", "score", "matched"} <= set(p) for p in papers)
    scores = [p["score"] for p in papers]
    assert scores == sorted(scores, reverse=True)
    assert weighted in papers[0]["title"].lower()  # the weighted interest leads
    # a dump ingested after she joined is hers
    assert main(["ingest", str(dump_b)]) == 0
    capsys.readouterr()
    assert main(["preview", "ada@example.org", "--json"]) == 0
    fresh = out_json(capsys)["papers"]
    assert isinstance(fresh, list) and fresh
    assert any("Federated" in p["title"] for p in fresh)
    html = workdir / "next.html"
    assert main(["preview", "ada@example.org", "--out", str(html)]) == 0
    assert "<html" in html.read_text().lower()


@pytest.mark.parametrize(("dumps", "word"), SEARCH_CASES)
def test_search_uses_the_interest_language(
    workdir: Path, capsys: pytest.CaptureFixture[str], dumps: list[Path], word: str
) -> None:
    assert main(["ingest", *map(str, dumps)]) == 0
    capsys.readouterr()
    assert main(["search", '"federated learning" -survey', "--json"]) == 0
    papers = out_json(capsys)["papers"]
    assert isinstance(papers, list) and papers
    for paper in papers:
        assert any("federated" in t.lower() for hit in paper["matched"] for t in hit["terms"])
    assert main(["search", f"title:{word}", "--json", "--limit", "3"]) == 0
    titles = [p["title"] for p in out_json(capsys)["papers"]]  # type: ignore[union-attr]
    assert len(titles) == 3 and all(word in t.lower() for t in titles)
    assert main(["search", '"unclosed']) == 2
    assert "position" in capsys.readouterr().err


def test_preview_of_an_empty_store_says_so(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["subscribe", "ada@example.org", "--interest", "graphs"]) == 0
    capsys.readouterr()
    for extra in ([], ["--all"]):
        assert main(["preview", "ada@example.org", *extra]) == 0
        out = capsys.readouterr().out
        assert "the store is empty" in out and "try --all" not in out
    assert main(["ingest", str(EXAMPLE_A)]) == 0
    capsys.readouterr()
    assert main(["preview", "ada@example.org"]) == 0  # she joined before: all of it is new
    out = capsys.readouterr().out
    assert "the store is empty" not in out and out.startswith(" 1. ")


@pytest.mark.parametrize("name", ["digest.pdf", "digest", "digest.HTML.zip"])
def test_preview_refuses_an_unknown_output_kind(
    workdir: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    assert main(["subscribe", "ada@example.org", "--interest", "graphs"]) == 0
    capsys.readouterr()
    assert main(["preview", "ada@example.org", "--out", name]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"digest: --out {name}: cannot render") and ".eml" in err
    assert not (workdir / name).exists()
    assert main(["preview", "ada@example.org", "--out", "digest.TXT"]) == 0
    assert (workdir / "digest.TXT").read_text().strip()


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_first_search_after_a_deferred_index_shows_progress_on_a_terminal(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["ingest", "--defer-index", str(EXAMPLE_A), str(EXAMPLE_B)]) == 0
    capsys.readouterr()
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["search", "diffusion"]) == 0
    shown = terminal.getvalue()
    assert "building the search index: 0 papers" in shown
    assert shown.endswith("\r\033[K")  # the line is cleared before the results
    assert "iffusion" in capsys.readouterr().out
    # built now: the next search says nothing; and only a terminal is ever told
    terminal.seek(0)
    terminal.truncate()
    assert main(["search", "diffusion"]) == 0
    assert terminal.getvalue() == "\r\033[K" or terminal.getvalue() == ""
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert main(["search", "--limit", "0", "x"]) == 2
