"""Matching speed: 100,000 subscribers against a day of 5,000 papers (run by hand).

    python bench/match.py [--subscribers N] [--papers N] [--store-sample N] [--sample N]
                          [--seed N] [--processes N] [--voters SHARE] [--dumps PATH ...]
                          [--feedback-only] [--baseline CHECKOUT [--rounds N]]

The corpus is synthetic, with a realistic spread of words (see bench/README.md):
a 40,000-word Zipfian vocabulary whose head is the real words of some listing dumps
(``--dumps``: files or folders; by default the two real dumps in ``../shared/dumps``
when that folder is beside the repo, else the sample dumps in ``examples/dumps``,
with a note), ranked by how many papers use them, and whose tail is coined
words; each paper draws its background words from it and copies short windows
of one topic (a real paper, or a made-up field of rare words) for real phrases
and bursts. Store statistics for 1,000,000 papers are counted on a sample drawn
the same way and scaled. Interests are drawn Zipf-like from topical words, word
pairs, phrases, prefixes and exclusions found in the dumps. The same run times
the obvious alternative, one SQLite FTS5 ``MATCH`` (porter tokenizer, bm25()
order) per interest, on a sample of subscribers and extrapolates it. Last, the whole
ranking (``ranker.rank``) runs twice, without and with ``--voters`` of the readers having
10 votes each, for the cost of feedback.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import re
import resource
import sqlite3
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from digest.ingest.readers import read_listing

try:
    from digest.rank import reader_model as model
except ImportError:  # a checkout from before the rename
    from digest.rank import feedback as model  # type: ignore[no-redef]
from digest.rank import ranker, workers
from digest.rank.index import InterestIndex
from digest.rank.match import STOPWORDS
from digest.rank.query import AllOf, AnyOf, Node, Phrase, Term, Without, parse_interest
from digest.rank.text import DEFAULT
from digest.rank.topk import DayMatches
from digest.rank.types import CorpusStats, PlainPaper, Profile

REPO = Path(__file__).resolve().parents[1]
REAL_DUMPS = REPO.parent / "shared" / "dumps"
# In this order: the figures in bench/README.md were drawn from A's papers first.
REAL = [REAL_DUMPS / "hf-trending-layout-a.txt", REAL_DUMPS / "hf-daily-mar11-layout-b.txt"]
EXAMPLE_DUMPS = REPO / "examples" / "dumps"
STORE = 1_000_000
_STOPWORDS = (
    "a an and are as at be by can for from has have in is it its of on or that the their these "
    "this to we which with our such than was were not also into more"
)
STOP = set(_STOPWORDS.split()) | STOPWORDS


def add_dumps_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dumps",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="listing dumps (files or folders) whose papers give the real words and topics;"
        " default: ../shared/dumps when it is beside the repo, else examples/dumps",
    )


def dump_files(paths: list[Path] | None) -> list[Path]:
    """The files of ``--dumps``, or the real dumps, or the sample dumps with a note."""
    if paths:
        return [
            file
            for path in paths
            for file in (
                sorted(f for f in path.iterdir() if f.is_file()) if path.is_dir() else [path]
            )
        ]
    if all(path.is_file() for path in REAL):
        return REAL
    print(
        "note: ../shared/dumps is not beside the repo, so the real words and topics come from"
        " examples/dumps (18 papers; the figures in bench/README.md used the 325 of the real"
        " dumps); pass --dumps PATH to use other listings",
        file=sys.stderr,
    )
    return sorted(EXAMPLE_DUMPS.glob("*.txt"))


def real_papers(paths: list[Path]) -> list[tuple[str, str]]:
    """Distinct (title, abstract) pairs of the dumps, in the order first met."""
    now = datetime.now(UTC)
    pairs = [(e.title, e.abstract) for path in paths for e in read_listing(path, now=now).entries]
    return list({title: (title, abstract) for title, abstract in pairs}.values())


VOCABULARY = 40_000  # word types of a day's worth of abstracts (Heaps' law for ~1M tokens)
REAL_TOPICS = 0.3  # share of papers about one of the dumps' (LLM-heavy) topics
SYNTHETIC_TOPICS = 2_000
TOPICAL = 0.4  # share of an abstract's segments copied from its topic (real phrases, burstiness)
_PUNCT = ".,;:()[]\"'"


def vocabulary(rng: random.Random, real: list[tuple[str, str]]) -> list[str]:
    """Real words by collection frequency (the Zipf head), then coined words (the long tail)."""
    # Ranked by document frequency, not by count: a word repeated in one paper is topical,
    # and topical bursts come from the topics below, not from the background.
    counts: Counter[str] = Counter()
    for title, abstract in real:
        counts.update({w.strip(_PUNCT) for w in f"{title} {abstract}".split()})
    del counts[""]
    head = [w for w, _ in counts.most_common()]
    known = {w.lower() for w in head}
    stems = sorted(w for w in known if w.isalpha() and len(w) >= 5)  # sorted: runs repeat
    tail: list[str] = []
    while len(head) + len(tail) < VOCABULARY:
        a, b = rng.sample(stems, 2)
        word = a[: rng.randint(2, 5)] + b[-rng.randint(3, 6) :]
        if rng.random() < 0.05:
            word = word[:4].upper() + str(rng.randint(1, 99))  # model names: GRAF7, TOKE42
        if word.lower() not in known:
            known.add(word.lower())
            tail.append(word)
    return head + tail


class Generator:
    """Papers whose words follow a Zipf law over the vocabulary, with topical bursts."""

    def __init__(self, rng: random.Random, real: list[tuple[str, str]]) -> None:
        self.rng = rng
        self.words = vocabulary(rng, real)
        # Zipf-Mandelbrot, s = 1: "the" is ~2.5% of background tokens, the tail ~17%.
        self.cum = list(itertools.accumulate(1.0 / (r + 2.7) for r in range(len(self.words))))
        self.topics = [(t.split(), a.split()) for t, a in real]
        tail = self.words[len(self.words) // 10 :]
        for _ in range(SYNTHETIC_TOPICS):
            # A field outside the dumps: a few dozen rarer words that keep turning up together.
            terms = rng.sample(tail, 30)
            self.topics.append((terms[:10], [rng.choice(terms) for _ in range(120)]))
        self.real = len(real)
        self._pool: list[str] = []

    def background(self, k: int) -> list[str]:
        if len(self._pool) < k:
            self._pool = self.rng.choices(self.words, cum_weights=self.cum, k=100_000)
        out = self._pool[-k:]
        del self._pool[-k:]
        return out

    def text(self, source: list[str], size: int, window: tuple[int, int]) -> str:
        rng, words = self.rng, []
        while len(words) < size:
            if rng.random() < TOPICAL:
                start = rng.randrange(max(len(source) - window[0], 1))
                words += source[start : start + rng.randint(*window)]
            else:
                words += self.background(rng.randint(1, 4))
        return " ".join(words[:size])

    def paper(self, pid: int) -> PlainPaper:
        rng = self.rng
        if rng.random() < REAL_TOPICS:
            title, abstract = self.topics[rng.randrange(self.real)]
        else:
            title, abstract = self.topics[rng.randrange(self.real, len(self.topics))]
        return PlainPaper(
            pid,
            self.text(title, rng.randint(6, 14), (2, 4)),
            self.text(abstract, rng.randint(150, 200), (2, 6)),
            times_seen=1 + (rng.random() < 0.1) * rng.randint(1, 4),
        )


def store_stats(generator: Generator, sample: int) -> CorpusStats:
    """Statistics of a 1M-paper store, scaled up from a sample drawn like the day."""
    counted = CorpusStats.from_texts(
        (p.title, p.abstract) for p in map(generator.paper, range(sample))
    )
    scale = STORE / counted.documents
    frequencies = {term: round(df * scale) for term, df in counted.frequencies.items()}
    return CorpusStats(
        STORE, counted.avg_title_len, counted.avg_abstract_len, frequencies, counted.acronyms
    )


def interest_pool(rng: random.Random, real: list[tuple[str, str]]) -> list[str]:
    """Words and phrases readers would plausibly write, commonest kinds first."""
    df: Counter[str] = Counter()
    pairs: Counter[str] = Counter()
    for title, abstract in real:
        words = [w.strip(".,;:()[]\"'").lower() for w in f"{title} {abstract}".split()]
        words = [w for w in words if w.isalpha() and len(w) > 2]
        df.update(set(words))
        pairs.update({f"{x} {y}" for x, y in itertools.pairwise(words) if x != y})
    n = len(real)
    # Topical: in at most a fifth of the dumps' papers once plurals are folded ("encoders"
    # counts as encoder, which is in half of them).
    folded = CorpusStats.from_texts(real).frequencies
    topical = {
        w for w, c in df.items() if w not in STOP and folded.get(DEFAULT.term(w), c) <= n // 5
    }
    singles = sorted(w for w in topical if df[w] >= 2)
    bigrams = [p for p, c in pairs.items() if c >= 2 and not set(p.split()) & STOP]
    bigrams = [p for p in bigrams if set(p.split()) & topical]
    # A prefix catches the forms of one long word (diffus*, segmenta*), not a whole family.
    stems = {w[: len(w) - 3] for w in singles if len(w) >= 8}
    prefixes = sorted(
        p for p in stems if sum(c for w, c in df.items() if w.startswith(p)) <= n // 5
    )
    pool: list[str] = []
    for _ in range(6000):
        kind = rng.random()
        if kind < 0.35:
            pool.append(rng.choice(singles))
        elif kind < 0.6:
            pool.append(rng.choice(bigrams))
        elif kind < 0.75:
            pool.append(f'"{rng.choice(bigrams)}"')
        elif kind < 0.83:
            pool.append(rng.choice(prefixes) + "*")
        elif kind < 0.92:
            pool.append(f"{rng.choice(bigrams)} -{rng.choice(singles)}")
        elif kind < 0.96:
            pool.append(f"{rng.choice(singles)} OR {rng.choice(singles)}")
        else:
            pool.append(f"title:{rng.choice(singles)} ^2")
    return list(dict.fromkeys(pool))


def subscribers(rng: random.Random, pool: list[str], n: int) -> list[Profile]:
    zipf = [1.0 / (rank + 1) for rank in range(len(pool))]
    counts = rng.choices(range(1, 7), weights=[30, 25, 18, 12, 9, 6], k=n)
    return [Profile(i, tuple(rng.choices(pool, zipf, k=k))) for i, k in enumerate(counts)]


def fts_query(node: Node) -> str:
    """Our AST in FTS5 query syntax (every word quoted so hyphens and keywords are safe)."""
    if isinstance(node, Term):
        column = f"{node.field}:" if node.field else ""
        return f'{column}"{node.word}"' + ("*" if node.prefix else "")
    if isinstance(node, Phrase):
        column = f"{node.field}:" if node.field else ""
        return f'{column}"{node.words}"'
    if isinstance(node, AnyOf):
        return "(" + " OR ".join(fts_query(item) for item in node.items) + ")"
    if isinstance(node, AllOf):
        positive = [fts_query(i) for i in node.items if not isinstance(i, Without)]
        negative = [fts_query(i.item) for i in node.items if isinstance(i, Without)]
        return "(" + " AND ".join(positive) + "".join(f" NOT {q}" for q in negative) + ")"
    raise ValueError("a bare exclusion")


def fts_alternative(papers: list[PlainPaper], profiles: list[Profile]) -> float:
    """Seconds to rank profiles with one FTS5 MATCH per interest (no explanations)."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE day USING fts5(title, abstract, tokenize='porter')")
    db.executemany(
        "INSERT INTO day(rowid, title, abstract) VALUES (?, ?, ?)",
        [(p.id, p.title, p.abstract) for p in papers],
    )
    db.commit()
    sql = (
        "SELECT rowid, -bm25(day, 3.0, 1.0) FROM day WHERE day MATCH ? ORDER BY bm25(day, 3.0, 1.0)"
    )
    start = time.perf_counter()
    for profile in profiles:
        totals: dict[int, float] = {}
        for text in profile.interests:
            interest = parse_interest(text)
            for rowid, score in db.execute(sql, (fts_query(interest.query),)):
                totals[rowid] = totals.get(rowid, 0.0) + score * interest.weight
        sorted(totals.items(), key=lambda item: (-item[1], item[0]))[: profile.max_items]
    return time.perf_counter() - start


