"""The file of feed entries: what is written there reads back as the entries it was made of."""

from __future__ import annotations

import errno
import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.feeds import kept_entries
from digest.feeds.kept_entries import EntryFile, EntryWriter, Made, filled, group
from digest.feeds.site import FeedSite
from digest.feeds.xml import Entry

SITE = FeedSite("https://papers.example.org", "Paper Digest", "papers.example.org", 100)
pieces = st.binary(min_size=0, max_size=40)


@st.composite
def papers_entries(draw: st.DrawFn) -> list[tuple[str, Made]]:
    """A paper's entries under several explanations: some pieces the same object in all
    of them (as a paper's shape is), some the same bytes in both kinds (as a summary is),
    some their own, and empty pieces where a reader's token goes."""
    shared = draw(st.lists(pieces, min_size=1, max_size=5))
    count = draw(st.integers(1, 4))
    entries: list[tuple[str, Made]] = []
    for number in range(count):
        own = draw(st.lists(pieces, min_size=0, max_size=3))
        made = []
        for _ in ("atom", "rss"):
            order = draw(st.permutations(shared + own))
            holes = sorted(draw(st.sets(st.integers(0, len(order)), max_size=3)))
            laid: list[bytes] = []
            at: list[int] = []
            for place, piece in enumerate(order):
                if place in holes:
                    at.append(len(laid))
                    laid.append(b"")
                laid.append(piece)
            if len(order) in holes:
                at.append(len(laid))
                laid.append(b"")
            digest = hashlib.sha256(b"|".join(laid)).digest()
            made.append(Entry(tuple(laid), tuple(at), digest))
        published = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(
            seconds=draw(st.integers(0, 10**8)), microseconds=draw(st.integers(0, 999_999))
        )
        guid = f"tag:papers.example.org,2026:{draw(st.text(max_size=8))}"
        entries.append((f"why {number}", Made(published, guid, "key ü", made[0], made[1])))
    return entries


@settings(max_examples=60, deadline=None)
@given(papers=st.lists(papers_entries(), min_size=1, max_size=4), token=st.binary(max_size=12))
def test_every_entry_reads_back_as_it_was_made(
    tmp_path_factory: pytest.TempPathFactory, papers: list[list[tuple[str, Made]]], token: bytes
) -> None:
    path = tmp_path_factory.mktemp("kept") / kept_entries.FILE
    writer = EntryWriter(path, SITE)
    for number, entries in enumerate(papers):
        writer.add(group(number, b"stamp %d" % number, entries))
    writer.commit()
    file = EntryFile.open(path, SITE)
    assert file is not None
    places = file.places()
    try:
        for number, entries in enumerate(papers):
            for explanation, made in entries:
                shown = file.shown(
                    places[kept_entries.entry_id(number, kept_entries.named(explanation))]
                )
                assert shown.guid.decode() == made.guid and shown.paper_key == made.paper_key
                assert shown.published == (made.published - datetime(1970, 1, 1, tzinfo=UTC)) // (
                    timedelta(microseconds=1)
                )
                for atom, entry in ((True, made.atom), (False, made.rss)):
                    assert b"".join(filled(shown, atom, token)) == entry.filled(token)
                assert (shown.atom_digest, shown.rss_digest) == (made.atom.digest, made.rss.digest)
        assert kept_entries.records_of(file.groups) == sum(map(len, papers))
    finally:
        file.close()


def test_a_papers_shared_pieces_are_written_once(tmp_path: Path) -> None:
    shape = b"<title>A paper</title>" * 20  # the same object in every entry of the paper
    entries = []
    for number in range(5):
        summary = b"<summary %d/>" % number
        atom = Entry((shape, b"", summary), (1,), bytes(32))
        rss = Entry((shape.replace(b"title", b"name"), summary), (), bytes(32))
        entries.append((f"why {number}", Made(datetime.now(UTC), "g", "k", atom, rss)))
    _, _, data, records = group(7, b"stamp", entries)
    assert data.count(shape) == 1 and data.count(b"<summary 3/>") == 1
    assert len(records) == 5


@pytest.mark.parametrize(
    "damage",
    ["cut short", "another site", "not ours", "index moved"],
)
def test_a_file_that_cannot_be_used_is_not_used(tmp_path: Path, damage: str) -> None:
    path = tmp_path / kept_entries.FILE
    writer = EntryWriter(path, SITE)
    entry = Entry((b"<entry/>",), (), bytes(32))
    writer.add(group(1, b"stamp", [("why", Made(datetime.now(UTC), "g", "k", entry, entry))]))
    writer.commit()
    site = SITE
    data = path.read_bytes()
    if damage == "cut short":
        path.write_bytes(data[:-5])
    elif damage == "another site":
        site = FeedSite("https://other.example.org", "Paper Digest", "other.example.org", 100)
    elif damage == "not ours":
        path.write_bytes(b"something else entirely, " * 4)
    else:
        path.write_bytes(data[:-16] + (len(data) + 1).to_bytes(8, "little") + data[-8:])
    assert EntryFile.open(path, site) is None
    assert EntryFile.open(tmp_path / "none here", SITE) is None


@pytest.mark.parametrize("in_kernel", [True, False])
def test_groups_copied_from_the_file_before_read_as_they_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_kernel: bool
) -> None:
    if not in_kernel:  # a system without copy_file_range between these files

        def refused(*args: object) -> int:
            raise OSError(errno.EXDEV, "not here")

        monkeypatch.setattr(os, "copy_file_range", refused)
    old_path, new_path = tmp_path / "old", tmp_path / "new"
    writer = EntryWriter(old_path, SITE)
    made = {}
    for paper in range(5):
        entry = Entry((b"<entry %d>" % paper, b"", b"</entry>"), (1,), bytes([paper]) * 32)
        made[paper] = Made(datetime(2026, 3, paper + 1, tzinfo=UTC), f"g{paper}", "k", entry, entry)
        writer.add(group(paper, b"stamp", [("why", made[paper])]))
    writer.commit()
    old = EntryFile.open(old_path, SITE)
    assert old is not None
    kept = [g for g in old.groups if g[0] in (0, 1, 3)]  # two runs of groups side by side
    again = EntryWriter(new_path, SITE)
    again.copy(old, kept[::-1])
    again.add(group(9, b"stamp", [("why", made[4])]))
    again.commit()
    old.close()
    new = EntryFile.open(new_path, SITE)
    assert new is not None
    assert [g[0] for g in new.groups] == [0, 1, 3, 9]
    places = new.places()
    for paper in (0, 1, 3, 9):
        shown = new.shown(places[kept_entries.entry_id(paper, kept_entries.named("why"))])
        source = made[paper if paper != 9 else 4]
        assert b"".join(filled(shown, True, b"T")) == source.atom.filled(b"T")
        assert shown.guid.decode() == source.guid
    new.close()
