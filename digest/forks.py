"""Forked worker processes: whether they are available, how many, and a plain map.

Forked children inherit what the parent built (an interest index, rendered
feed items) copy-on-write, so nothing is pickled on the way in; only results
come back. Without ``fork`` (macOS spawn, Windows) everything runs in-process.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def available() -> bool:
    """Whether worker processes can share the parent's objects (they need ``fork``)."""
    return "fork" in multiprocessing.get_all_start_methods()


def cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def processes_for(units: int, *, threshold: int, cap: int) -> int:
    """How many processes ``units`` of work deserve: 1 below ``threshold``, else up to ``cap``."""
    if units < threshold or not available():
        return 1
    return max(1, min(cores(), cap))


def slices(total: int, count: int) -> list[tuple[int, int]]:
    """``count`` contiguous, nearly equal ranges covering ``range(total)``."""
    return list(pairwise([total * i // count for i in range(count + 1)]))


def _run_share(
    fn: Callable[[Sequence[Any]], Any], share: Sequence[Any], results: Any, i: int
) -> None:
    try:
        results.put((i, fn(share), None))
    except BaseException as exc:  # reported to the parent, which raises it there
        try:
            pickle.dumps(exc)
            error: BaseException = exc
        except Exception:
            error = RuntimeError(f"{type(exc).__name__}: {exc}")
        results.put((i, None, error))


def fork_map(fn: Callable[[Sequence[T]], R], items: Sequence[T], processes: int) -> list[R]:
    """``fn`` of each of ``processes`` shares of items (every ``processes``-th item), in order.

    Each share runs in a forked child; a child's exception is raised here. With one
    process, or without ``fork``, the one share is all items, run here.
    """
    if processes <= 1 or not available() or len(items) <= 1:
        return [fn(items)]
    processes = min(processes, len(items))
    context = multiprocessing.get_context("fork")
    results = context.SimpleQueue()
    workers = [
        context.Process(target=_run_share, args=(fn, items[i::processes], results, i))
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    answers = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
    answers.sort(key=lambda answer: answer[0])
    for _, _, error in answers:
        if error is not None:
            raise error
    if any(worker.exitcode for worker in workers):
        raise RuntimeError("a worker process died")
    return [result for _, result, _ in answers]
