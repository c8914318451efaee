"""The seen-papers diff: each listing entry is a new paper or one the store already knows.

A paper is known by its stable key (its arXiv id, else its normalized title); an entry
with an arXiv id also meets a paper first seen by title alone. Known papers are counted
seen again and keep the fuller text; new ones are inserted with the ingest's sequence number.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from digest.clock import as_utc
from digest.ingest.identity import DAMAGE, damaged_twin, paper_keys
from digest.ingest.listing import Entry
from digest.store import papers
from digest.store.engine import next_ingest_sequence

BATCH = 2_000  # entries per lookup/insert round trip; bounds memory on back-fills
TWINS = 500  # known titles with the same clean start, tried against a damaged one


@dataclass
class DiffCounts:
    """What a batch of entries did to the store: the counts, the ingest number the new
    papers carry, and the ids of the known papers seen again (what a dump brought)."""

    entries: int = 0
    new: int = 0
    seen: int = 0
    seq: int = 0
    again: array[int] = field(default_factory=lambda: array("q"))


def _chunks(items: Iterable[Entry], size: int) -> Iterator[list[Entry]]:
    chunk: list[Entry] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _merge(old_title: str, old_abstract: str, entry: Entry) -> tuple[str, str]:
    """The text kept when a paper is seen again: the fuller abstract wins, ties by order.

    Deterministic in the two inputs, so ingesting dumps in either order gives the same store.
    """
    mine = (len(entry.abstract), entry.abstract, entry.title)
    theirs = (len(old_abstract), old_abstract, old_title)
    best = max(mine, theirs)
    # a title with an undecodable byte never replaces its undamaged twin
    titles = sorted((entry.title, old_title), key=lambda title: (DAMAGE in title, title))
    title = best[2] if (DAMAGE in best[2]) == (DAMAGE in titles[0]) else titles[0]
    return title, best[1]


def upsert_entries(conn: Connection, entries: Iterable[Entry], now: datetime) -> DiffCounts:
    """Record entries as seen at ``now``: insert the new, bump the known; return the counts.

    ``now`` must be unique to this call: a paper whose ``last_seen`` already equals it was
    met earlier in the same dump and is not counted twice. New papers get the next ingest
    sequence number, which digests use as their "new since" cut-off (never the clock).
    """
    counts = DiffCounts()
    now = as_utc(now, naive="refuse")
    seq = counts.seq = next_ingest_sequence(conn)
    # An entry with an arXiv id can only meet its paper under another key if the store has
    # papers known by title alone; a back-fill of the snapshot into a fresh store has none.
    title_only = papers.has_title_only_papers(conn)
    for chunk in _chunks(entries, BATCH):
        counts.entries += len(chunk)
        keyed = [(entry, *paper_keys(entry.title, entry.arxiv_id)) for entry in chunk]
        by_key, by_title = _known(conn, keyed, title_only)
        inserts: dict[str, dict[str, Any]] = {}
        updates: dict[int, dict[str, Any]] = {}
        for entry, key, title_key in keyed:
            row: dict[str, Any] | None = by_key.get(key) or _same_paper(
                by_title.get(title_key), entry
            )
            if row is None and entry.arxiv_id is None:
                row = _undamaged_twin(conn, entry)
            if row is None:
                _add_new(inserts, entry, key, title_key, now, seq)
            else:
                _add_seen(updates, row, entry, key, now, counts)
        fresh_rows = list({id(row): row for row in inserts.values()}.values())
        title_only = title_only or any(row["arxiv_id"] is None for row in fresh_rows)
        counts.new += len(fresh_rows)
        if fresh_rows:
            papers.insert_papers(conn, fresh_rows)
        if updates:
            papers.update_papers(conn, list(updates.values()), now)
    return counts


Keyed = list[tuple[Entry, str, str]]  # an entry, its key and its title key


def _known(
    conn: Connection, keyed: Keyed, title_only: bool
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The stored papers the entries may be: by key, and by title key (the first of each)."""
    by_key = {row["key"]: row for row in papers.lookup(conn, "key", [k for _, k, _ in keyed])}
    by_title: dict[str, dict[str, Any]] = {}
    missing = [
        title_key
        for entry, key, title_key in keyed
        if key not in by_key and (title_only or entry.arxiv_id is None)
    ]
    if missing:
        for found in papers.lookup(conn, "title_key", missing):
            by_title.setdefault(found["title_key"], found)
    return by_key, by_title


