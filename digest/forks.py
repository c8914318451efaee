"""Forked worker processes: whether they are available, how many, and a plain map.

Forked children inherit what the parent built (an interest index, rendered
feed items) copy-on-write, so nothing is pickled on the way in; only results
come back. Without ``fork`` (macOS spawn, Windows) everything runs in-process.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import pickle
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import pairwise
from typing import Any, TypeVar, cast

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


def _sendable(exc: BaseException) -> BaseException:
    """``exc``, or what it says when it cannot be pickled to the parent."""
    try:
        pickle.dumps(exc)
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def _send_share(
    fn: Callable[[Sequence[Any]], Iterable[Any]], share: Sequence[Any], out: Any
) -> None:
    """In a forked child: each piece ``fn`` yields for the share, sent as made, then
    (False, None), or (False, the exception) when it failed."""
    try:
        for piece in fn(share):
            out.send((True, piece))
    except BaseException as exc:  # reported to the parent, which raises it there
        out.send((False, _sendable(exc)))
    else:
        out.send((False, None))
    finally:
        out.close()


def _shares(
    fn: Callable[[Sequence[T]], Iterable[R]], items: Sequence[T], processes: int
) -> Iterator[tuple[int, R]]:
    """Each piece ``fn`` yields for each of ``processes`` shares of items (every
    ``processes``-th item), with its share's number, as each forked process sends it.

    A child's exception is raised once every child is done. A child that dies before it
    is done (killed: by the system short of memory, say) is an error too, raised as soon
    as it is seen, the others stopped: nothing waits for what will never come. A caller
    that stops part way leaves no child running."""
    context = multiprocessing.get_context("fork")
    workers = []
    reading: dict[Any, int] = {}
    for i in range(processes):
        receiving, sending = context.Pipe(duplex=False)
        worker = context.Process(target=_send_share, args=(fn, items[i::processes], sending))
        worker.start()
        # the child's end closed here before the next child is forked: only the child
        # holds it, so its end is seen as soon as the child is gone
        sending.close()
        workers.append(worker)
        reading[receiving] = i
    pipes = list(reading)
    error: BaseException | None = None
    try:
        while reading:
            for ready in multiprocessing.connection.wait(list(reading)):
                i = reading[ready]
                try:
                    message: tuple[bool, Any] = cast(Any, ready).recv()
                except EOFError:  # its end closed with nothing more: it died part way
                    workers[i].join()
                    raise RuntimeError(
                        f"a worker process died (exit code {workers[i].exitcode})"
                    ) from None
                more, piece = message
                if not more:
                    del reading[ready]
                    error = error or piece
                elif error is None:
                    yield i, piece
    finally:
        for worker in workers:
            if worker.is_alive() and reading:  # stopped part way: not waited for
                worker.kill()
            worker.join()
        for receiving in pipes:
            receiving.close()
    if error is not None:
        raise error


def fork_map(fn: Callable[[Sequence[T]], R], items: Sequence[T], processes: int) -> list[R]:
    """``fn`` of each of ``processes`` shares of items (every ``processes``-th item), in order.

    Each share runs in a forked child; a child's exception is raised here, and a child
    that dies is an error. With one process, or without ``fork``, the one share is all
    items, run here.
    """
    if processes <= 1 or not available() or len(items) <= 1:
        return [fn(items)]
    processes = min(processes, len(items))
    found: dict[int, R] = {}
    for i, result in _shares(lambda share: [fn(share)], items, processes):
        found[i] = result
    return [found[i] for i in range(processes)]


def fork_pieces(
    fn: Callable[[Sequence[T]], Iterable[R]], items: Sequence[T], processes: int
) -> Iterator[R]:
    """What ``fn`` yields for each of ``processes`` shares of items (every ``processes``-th
    item), each piece as its process makes it, the shares' pieces in the order they come.

    Unlike ``fork_map``, no share's results are held whole, in its process or in this one,
    nor sent as one: each piece is sent on its own, and may be let go once used. A child's
    exception is raised here once every process is done; a child that dies is an error.
    With one process, or without ``fork``, ``fn`` of all items runs here.
    """
    if processes <= 1 or not available() or len(items) <= 1:
        yield from fn(items)
        return
    for _, piece in _shares(fn, items, min(processes, len(items))):
        yield piece
