"""Sending from forked processes: a large outbox goes out from one sender a core, each
forked from the run's process (so it inherits what the run's builder worked out), each a
sender of its own in the store (its own claims and lease), their outcomes folded together."""

from __future__ import annotations

import gc
import multiprocessing
import pickle
import signal
import threading
from collections.abc import Callable
from typing import Any

from digest import forks
from digest.deliver.send import Delivered
from digest.errors import DeliveryError

# Building a message costs about as much CPU as the mail server's side of taking it: one
# sender per core (two here) keeps a local server busy, more only share the same cores.
MAX_SENDERS = 2
SENDERS_FROM = 4_000  # digests waiting: fewer go out about as soon from one process


def senders_for(waiting: int) -> int:
    """How many sending processes an outbox of ``waiting`` digests deserves (forked, each
    its own sender with its own claims and connections)."""
    return forks.processes_for(waiting, threshold=SENDERS_FROM, cap=MAX_SENDERS)


def in_processes(
    count: int, send: Callable[[threading.Event], Delivered], stop: threading.Event | None
) -> Delivered:
    """``send`` in ``count`` forked processes at once, each one of the store's senders (its
    own claims, so each digest goes out once), and what they did folded together. Each is
    given an event of its own that is set when ``stop`` is (or when it is sent SIGTERM);
    the pass waits for all of them. One process (or no ``fork``): ``send`` here."""
    if count <= 1 or not forks.available():
        return send(stop or threading.Event())
    context = multiprocessing.get_context("fork")
    results = context.SimpleQueue()
    stopping = context.Event()
    children = [
        context.Process(target=_one_sender, args=(send, results, stopping), daemon=True)
        for _ in range(count)
    ]
    # What this process holds is set apart from the collector's passes while the senders
    # fork (``gc.freeze``): they inherit it apart, so their collector never walks it (nor
    # writes to its pages, which then stay shared with this process).
    gc.freeze()
    try:
        for child in children:
            child.start()
    finally:
        gc.unfreeze()
    answers: list[Delivered | BaseException] = []
    while len(answers) < count:
        if stop is not None and stop.is_set():
            stopping.set()
        if not results.empty():
            answers.append(results.get())
        elif not any(child.is_alive() for child in children) and results.empty():
            break
        else:
            children[0].join(0.05)
    for child in children:
        child.join()
    total = Delivered()
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
        total.add(answer)
    if len(answers) < count:
        raise DeliveryError("a sending process died; its digests go out after their lease")
    return total


def _one_sender(
    send: Callable[[threading.Event], Delivered], results: Any, stopping: Any
) -> None:  # runs in a forked child
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def watch() -> None:
        stopping.wait()
        stop.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        results.put(send(stop))
    except BaseException as exc:
        results.put(exc if _picklable(exc) else DeliveryError(f"{type(exc).__name__}: {exc}"))


def _picklable(exc: BaseException) -> bool:
    try:
        pickle.dumps(exc)
    except Exception:
        return False
    return True