def density(day: list[PlainPaper], matches: DayMatches) -> str:
    """How often interests match: the figure that decides most of the cost."""
    sizes = sorted(len(v) for v in matches.lists.values())
    if not sizes:
        return "no matches"
    words = [w for w in ("diffusion", "llm", "reasoning", "segmentation", "federated")]
    share = {w: sum(w in DEFAULT(p.abstract) for p in day[:1000]) / 10 for w in words}
    return (
        f"matches per interest: median {statistics.median(sizes):.0f}, "
        f"90% {sizes[int(len(sizes) * 0.9)]}, max {sizes[-1]}; % of papers: "
        + ", ".join(f"{w} {s:.1f}" for w, s in share.items())
    )


def args_for_turns(argv: list[str]) -> list[str]:
    """The command line without ``--baseline CHECKOUT`` and ``--rounds N``: what each turn
    of a side-by-side run is given."""
    rest, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--baseline", "--rounds"):
            skip = True
        else:
            rest.append(arg)
    return rest


def in_turns(
    baseline: Path, rounds: int, args: list[str], *, script: Path | None = None
) -> Iterator[tuple[str, str]]:
    """Run a bench script on the baseline checkout's code, then on this one's, ``rounds``
    times, printing and yielding each run's name and output. In turns, because the machine
    is shared: a neighbour's job slows whichever runs beside it, and alternating spreads
    that over both. ``script`` runs on both (on each checkout's code); by default each
    checkout runs its own copy of the calling script."""
    caller = Path(sys.argv[0]).resolve().relative_to(REPO)
    runs = {"baseline": baseline.resolve(), "this checkout": REPO}
    for turn in range(1, rounds + 1):
        for name, checkout in runs.items():
            # The checkout's own environment when it has one: an editable install of this
            # checkout would otherwise win over PYTHONPATH.
            venv = checkout / ".venv" / "bin" / "python"
            python = str(venv) if venv.exists() else sys.executable
            env = {**os.environ, "PYTHONPATH": str(checkout), "PYTHONDONTWRITEBYTECODE": "1"}
            # The interests are drawn from sets of words, whose order follows the string
            # hash: a fixed seed gives both checkouts, and every round, the same day (with a
            # random one, each run drew different interests).
            env.setdefault("PYTHONHASHSEED", "0")
            command = [python, str(script or checkout / caller), *args]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            print(f"--- round {turn}, {name}: {checkout}\n{done.stdout}", end="", flush=True)
            yield name, done.stdout


