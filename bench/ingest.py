"""Ingest speed: back-fill a 1M-paper arXiv snapshot, then a 5,000-paper daily dump.

Run by hand (not in CI):

    python bench/ingest.py [--papers 1000000] [--daily 5000] [--keep DIR [--backfill]]
                           [--profile FILE] [--baseline CHECKOUT [--rounds N]]

Beside our back-fill, in the same run, it measures the floor: a plain sqlite3
``executemany`` of the same rows into the same table in one transaction.
Prints papers/s, the ratio to the floor, and peak RSS. Then the daily dump is
ingested into a copy of the million-paper store, and timed.

The files (1.7 GB of snapshot, 2.8 GB of store at a million papers) go to a
temporary folder removed at the end, or with ``--keep DIR`` stay in DIR: a later
run with the same ``--keep`` and ``--papers`` finds the built store there and
times only the daily dump (``--backfill`` measures the back-fill again).
``--baseline``: the daily dump on another checkout's code and on this one's, in
turns, each into a copy of the store its own code built (kept per version of the
ingest and store code), and the times side by side.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import math
import os
import random
import re
import resource
import shutil
import sqlite3
import sys
import tempfile
import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from match import args_for_turns, in_turns  # bench/match.py
from sqlalchemy.engine import Engine

import digest
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


def known_papers(snapshot: Path, count: int) -> list[tuple[str, str]]:
    """(title, abstract) of the snapshot's first ``count`` papers, as a papers page shows them."""
    found = []
    with snapshot.open(encoding="utf-8") as handle:
        for line in handle:
            if len(found) == count:
                break
            data = json.loads(line)
            found.append((" ".join(data["title"].split()), " ".join(data["abstract"].split())))
    return found


