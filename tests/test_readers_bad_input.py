"""Files that are not listings fail with a one-line ListingError naming the file."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from digest.errors import ListingError
from digest.ingest.readers import decoding, open_listing, read_listing

NOW = datetime(2024, 3, 12, 9, 0, tzinfo=UTC)
ABSTRACT = "We study a problem. Our method improves the baseline on every benchmark we tried."

HTML_502 = (
    "<!DOCTYPE html>\n<html>\n<head><title>502 Bad Gateway</title></head>\n"
    "<body>\n<center><h1>502 Bad Gateway</h1></center>\n<hr><center>nginx</center>\n"
    "</body>\n</html>\n"
)
BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    ' <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">\n]>\n'
    '<feed xmlns="http://www.w3.org/2005/Atom"><entry><title>&lol2;</title></entry></feed>\n'
)


def refused(path: Path) -> ListingError:
    """The error reading ``path`` raises, checked for the common promises."""
    with pytest.raises(ListingError) as caught:
        listing = read_listing(path, now=NOW)
        list(listing.entries)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    assert "\n" not in message
    assert len(message) < 300 + len(str(path))
    return caught.value


CASES: dict[str, tuple[bytes, str, int | None]] = {
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "binary data", 3),
    "controls": (bytes(range(1, 32)) * 200, "binary data", None),
    "empty": (b"", "empty file", None),
    "whitespace": (b"  \n\t\r\n   \n", "only whitespace", None),
    "long line": (b"word " * (8 * 1024 * 1024 // 5), "not a paper listing", 1),
    "long json line": (b"{" + b"x" * (2 * 1024 * 1024), "not valid JSON", 1),
    "html error page": (HTML_502.encode(), r"an HTML page \(502 Bad Gateway\)", None),
    "html without doctype": (b"<html><title>Oops</title></html>", r"HTML page \(Oops\)", None),
    "entity expansion": (BILLION_LAUGHS.encode(), "DOCTYPE", 2),
    "broken xml": (b'<feed xmlns="http://www.w3.org/2005/Atom">\n<entry>\n</feed>', "XML", 3),
    "other xml": (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "neither an Atom", None),
    "json object": (b'{"error": "rate limited"}', "neither an arXiv snapshot", 1),
    "pretty json object": (b'{\n  "papers": []\n}\n', "not a daily-papers listing", None),
    "json numbers": (b"[1, 2, 3]", "paper #1 is a JSON number", None),
    "json no title": (b'[{"paper": {"id": "2403.00001"}}]', "paper #1 has no title", None),
    "json empty array": (b"[]", "array is empty", None),
    "broken json": (b'[{"paper": \n{"id": ', "not valid JSON", 2),
    "deep json": (b"[" * 100_000, "nested too deeply", None),
    "deep json first line": (b'{"id": "2403.00001", "a": ' + b"[" * 100_000, "too deeply", 1),
    "deep snapshot line": (
        b'{"id": "2403.00001", "title": "A Title"}\n{"id": "2403.00002", "title": "B", "x": '
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}\n",
        "nested too deeply",
        2,
    ),
    "long json number": (
        b'[{"paper": {"id": "2403.00001", "title": "T"}, "upvotes": ' + b"9" * 5000 + b"}]",
        "not valid JSON: .*4300 digits",
        None,
    ),
    "long snapshot number": (
        b'{"id": "2403.00001", "title": "T", "n": ' + b"9" * 5000 + b"}\n",
        "not valid JSON: .*4300 digits",
        1,
    ),
    "snapshot lone surrogate": (
        b'{"id": "2403.00001", "title": "T \\udc80"}\n',
        r"unpaired surrogate escape \(\\udc80\)",
        1,
    ),
    "snapshot lone surrogate beside utf-8": (
        '{"id": "2403.00001", "title": "Caf\u00e9", "authors": "A \\ud800"}\n'.encode(),
        r"unpaired surrogate escape \(\\ud800\)",
        1,
    ),
    "snapshot id one digit too long": (
        b'{"id": "2403.00001", "title": "A"}\n{"id": "2403.123456v1", "title": "B"}\n',
        "not an arXiv id: '2403.123456v1'",
        2,
    ),
    "titles only": (b"Hello\nWorld\n", "no abstracts found", None),
    "utf-16 bom but odd bytes": (b"\xff\xfeA\x00B", "byte-order mark says utf-16", None),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_not_a_listing(tmp_path: Path, name: str) -> None:
    content, reason, line = CASES[name]
    path = tmp_path / "dump.txt"
    path.write_bytes(content)
    error = refused(path)
    assert error.path == str(path)
    assert re.search(reason, error.reason), error.reason
    assert error.line == line


def test_missing_file_and_folder(tmp_path: Path) -> None:
    assert "cannot read file" in refused(tmp_path / "missing.txt").reason
    assert "folder" in refused(tmp_path).reason


def test_only_regular_files_are_read(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "a FIFO, not a regular file" in refused(fifo).reason  # no writer: would block
    assert "a character device" in refused(Path("/dev/zero")).reason  # would never end


def test_symbolic_links_are_refused_when_asked(tmp_path: Path) -> None:
    target = tmp_path / "dump.txt"
    target.write_text(f"A Title\n{ABSTRACT}\n", "utf-8")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    with open_listing(link) as followed:
        assert followed.read() == target.read_bytes()
    with pytest.raises(ListingError, match=f"a symbolic link to {target}"):
        open_listing(link, follow_symlinks=False)


def test_file_over_the_size_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decoding, "MAX_BYTES", 1024)
    path = tmp_path / "dump.txt"
    path.write_text(f"A Title\n{ABSTRACT}\n" * 40, "utf-8")
    assert "larger than" in refused(path).reason


def test_snapshot_with_a_broken_line_in_the_middle(tmp_path: Path) -> None:
    record = {"id": "2403.00001", "title": "A Title", "abstract": ABSTRACT}
    lines = [json.dumps(record)] * 5
    lines[3] = lines[3][:-9]  # truncated mid-way, as a cut download would leave it
    path = tmp_path / "snapshot.json"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    seen: list[int] = []
    with pytest.raises(ListingError) as caught:
        for entry in read_listing(path, now=NOW).entries:
            seen.append(entry.line)
    assert seen == [1, 2, 3]
    assert caught.value.line == 4
    assert str(caught.value).startswith(f"{path}:4: ")