def _add_new(
    inserts: dict[str, dict[str, Any]],
    entry: Entry,
    key: str,
    title_key: str,
    now: datetime,
    seq: int,
) -> None:
    """A new paper to insert, or what the entry adds to one met earlier in this batch."""
    fresh = inserts.get(key) or _same_paper(inserts.get("title:" + title_key), entry)
    if fresh is not None:
        _absorb(fresh, entry, key)
        return
    fresh = inserts[key] = {
        "key": key,
        "title_key": title_key,
        "arxiv_id": entry.arxiv_id,
        "title": entry.title,
        "abstract": entry.abstract,
        "authors": entry.authors,
        "url": entry.url,
        # a listing without dates dates its papers by the day they came,
        # so they are news then and never the newest in a feed later
        "listing_date": entry.published or now.date(),
        "revised": entry.revised,
        "first_seen": now,
        "last_seen": now,
        "times_seen": 1,
        "seq": seq,
    }
    if entry.arxiv_id is None:
        inserts["title:" + title_key] = fresh


def _add_seen(
    updates: dict[int, dict[str, Any]],
    row: dict[str, Any],
    entry: Entry,
    key: str,
    now: datetime,
    counts: DiffCounts,
) -> None:
    """A known paper seen again (counted once a dump), with what the entry adds."""
    update = updates.get(row["id"])
    if update is None:
        already = row["last_seen"] == now  # met earlier in this same dump
        update = dict(row, times_seen=0 if already else 1)
        updates[row["id"]] = update
        counts.seen += 0 if already else 1
        if not already:
            counts.again.append(row["id"])
    _absorb(update, entry, key)


def _undamaged_twin(conn: Connection, entry: Entry) -> dict[str, Any] | None:
    """The known paper a title with an undecodable byte is a damaged copy of, if any: its
    title key reads the same but where the damage is (one spot, a character or two)."""
    twin = damaged_twin(entry.title)
    if twin is None:
        return None
    prefix, pattern = twin
    for row in papers.lookup_title_prefix(conn, prefix, TWINS):
        if pattern.fullmatch(row["title_key"]):
            return row
    return None


def _same_paper(row: dict[str, Any] | None, entry: Entry) -> dict[str, Any] | None:
    """``row`` found by title is this entry's paper unless both carry different arXiv ids."""
    if row is not None and row["arxiv_id"] and entry.arxiv_id and row["arxiv_id"] != entry.arxiv_id:
        return None
    return row


def _absorb(row: dict[str, Any], entry: Entry, key: str) -> None:
    """Fold what ``entry`` adds into ``row``: an arXiv id, fuller text, authors, link, the
    earliest date, the latest revision."""
    if entry.arxiv_id and not row["arxiv_id"]:
        if row.get("id") is not None and row["first_key"] is None:
            # A stored paper keeps the key it was first seen under for its feed GUID; one
            # met earlier in this same batch was never published and simply takes the new.
            row["first_key"] = row["key"]
        row["arxiv_id"] = entry.arxiv_id
        row["key"] = key
    row["title"], row["abstract"] = _merge(row["title"], row["abstract"], entry)
    if entry.authors and not row["authors"]:
        row["authors"] = entry.authors
    if entry.url and not row["url"]:
        row["url"] = entry.url
    if entry.published and (row["listing_date"] is None or entry.published < row["listing_date"]):
        row["listing_date"] = entry.published
    if entry.revised and (row["revised"] is None or entry.revised > row["revised"]):
        row["revised"] = entry.revised