def write_daily_dump(path: Path, papers: int, snapshot: Path, seed: int = 2) -> None:
    """A layout-A text dump: mostly new papers, every tenth one already in the snapshot (met
    by its title: a papers page gives no arXiv id)."""
    rng = random.Random(seed)
    known = iter(known_papers(snapshot, papers // 10))
    lines = [
        "Get trending papers in your email inbox once a day!",
        "Get trending papers in your email inbox!",
    ]
    for i in range(papers):
        pair = next(known, None) if i % 10 == 5 else None
        if pair is None:
            pair = (make_title(rng) + f" {i}", make_abstract(rng))
        title, abstract = pair
        lines.append(("Subscribe" if i == 0 else "") + title)
        lines.append(abstract)
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
    with closing(sqlite3.connect(schema_source)) as src:  # closed: no -wal left beside it
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


def remove_db(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)


def measure_backfill(folder: Path, snapshot: Path, store: Path) -> None:
    """Back-fill the snapshot into an empty store, build its search index, then the floor;
    print the figures. The store is left at ``store``, whole or not at all."""
    size_mb = snapshot.stat().st_size / 1e6
    draft = folder / "store.part.db"
    remove_db(draft)
    engine = open_store(f"sqlite:///{draft}")
    clock = Clock()
    started = time.perf_counter()
    backfill = ingest_file(engine, snapshot, clock=clock, defer_index=True)
    # The floor's commit checkpoints; an ingest's does past a bound of pages (a back-fill's
    # does), else leaves it for later: made here within the time either way, so both sides
    # copy their pages into the database.
    checkpoint(engine)
    backfill_s = time.perf_counter() - started
    assert backfill.status == "ok", backfill.error
    started = time.perf_counter()
    with transaction(engine) as conn:
        index_papers(conn)
    index_s = time.perf_counter() - started
    engine.dispose()  # checkpoints the WAL into the file: the store is one file from here
    rss_after_backfill = peak_rss_mb()
    remove_db(store)
    draft.rename(store)

    rows = floor_rows(snapshot)
    floor_s, floor_index_s = measure_floor(folder, store, rows)
    remove_db(folder / "floor.db")
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
    print(f"peak RSS:           {rss_after_backfill:7.0f} MB after back-fill (target < 500 MB)")


def checkpoint(engine: Engine) -> None:
    """Copy what the WAL holds into the database file (what the last connection's close
    does, or the next commit of another transaction)."""
    raw = engine.raw_connection()
    try:
        raw.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # type: ignore[union-attr]
    finally:
        raw.close()


def measure_daily(folder: Path, store: Path, daily: Path, profile: Path | None) -> None:
    """Time the daily dump into a copy of the built store (so the store can be used again)."""
    copy = folder / "daily-run.db"
    remove_db(copy)
    shutil.copyfile(store, copy)
    # The copy's pages are written back before the clock starts: else the first checkpoint's
    # fsync of the database waits for all 2.8 GB of the copy, which a store in use never has
    # dirty at once.
    with copy.open("rb+") as written:
        os.fsync(written.fileno())
    try:
        engine = open_store(f"sqlite:///{copy}")
        profiler = cProfile.Profile() if profile else None
        started, cpu_started = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        day = ingest_file(engine, daily, clock=Clock())
        daily_s = time.perf_counter() - started
        daily_cpu = time.process_time() - cpu_started
        if profiler is not None and profile is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        assert day.status == "ok", day.error
        wal_mb = Path(f"{copy}-wal").stat().st_size / 1e6
        # What is left in the WAL is copied into the database when the last connection
        # closes (or by the next commit of another transaction): timed apart.
        started, cpu_started = time.perf_counter(), time.process_time()
        engine.dispose()
        close_s, close_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        remove_db(copy)
    print(
        f"daily dump:         {daily_s:7.3f} s  ({daily_cpu:.3f} s CPU)  {day.entries:,} papers,"
        f" {day.new:,} new, {day.seen:,} seen again  (target < 1 s)"
    )
    print(
        f"then the close:     {close_s:7.3f} s  ({close_cpu:.3f} s CPU)  checkpoints what the"
        f" WAL holds still (WAL file {wal_mb:.1f} MB)"
    )
    print(f"peak RSS:           {peak_rss_mb():7.0f} MB")


_DAILY = re.compile(r"^daily dump: +([\d.]+) s  \(([\d.]+) s CPU\)", re.MULTILINE)


def side_by_side(baseline: Path, args: argparse.Namespace, rest: list[str], rounds: int) -> None:
    """The daily dump on the baseline's code and on this checkout's, in turns, each into a
    copy of the store its own code built from the same snapshot (in its first turn, unless
    ``--keep`` holds it already)."""
    folder = args.keep or Path(tempfile.mkdtemp(prefix="digest-bench-"))
    try:
        prepare(folder, args.papers, args.daily)  # the snapshot, once for both
        times: dict[str, list[tuple[float, float]]] = {}
        turn_args = [*rest, "--keep", str(folder)] if not args.keep else rest
        for name, output in in_turns(baseline, rounds, turn_args, script=Path(__file__).resolve()):
            found = _DAILY.search(output)
            wall, cpu = (float(found[1]), float(found[2])) if found else (math.nan, math.nan)
            times.setdefault(name, []).append((wall, cpu))
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print("\n| round | baseline | this checkout | ratio | CPU: baseline | this checkout | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    pairs = zip(times["baseline"], times["this checkout"], strict=True)
    for number, ((old, old_cpu), (new, new_cpu)) in enumerate(pairs, 1):
        print(
            f"| {number} | {old:.3f} s | {new:.3f} s | {new / old:.2f}"
            f" | {old_cpu:.3f} s | {new_cpu:.3f} s | {new_cpu / old_cpu:.2f} |"
        )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def code_tag() -> str:
    """A short hash of the ingest and store code this run imports: a store kept from a run
    of other code (another checkout, an earlier commit) is not used, but built again."""
    root = Path(digest.__file__).parent
    digest_of = hashlib.sha1()
    for path in sorted([*root.glob("ingest/**/*.py"), *root.glob("store/*.py")]):
        digest_of.update(path.relative_to(root).as_posix().encode())
        digest_of.update(path.read_bytes())
    return digest_of.hexdigest()[:10]


def prepare(folder: Path, papers: int, daily_papers: int) -> tuple[Path, Path, Path]:
    """The snapshot (written once per size), today's dump, and where the store built by this
    code goes."""
    folder.mkdir(parents=True, exist_ok=True)
    snapshot = folder / f"snapshot-{papers}.jsonl"
    if not snapshot.exists():
        print(f"writing {papers:,}-paper snapshot to {snapshot} ...", file=sys.stderr)
        draft = folder / "snapshot.part"
        write_snapshot(draft, papers)
        draft.rename(snapshot)
    daily = folder / "daily.txt"
    write_daily_dump(daily, daily_papers, snapshot)
    return snapshot, daily, folder / f"store-{papers}-{code_tag()}.db"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--papers", type=int, default=1_000_000)
    parser.add_argument("--daily", type=int, default=5_000)
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="keep the snapshot and the built store in DIR and use them again next time"
        " (default: a temporary folder, removed at the end)",
    )
    parser.add_argument(
        "--backfill",
        action="store_true",
        help="measure the back-fill again even when DIR holds a built store",
    )
    parser.add_argument(
        "--profile", type=Path, metavar="FILE", help="cProfile the daily dump into FILE"
    )
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT")
    parser.add_argument("--rounds", type=int, default=1, help="turns each with --baseline")
    args = parser.parse_args()
    if args.baseline:
        side_by_side(args.baseline, args, args_for_turns(sys.argv[1:]), args.rounds)
        return 0
    folder = args.keep or Path(tempfile.mkdtemp(prefix="digest-bench-"))
    try:
        snapshot, daily, store = prepare(folder, args.papers, args.daily)
        if args.backfill or not store.exists():
            measure_backfill(folder, snapshot, store)
        measure_daily(folder, store, daily, args.profile)
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
