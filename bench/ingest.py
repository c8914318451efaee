"""Ingest speed: back-fill a 1M-paper arXiv snapshot, then a 5,000-paper daily dump.

Run by hand (not in CI):  python bench/ingest.py [--papers 1000000] [--keep DIR]

Beside our ingest, in the same run, it measures the floor: a plain sqlite3
``executemany`` of the same rows into the same table in one transaction.
Prints papers/s, the ratio to the floor, and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from digest.ingest.dumps import Clock, ingest_file
from digest.ingest.identity import paper_keys
from digest.store.engine import open_store, transaction
from digest.store.papers import index_papers

WORDS = [
    "learning",
    "model",
    "models",
    "language",
    "large",
    "neural",
    "network",
    "networks",
    "training",
    "data",
    "diffusion",
    "transformer",
    "attention",
    "graph",
    "reinforcement",
    "policy",
    "agent",
    "vision",
    "image",
    "video",
    "generation",
    "self-supervised",
    "contrastive",
    "representation",
    "benchmark",
    "evaluation",
    "robust",
    "efficient",
    "sparse",
    "federated",
    "privacy",
    "retrieval",
    "augmented",
    "reasoning",
    "chain",
    "thought",
    "alignment",
    "preference",
    "reward",
    "speech",
    "audio",
    "multimodal",
    "segmentation",
    "detection",
    "tracking",
    "point",
    "cloud",
    "3d",
    "scene",
    "rendering",
    "gaussian",
    "splatting",
    "optimization",
    "convergence",
    "stochastic",
    "gradient",
    "theory",
    "bounds",
    "kernel",
    "bayesian",
    "inference",
    "uncertainty",
    "calibration",
    "causal",
    "discovery",
    "time",
    "series",
    "forecasting",
    "protein",
    "molecule",
    "drug",
    "chemistry",
    "physics",
    "quantum",
    "circuit",
    "compiler",
    "code",
    "synthesis",
    "program",
    "we",
    "propose",
    "novel",
    "approach",
    "method",
    "results",
    "show",
    "state",
    "art",
    "outperforms",
    "baseline",
    "across",
    "tasks",
]


def make_title(rng: random.Random) -> str:
    words = rng.choices(WORDS, k=rng.randint(6, 14))
    return " ".join(words).capitalize()


def make_abstract(rng: random.Random) -> str:
    # arXiv abstracts average about 1,000 characters (150-ish words)
    return " ".join(rng.choices(WORDS, k=rng.randint(90, 220))).capitalize() + "."


def write_snapshot(path: Path, papers: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as out:
        for i in range(papers):
            ident = f"{1000 + i // 90000:04d}.{i % 90000:05d}"
            row = {
                "id": ident,
                "submitter": "A. Author",
                "authors": "A. Author, B. Author and C. Author",
                "title": make_title(rng),
                "comments": "12 pages",
                "categories": "cs.LG",
                "abstract": "  " + make_abstract(rng) + "\n",
                "versions": [{"version": "v1", "created": "Mon, 2 Apr 2007 19:18:42 GMT"}],
                "update_date": "2008-11-13",
            }
            out.write(json.dumps(row) + "\n")


def write_daily_dump(path: Path, papers: int, seed: int = 2) -> None:
    """A layout-A text dump: mostly new papers, 10% already in the snapshot by title."""
    rng = random.Random(seed)
    lines = [
        "Get trending papers in your email inbox once a day!",
        "Get trending papers in your email inbox!",
    ]
    for i in range(papers):
        title = make_title(rng) + f" {i}"
        lines.append(("Subscribe" if i == 0 else "") + title)
        lines.append(make_abstract(rng))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def floor_rows(path: Path) -> list[tuple[object, ...]]:
    now = datetime.now(UTC).isoformat(" ")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            data = json.loads(line)
            title = " ".join(data["title"].split())
            key, title_key = paper_keys(title, data["id"])
            rows.append(
                (
                    key,
                    title_key,
                    data["id"],
                    title,
                    data["abstract"].strip(),
                    data["authors"],
                    None,
                    None,
                    now,
                    now,
                    1,
                )
            )
    return rows


def measure_floor(
    folder: Path, schema_source: Path, rows: list[tuple[object, ...]]
) -> tuple[float, float]:
    """Seconds for a plain executemany of ``rows`` into an empty copy of our paper table,
    and then for filling a search index like ours from it with one INSERT ... SELECT."""
    db = folder / "floor.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    with sqlite3.connect(schema_source) as src:
        ddl = [
            r[0]
            for r in src.execute(
                "SELECT sql FROM sqlite_master WHERE tbl_name='paper' AND sql IS NOT NULL"
            )
        ]
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    for statement in ddl:
        conn.execute(statement)
    started = time.perf_counter()
    with conn:
        conn.executemany(
            "INSERT INTO paper (key, title_key, arxiv_id, title, abstract, authors, url, listing_date,"
            " first_seen, last_seen, times_seen) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
    elapsed = time.perf_counter() - started
    conn.execute(
        "CREATE VIRTUAL TABLE paper_fts USING fts5(title, abstract, content='paper',"
        " content_rowid='id', tokenize='porter unicode61 remove_diacritics 2')"
    )
    started = time.perf_counter()
    with conn:
        conn.execute(
            "INSERT INTO paper_fts(rowid, title, abstract) SELECT id, title, abstract FROM paper"
        )
    index_s = time.perf_counter() - started
    conn.close()
    return elapsed, index_s


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--papers", type=int, default=1_000_000)
    parser.add_argument("--daily", type=int, default=5_000)
    parser.add_argument(
        "--keep", type=Path, help="folder to keep the files in (default: a temp folder)"
    )
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="digest-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    snapshot = folder / "snapshot.jsonl"
    daily = folder / "daily.txt"
    if not snapshot.exists():
        print(f"writing {args.papers:,}-paper snapshot to {snapshot} ...", file=sys.stderr)
        write_snapshot(snapshot, args.papers)
    write_daily_dump(daily, args.daily)
    size_mb = snapshot.stat().st_size / 1e6
    db = folder / "store.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    engine = open_store(f"sqlite:///{db}")
    clock = Clock()

    started = time.perf_counter()
    backfill = ingest_file(engine, snapshot, clock=clock, defer_index=True)
    backfill_s = time.perf_counter() - started
    assert backfill.status == "ok", backfill.error
    started = time.perf_counter()
    with transaction(engine) as conn:
        index_papers(conn)
    index_s = time.perf_counter() - started
    rss_after_backfill = peak_rss_mb()

    started = time.perf_counter()
    day = ingest_file(engine, daily, clock=clock)
    daily_s = time.perf_counter() - started
    assert day.status == "ok", day.error
    engine.dispose()
    ours_rss = peak_rss_mb()

    rows = floor_rows(snapshot)
    floor_s, floor_index_s = measure_floor(folder, db, rows)
    n = backfill.entries
    ours_rate, floor_rate = n / backfill_s, len(rows) / floor_s
    ours_full, floor_full = n / (backfill_s + index_s), len(rows) / (floor_s + floor_index_s)
    print(f"snapshot: {n:,} papers, {size_mb:,.0f} MB")
    print("                 ours                  floor (plain executemany)  ratio")
    print(
        f"store only      {backfill_s:7.2f} s {ours_rate:>9,.0f}/s   {floor_s:7.2f} s {floor_rate:>9,.0f}/s"
        f"   {ours_rate / floor_rate:6.1%}   (targets: >= 25,000/s, >= 50%)"
    )
    print(
        f"+ search index  {backfill_s + index_s:7.2f} s {ours_full:>9,.0f}/s   "
        f"{floor_s + floor_index_s:7.2f} s {floor_full:>9,.0f}/s   {ours_full / floor_full:6.1%}"
    )
    print(
        f"daily dump:         {daily_s:7.3f} s  {day.entries:,} papers, {day.new:,} new  (target < 1 s)"
    )
    print(
        f"peak RSS:           {rss_after_backfill:7.0f} MB after back-fill; {ours_rss:.0f} MB before the floor's rows (target < 500 MB)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
