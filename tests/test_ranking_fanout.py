"""The fast path (term index, shared heads, summed overlaps) against a plain evaluation."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from collections.abc import Iterator

import pytest

from digest import forks
from digest.rank import workers
from digest.rank.cutoff import cut
from digest.rank.index import InterestIndex
from digest.rank.match import Compiler
from digest.rank.query import parse_interest
from digest.rank.ranker import Ranking, rank
from digest.rank.reader_model import Vote
from digest.rank.text import DEFAULT
from digest.rank.types import CorpusStats, PlainPaper, Profile, Ranked

_VOCABULARY = (
    "graph neural network diffusion model language agent reasoning speech vision "
    "retrieval dense sparse token decoder encoder learning federated privacy robot "
    "policy reward image video audio benchmark dataset survey transformer attention"
)
WORDS = _VOCABULARY.split()
COMPOUNDS = ["self-supervised", "multi-agent", "data set", "dataset", "fine-tuning"]


def make_papers(rng: random.Random, n: int) -> list[PlainPaper]:
    def text(low: int, high: int) -> str:
        words = [rng.choice(WORDS) for _ in range(rng.randint(low, high))]
        for _ in range(rng.randint(0, 2)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(COMPOUNDS))
        # Case and plurals vary as in real listings.
        return " ".join(
            w.capitalize() if rng.random() < 0.2 else w + "s" * (rng.random() < 0.2) for w in words
        )

    ids = rng.sample(range(1, 10 * n), n)  # not in order: ties must still go to the lower id
    return [PlainPaper(i, text(3, 7), text(10, 40), rng.randint(1, 6)) for i in ids]


def make_interests(rng: random.Random) -> list[str]:
    w = rng.choice
    kinds = [
        lambda: w(WORDS),
        lambda: f"{w(WORDS)} {w(WORDS)}",
        lambda: f'"{w(WORDS)} {w(WORDS)}"',
        lambda: w(WORDS)[:4] + "*",
        lambda: f"{w(WORDS)} -{w(WORDS)}",
        lambda: f"{w(WORDS)} OR {w(WORDS)}",
        lambda: f"title:{w(WORDS)} ^2",
        lambda: f"{w(COMPOUNDS)}",
        lambda: f"({w(WORDS)} OR {w(WORDS)}) {w(WORDS)} NOT title:{w(WORDS)}",
    ]
    return [rng.choice(kinds)() for _ in range(40)]


def reference(
    profiles: list[Profile],
    papers: list[PlainPaper],
    stats: CorpusStats,
    candidates: dict[int, set[int]],
) -> dict[int, list[tuple[int, float, list[str]]]]:
    """Every interest evaluated on every paper, summed and sorted by hand."""
    compiler = Compiler(stats, DEFAULT)
    compiled = {}
    for text in {t for p in profiles for t in p.interests}:
        interest = parse_interest(text)
        compiled[text] = (compiler.compile(interest.query)[0], interest.weight, interest.text)
    docs = [compiler.document(p.title, p.abstract, p.times_seen) for p in papers]
    out = {}
    for profile in profiles:
        rows = []
        for paper, doc in zip(papers, docs, strict=True):
            if profile.id in candidates and paper.id not in candidates[profile.id]:
                continue
            total, names, seen = 0.0, [], set()
            for text in profile.interests:
                matcher, weight, name = compiled[text]
                if name in seen:
                    continue
                seen.add(name)
                score = matcher.evaluate(doc, None)
                if score is not None:
                    total += score * weight * doc.boost
                    names.append(name)
            if names and total >= profile.min_score:
                rows.append((paper.id, total, names))
        rows.sort(key=lambda row: (-row[1], row[0]))
        kept = cut([row[1] for row in rows], profile.max_items, profile.min_score)
        out[profile.id] = rows[:kept]
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fast_fan_out_equals_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    papers = make_papers(rng, 300)
    stats = CorpusStats.from_texts((p.title, p.abstract) for p in papers)
    pool = make_interests(rng)
    profiles = []
    for pid in range(200):
        interests = rng.sample(pool, rng.randint(1, 4))
        if rng.random() < 0.1:
            interests.append(interests[0])  # the same interest twice counts once
        min_score = rng.choice([0.0, 0.0, 2.0, 6.0])
        profiles.append(Profile(pid, interests, rng.randint(1, 12), min_score))
    # Some subscribers share their interests exactly (their answers are shared).
    profiles += [
        Profile(200 + i, p.interests, p.max_items, p.min_score) for i, p in enumerate(profiles[:30])
    ]
    ids = [p.id for p in papers]
    candidates = {p.id: set(rng.sample(ids, 150)) for p in profiles if rng.random() < 0.4}

    limited = rank(papers, profiles, stats, candidates=candidates)
    check(profiles, limited, reference(profiles, papers, stats, candidates))
    everything = rank(papers, profiles, stats)
    check(profiles, everything, reference(profiles, papers, stats, {}))
    for i in range(30):  # identical profiles got one shared answer
        assert everything[200 + i] == everything[i]


def check(
    profiles: list[Profile],
    got: dict[int, list[Ranked]],
    want: dict[int, list[tuple[int, float, list[str]]]],
) -> None:
    assert sum(len(v) for v in want.values()) > 500  # the setup does exercise the fan-out
    for profile in profiles:
        ranked = got[profile.id]
        expected = want[profile.id]
        assert [r.paper_id for r in ranked] == [row[0] for row in expected], profile
        assert [r.score for r in ranked] == pytest.approx([row[1] for row in expected])
        assert [[h.interest for h in r.hits] for r in ranked] == [row[2] for row in expected]
        for r in ranked:
            assert sum(h.score for h in r.hits) == pytest.approx(r.score)


@pytest.mark.skipif(not forks.available(), reason="worker processes need fork")
@pytest.mark.parametrize("seed", [4, 5])
def test_worker_processes_give_the_same_lists(seed: int) -> None:
    rng = random.Random(seed)
    papers = make_papers(rng, 240)
    stats = CorpusStats.from_texts((p.title, p.abstract) for p in papers)
    pool = make_interests(rng)
    profiles = [
        Profile(pid, rng.sample(pool, rng.randint(1, 5)), rng.randint(1, 12), rng.choice([0, 3.0]))
        for pid in range(150)
    ]
    profiles += [Profile(150 + p.id, p.interests, p.max_items, p.min_score) for p in profiles[:20]]
    ids = [p.id for p in papers]
    allowed = {p.id: set(rng.sample(ids, 100)) for p in profiles}
    for candidates in (None, allowed):
        alone = rank(papers, profiles, stats, candidates=candidates, processes=1)
        for processes in (2, 3):
            shared = rank(papers, profiles, stats, candidates=candidates, processes=processes)
            assert shared == alone  # ids, exact scores and explanations
    assert sum(len(v) for v in alone.values()) > 300
    assert not multiprocessing.active_children()  # the workers were stopped


@pytest.mark.skipif(not forks.available(), reason="worker processes need fork")
def test_worker_processes_serve_repeated_questions() -> None:
    rng = random.Random(6)
    papers = make_papers(rng, 120)
    stats = CorpusStats.from_texts((p.title, p.abstract) for p in papers)
    profiles = [Profile(pid, rng.sample(make_interests(rng), 3)) for pid in range(40)]
    index = InterestIndex.build(profiles, stats)
    local = index.match(papers).ranked_many(profiles)
    with index.match(papers, processes=2) as matches:
        assert matches.ranked_many(profiles[:10]) == {p.id: local[p.id] for p in profiles[:10]}
        assert matches.ranked_many(profiles) == local  # some answers cached, some new
        assert matches.ranked(profiles[3]) == local[3]
    assert not multiprocessing.active_children()


@pytest.mark.skipif(not forks.available(), reason="worker processes need fork")
def test_a_failing_worker_raises_in_the_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    papers = make_papers(rng, 40)
    stats = CorpusStats.from_texts((p.title, p.abstract) for p in papers)
    index = InterestIndex.build([Profile(1, ["graph"])], stats)

    def broken(*args: object) -> None:
        raise ValueError("bad paper")

    monkeypatch.setattr(InterestIndex, "_stream", broken)  # the forked workers inherit it
    with pytest.raises(ValueError, match="bad paper"):
        index.match(papers, processes=2)
    assert not multiprocessing.active_children()


@pytest.mark.skipif(not forks.available(), reason="worker processes need fork")
def test_failed_explanations_leave_no_half_built_items(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(8)
    papers = make_papers(rng, 120)
    stats = CorpusStats.from_texts((p.title, p.abstract) for p in papers)
    profiles = [Profile(pid, rng.sample(make_interests(rng), 3)) for pid in range(40)]
    index = InterestIndex.build(profiles, stats)
    local = index.match(papers).ranked_many(profiles)
    submit = workers.Workers.submit
    failures = [RuntimeError("lost")]

    def flaky(self: workers.Workers, pairs: list[tuple[int, int]]) -> object:
        receive = submit(self, pairs)

        def fail_once() -> object:
            got = receive()  # the replies are read either way: the workers stay in step
            if failures:
                raise failures.pop()
            return got

        return fail_once

    monkeypatch.setattr(workers.Workers, "submit", flaky)
    with index.match(papers, processes=2) as matches:
        with pytest.raises(RuntimeError, match="lost"):
            matches.ranked_many(profiles)
        assert matches.ranked_many(profiles) == local  # nothing kept from the failed call


@pytest.mark.skipif(not forks.available(), reason="worker processes need fork")
def test_fork_map_runs_each_share_in_a_child_and_raises_its_error() -> None:
    items = list(range(10))
    assert forks.fork_map(sum, items, 3) == [0 + 3 + 6 + 9, 1 + 4 + 7, 2 + 5 + 8]
    assert forks.fork_map(sum, items, 1) == [45]

    def fail(share: list[int]) -> int:
        if 4 in share:
            raise ValueError("share with 4")
        return len(share)

    with pytest.raises(ValueError, match="share with 4"):
        forks.fork_map(fail, items, 2)
    assert not multiprocessing.active_children()


@pytest.mark.skipif(not forks.available(), reason="worker processes need fork")
def test_fork_pieces_hands_over_each_piece_as_made_and_raises_a_childs_error() -> None:
    items = list(range(10))
    got = multiprocessing.get_context("fork").Event()

    def tens(share: list[int]) -> Iterator[int | str]:
        yield share[0] * 10
        # the rest only once this process's first piece reached the parent
        yield "on" if got.wait(30) else "held until the end"
        yield from (n * 10 for n in share[1:])

    found = []
    for piece in forks.fork_pieces(tens, items, 2):
        found.append(piece)
        got.set()
    assert found.count("on") == 2
    assert sorted(n for n in found if isinstance(n, int)) == [n * 10 for n in items]
    assert list(forks.fork_pieces(lambda share: iter(share), items, 1)) == items

    def fail(share: list[int]) -> Iterator[int]:
        yield len(share)
        if 4 in share:
            raise ValueError("share with 4")

    with pytest.raises(ValueError, match="share with 4"):
        list(forks.fork_pieces(fail, items, 2))
    assert not multiprocessing.active_children()

    left = forks.fork_pieces(lambda share: (n for n in share if not time.sleep(0.01)), items, 2)
    next(left)
    left.close()  # the caller stops part way: its processes are not left running
    assert not multiprocessing.active_children()


@pytest.mark.skipif(not forks.available(), reason="worker processes need fork")
def test_a_worker_process_that_dies_is_an_error_not_a_wait() -> None:
    """A child killed part way (by the system short of memory, say) sends nothing more:
    the caller is told, and the other children are stopped."""
    items = list(range(10))

    def killed(share: list[int]) -> Iterator[int]:
        yield share[0]
        if 3 in share:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(30)  # the other share: stopped, not waited for
        yield share[1]

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="died"):
        list(forks.fork_pieces(killed, items, 2))
    with pytest.raises(RuntimeError, match="died"):
        forks.fork_map(lambda share: list(killed(share)), items, 2)
    assert time.monotonic() - started < 20
    assert not multiprocessing.active_children()


@pytest.mark.skipif(not forks.available(), reason="worker processes need fork")
@pytest.mark.parametrize("processes", [1, 2])
def test_a_day_ranked_a_batch_at_a_time_gives_the_lists_of_one_ranking(processes: int) -> None:
    rng = random.Random(9)
    papers = make_papers(rng, 200)
    stats = CorpusStats.from_texts((p.title, p.abstract) for p in papers)
    pool = make_interests(rng)
    profiles = [
        Profile(pid, rng.sample(pool, rng.randint(1, 5)), rng.randint(1, 12), rng.choice([0, 3.0]))
        for pid in range(120)
    ]
    ids = [p.id for p in papers]
    candidates = {p.id: set(rng.sample(ids, 120)) for p in profiles if rng.random() < 0.3}
    votes = {  # some readers voted: their models re-rank, on the day's vectors made once
        p.id: [Vote(paper, rng.random() < 0.7) for paper in rng.sample(papers, 4)]
        for p in profiles
        if rng.random() < 0.15
    }
    alone = rank(papers, profiles, stats, candidates=candidates, processes=1, votes=votes)
    batched: dict[int, list[Ranked]] = {}
    with Ranking(papers, profiles, stats, processes=processes) as day:
        for start in range(0, len(profiles), 17):
            batch = profiles[start : start + 17]
            batched.update(day.rank(batch, candidates=candidates, votes=votes))
    assert batched == alone  # ids, exact scores, explanations and reasons
    assert sum(len(v) for v in alone.values()) > 300
    assert len(votes) > 5
    assert not multiprocessing.active_children()