def side_by_side(baseline: Path, argv: list[str], rounds: int, feedback_only: bool) -> None:
    """Another checkout's bench/match.py and this one's, in turns, each on its own code.
    With ``feedback_only`` this script runs both times (on each checkout's code), and the
    cost of votes is compared."""
    rest: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--baseline", "--rounds"):
            skip = True
        elif not arg.startswith(("--baseline=", "--rounds=")):
            rest.append(arg)
    runs = ("baseline", "this checkout")
    totals: dict[str, list[float]] = {name: [] for name in runs}
    steps: dict[str, list[str]] = {name: [] for name in runs}
    script = REPO / "bench" / "match.py" if feedback_only else None
    for name, output in in_turns(baseline, rounds, rest, script=script):
        pattern = r"without votes ([\d.]+)s, with them ([\d.]+)s" if feedback_only else None
        found = re.search(pattern or r"total ([\d.]+)s", output)
        if found is None:
            raise SystemExit(f"no figure in the output of {name}")
        figure = float(found.group(2)) / float(found.group(1)) if pattern else None
        totals[name].append(figure or float(found.group(1)))
        step = re.search(r"\(rerank_readers\) ([\d.]+)s, ([\d.]+) CPU-s", output)
        if step:
            steps[name].append(f"{step.group(1)} s, {step.group(2)} CPU-s")
    unit = "x" if feedback_only else " s"
    what = "with votes / without, " if feedback_only else ""
    print(f"\n| round | {what}baseline | this checkout | this / baseline |")
    print("| --- | --- | --- | --- |")
    for turn, (old, new) in enumerate(zip(*totals.values(), strict=True), 1):
        print(f"| {turn} | {old:.2f}{unit} | {new:.2f}{unit} | {new / old:.2f} |")
    old, new = (statistics.median(values) for values in totals.values())
    print(f"| median | {old:.2f}{unit} | {new:.2f}{unit} | {new / old:.2f} |")
    if all(len(found) == rounds for found in steps.values()):
        print("\n| round | the voters' models, baseline | this checkout |\n| --- | --- | --- |")
        for turn, (old_step, new_step) in enumerate(zip(*steps.values(), strict=True), 1):
            print(f"| {turn} | {old_step} | {new_step} |")


