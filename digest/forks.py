"""Forked worker processes: whether they are available, how many, and a plain map.

Forked children inherit what the parent built (an interest index, rendered
feed items) copy-on-write, so nothing is pickled on the way in; only results
come back. Without ``fork`` (macOS spawn, Windows) everything runs in-process.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
from collections.abc import Callable, Iterable, Iterator, Sequence
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
        results.put((i, None, _sendable(exc)))


def _sendable(exc: BaseException) -> BaseException:
    """``exc``, or what it says when it cannot be pickled to the parent."""
    try:
        pickle.dumps(exc)
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


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


def _stream_share(
    fn: Callable[[Sequence[Any]], Iterable[Any]], share: Sequence[Any], results: Any
) -> None:
    try:
        for piece in fn(share):
            results.put((True, piece))
    except BaseException as exc:
        results.put((False, _sendable(exc)))  # done, failed
    else:
        results.put((False, None))  # done


def fork_pieces(
    fn: Callable[[Sequence[T]], Iterable[R]], items: Sequence[T], processes: int
) -> Iterator[R]:
    """What ``fn`` yields for each of ``processes`` shares of items (every ``processes``-th
    item), each piece as its process makes it, the shares' pieces in the order they come.

    Unlike ``fork_map``, no share's results are held whole, in its process or in this one,
    nor sent as one: each piece is sent on its own, and may be let go once used. A child's
    exception is raised here once every process is done. With one process, or without
    ``fork``, ``fn`` of all items runs here.
    """
    if processes <= 1 or not available() or len(items) <= 1:
        yield from fn(items)
        return
    processes = min(processes, len(items))
    context = multiprocessing.get_context("fork")
    results = context.SimpleQueue()
    workers = [
        context.Process(target=_stream_share, args=(fn, items[i::processes], results))
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    error: BaseException | None = None
    running = len(workers)
    try:
        while running:
            more, piece = results.get()
            if not more:
                running -= 1
                error = error or piece
            elif error is None:
                yield piece
    finally:
        for worker in workers:
            if running:  # left part way (the caller stopped, or raised): not waited for
                worker.kill()
            worker.join()
    if error is not None:
        raise error
    if any(worker.exitcode for worker in workers):
        raise RuntimeError("a worker process died")