def feedback_cost(
    rng: random.Random,
    generator: Generator,
    day: list[PlainPaper],
    profiles: list[Profile],
    stats: CorpusStats,
    share: float,
    processes: int,
) -> None:
    """The whole ranking with and without readers' votes, side by side: ``share`` of the
    readers with 10 votes each (half up, half down) on papers of earlier days."""
    voters = rng.sample(profiles, int(len(profiles) * share))
    drawn: dict[int, PlainPaper] = {}  # a paper two readers voted on is one paper, one text
    votes = {
        p.id: [
            model.Vote(drawn.get(i) or drawn.setdefault(i, generator.paper(i)), up=n % 2 == 0)
            for n, i in enumerate(rng.sample(range(1, STORE), 10))
        ]
        for p in voters
    }
    t0 = time.perf_counter()
    plain = ranker.rank(day, profiles, stats, processes=processes)
    t1 = time.perf_counter()
    step: list[float] = []
    rerank_readers = model.rerank_readers

    def timed(*args: Any, **kwargs: Any) -> Any:
        """The model's step alone: wall time, and CPU time with its worker processes'."""
        wall, own, kids = time.perf_counter(), time.process_time(), _children_cpu()
        done = rerank_readers(*args, **kwargs)
        cpu = time.process_time() - own + _children_cpu() - kids
        step.extend((time.perf_counter() - wall, cpu))
        return done

    model.rerank_readers = timed
    try:
        voted = ranker.rank(day, profiles, stats, processes=processes, votes=votes)
    finally:
        model.rerank_readers = rerank_readers
    t2 = time.perf_counter()
    same = sum(plain[p.id] == voted[p.id] for p in profiles if p.id not in votes)
    print(
        f"feedback: {len(voters):,} readers with 10 votes each; rank() without votes"
        f" {t1 - t0:.2f}s, with them {t2 - t1:.2f}s (+{t2 - t1 - (t1 - t0):.2f}s,"
        f" {(t2 - t1) / (t1 - t0):.2f}x); the other {same:,} readers' lists identical:"
        f" {same == len(profiles) - len(voters)}"
    )
    print(f"feedback: the voters' models (rerank_readers) {step[0]:.2f}s, {step[1]:.2f} CPU-s")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--papers", type=int, default=5_000)
    parser.add_argument("--store-sample", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--processes", type=int, default=0, help="0: chosen by size")
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="CHECKOUT",
        help="another checkout of digest (say, a worktree of main): its bench/match.py and"
        " this one run in turns, with the same arguments, and their totals are compared",
    )
    parser.add_argument("--rounds", type=int, default=2, help="turns each with --baseline")
    parser.add_argument(
        "--voters", type=float, default=0.01, help="share of readers with votes (0: skip)"
    )
    parser.add_argument(
        "--feedback-only",
        action="store_true",
        help="time only the ranking without and with votes (with --baseline: the baseline's"
        " code under this script, so both sides run the same measurement)",
    )
    add_dumps_argument(parser)
    args = parser.parse_args()
    if args.baseline:
        side_by_side(args.baseline, sys.argv[1:], args.rounds, args.feedback_only)
        return
    rng = random.Random(args.seed)
    real = real_papers(dump_files(args.dumps))
    generator = Generator(rng, real)
    stats = store_stats(generator, args.store_sample)
    day = [generator.paper(STORE + i) for i in range(args.papers)]
    profiles = subscribers(rng, interest_pool(rng, real), args.subscribers)
    distinct = len({t for p in profiles for t in p.interests})
    print(f"{len(profiles):,} subscribers, {distinct:,} distinct interests, {len(day):,} papers")
    print(f"vocabulary: {len(generator.words):,} words, {len(stats.frequencies):,} store terms")
    if args.feedback_only:
        processes = args.processes or workers.processes_for(len(day) * len(profiles))
        feedback_cost(rng, generator, day, profiles, stats, args.voters, processes)
        return

    t0 = time.perf_counter()
    words = sum(len(DEFAULT(p.abstract)) for p in day)
    t_analyze = time.perf_counter() - t0
    print(f"analyzer: {len(day) / t_analyze:,.0f} abstracts/s ({words / len(day):.0f} terms each)")

    processes = args.processes or workers.processes_for(len(day) * len(profiles))
    t0 = time.perf_counter()
    index = InterestIndex.build(profiles, stats)
    t1 = time.perf_counter()
    with index.match(day, processes) as matches:
        t2 = time.perf_counter()
        ranked = matches.ranked_many(profiles)
        t3 = time.perf_counter()
    ours = t3 - t0
    pairs = sum(len(v) for v in matches.lists.values())
    items = sum(len(v) for v in ranked.values())
    hits = len({id(h) for v in ranked.values() for r in v for h in r.hits})
    print(f"ours ({processes} process{'es' * (processes > 1)}): build {t1 - t0:.2f}s, ", end="")
    print(f"match {t2 - t1:.2f}s ({pairs:,} paper-interest matches),")
    print(f"      fan-out {t3 - t2:.2f}s ({items:,} items, {hits:,} distinct explanations)")
    print(f"      total {ours:.2f}s; {density(day, matches)}")
    if index.invalid:
        print(f"      {len(index.invalid)} invalid interests skipped", file=sys.stderr)

    sample = rng.sample(profiles, min(args.sample, len(profiles)))
    fts = fts_alternative(day, sample) * len(profiles) / len(sample)
    print(f"FTS5 MATCH per interest: {fts:.1f}s extrapolated from {len(sample)} subscribers")
    print(f"ratio: {fts / ours:.1f}x")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    # Workers run beside the parent: their peaks add up (an upper bound; pages are shared).
    total = rss + worker * (processes if processes > 1 else 0)
    print(f"peak RSS: {rss:,.0f} MB, largest worker {worker:,.0f} MB, at most {total:,.0f} MB")
    if args.voters:
        feedback_cost(rng, generator, day, profiles, stats, args.voters, processes)


if __name__ == "__main__":
    main()
