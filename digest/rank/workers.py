"""Matching and fanning out in several processes, each holding one slice of the papers.

Matching a paper against the index is independent of every other paper, so the
index is built once, then forked: each worker inherits it copy-on-write, analyzes
its slice and sends back its matches as flat arrays (interest ids, counts, scores,
paper indices): a few megabytes that cross a pipe in milliseconds, where pickled
tuples would take seconds. Each worker then receives the others' matches (taking
them in while the parent merges its own copy), so it holds the day's full lists,
and answers its share of the distinct subscriber keys (``DayMatches.best``),
again as flat arrays. Last, it explains the (interest, paper) pairs of its own
papers that made someone's list: it kept their analysis, so nothing is analyzed
twice; the parent builds its objects meanwhile (``Workers.submit``). ``fork`` is
required, to share the index unsent.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import multiprocessing
from array import array
from bisect import bisect_right
from collections.abc import Callable, Sequence
from contextlib import suppress
from itertools import repeat
from multiprocessing.connection import Connection
from typing import Any

from digest import forks
from digest.rank.explain import NO_WORDS, Words
from digest.rank.match import Entry
from digest.rank.types import SUMMED, Answers, Explain, Key

Lists = dict[int, list[Entry]]
# Flat arrays: (interest ids, counts, scores, -paper indices) or (counts, scores, negs, codes).
Packed = tuple["array[int]", "array[int]", "array[float]", "array[int]"]
Handler = Callable[[Any], Any]
# What runs first in a worker, on its slice [lo, hi): the reply to send, and the handler
# of every later request.
Start = Callable[[int, int], tuple[Any, Handler]]


# Below this many (paper, subscriber) pairs a day is ranked in-process: forking and
# shipping the lists back cost more than a second core saves.
PARALLEL_FROM = 10_000_000
MAX_PROCESSES = 8


def give_back_memory(collect: bool = False) -> None:
    """Hand the C allocator's free pages back to the system (glibc's ``malloc_trim``; a
    no-op elsewhere), after the cyclic collector's pass with ``collect``. A process forked
    next starts with this process's resident pages, each counted in its own resident set:
    what was freed but kept by the allocator (a step's rows and texts) then counts in every
    one of them."""
    if collect:
        gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


_TRIM: list[Callable[[int], int] | None] = []


def _malloc_trim() -> Callable[[int], int] | None:
    if not _TRIM:
        found = None
        with suppress(OSError, AttributeError):
            name = ctypes.util.find_library("c")
            found = ctypes.CDLL(name).malloc_trim if name else None
        _TRIM.append(found)
    return _TRIM[0]


def processes_for(pairs: int) -> int:
    """How many worker processes a day of ``pairs`` (paper, subscriber) pairs deserves."""
    return forks.processes_for(pairs, threshold=PARALLEL_FROM, cap=MAX_PROCESSES)


def pack(lists: Lists) -> Packed:
    """Match lists as four flat arrays."""
    qids, counts, scores, negs = array("q"), array("q"), array("d"), array("q")
    for qid, entries in lists.items():
        qids.append(qid)
        counts.append(len(entries))
        got_scores, got_negs, _ = zip(*entries, strict=True)
        scores.extend(got_scores)
        negs.extend(got_negs)
    return qids, counts, scores, negs


def unpack(packed: Packed, into: Lists) -> None:
    """Add packed match lists to ``into`` (unsorted)."""
    qids, counts, scores, negs = packed
    start = 0
    for qid, count in zip(qids, counts, strict=True):
        end = start + count
        entries = list(zip(scores[start:end], negs[start:end], repeat(qid)))
        if qid in into:
            into[qid] += entries
        else:
            into[qid] = entries
        start = end


class Share:
    """A worker's side: answers for keys once it holds every list, and explanations."""

    def __init__(self, lists: Lists, explain: Explain, day: Callable[[Lists], Answers]) -> None:
        self.lists, self.explain, self._make_day = lists, explain, day
        self.day: Answers | None = None
        self._named = 0  # groups of interests already sent with an earlier answer

    def __call__(self, request: tuple[str, Any]) -> Any:
        kind, payload = request
        if kind == "explain":
            return self.explain(payload)
        if kind == "lists":
            # The other workers' matches, sent as soon as they are known: taking them in
            # (and the masks and tables every key needs) overlaps the parent's own work.
            for packed in payload:
                unpack(packed, self.lists)
            for entries in self.lists.values():
                entries.sort(reverse=True)
            self.day = self._make_day(self.lists)
            self.day.prepare()
            return None
        keys = payload
        if self.day is None:
            raise RuntimeError("answers asked for before the lists were sent")
        # Each distinct entry once, and every key's entries as places among them.
        best, seen = self.day.best, dict[Entry, int]()
        counts, places = array("q"), array("q")
        add = seen.setdefault
        for key in keys:
            entries = best(*key)
            counts.append(len(entries))
            places.extend([add(entry, len(seen)) for entry in entries])
        scores, negs, codes = array("d"), array("q"), array("q")
        if seen:
            got_scores, got_negs, got_codes = zip(*seen, strict=True)
            scores.extend(got_scores)
            negs.extend(got_negs)
            codes.extend(got_codes)
        # Only the groups named since the last answer: the parent keeps the earlier ones.
        groups = self.day.groups[self._named :]
        self._named += len(groups)
        return (counts, scores, negs, codes, places), groups


def _serve(start: Start, lo: int, hi: int, conn: Connection) -> None:
    """A worker: run ``start`` on its slice, then answer requests until told to stop."""
    gc.disable()  # the inherited heap is acyclic and large; collecting it would copy it
    try:
        reply, handle = start(lo, hi)
        conn.send(reply)
        while (request := conn.recv()) is not None:
            conn.send(handle(request))
    except BaseException as exc:  # reported to the parent, which raises it
        conn.send(exc)
    finally:
        conn.close()


class Workers:
    """Forked processes, one per slice of ``total`` papers, each running ``start`` first."""

    def __init__(self, total: int, start: Start, processes: int) -> None:
        context = multiprocessing.get_context("fork")
        self.bounds = forks.slices(total, processes)
        self._starts = [lo for lo, _ in self.bounds]
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        self._pending = False
        self._groups: list[list[int]] = [[] for _ in self.bounds]  # each worker's, as ours
        give_back_memory()  # each worker would count what the allocator keeps free
        gc.freeze()  # keeps the children's collector (if any) off the shared pages
        try:
            for lo, hi in self.bounds:
                parent, child = context.Pipe()
                proc = context.Process(target=_serve, args=(start, lo, hi, child), daemon=True)
                proc.start()
                child.close()
                self._conns.append(parent)
                self._procs.append(proc)
        finally:
            gc.unfreeze()

    def _send(self, messages: Sequence[Any]) -> None:
        if not self._conns:
            raise RuntimeError("the worker processes were stopped")
        if self._pending:
            self._pending = False
            self._receive()
        for conn, message in zip(self._conns, messages, strict=True):
            conn.send(message)

    def _receive(self) -> list[Any]:
        replies = []
        for conn in self._conns:
            got = conn.recv()
            if isinstance(got, BaseException):
                raise got
            replies.append(got)
        return replies

    def lists(self) -> Lists:
        """Every worker's matches, merged; each list best first."""
        packs: list[Packed] = self._receive()
        self._send([("lists", packs[:w] + packs[w + 1 :]) for w in range(len(packs))])
        self._pending = True  # their acknowledgements, read before the next request
        lists: Lists = {}
        for packed in packs:
            unpack(packed, lists)
        for entries in lists.values():
            entries.sort(reverse=True)
        return lists

    def answer(
        self, keys: list[Key], register: Callable[[tuple[int, ...]], int]
    ) -> list[tuple[list[Entry], list[tuple[Key, Sequence[int]]]]]:
        """``best`` for each key, the keys shared out; ``register`` gives groups their codes."""
        count = len(self._conns)
        self._send([("answer", keys[w::count]) for w in range(count)])
        parts: list[tuple[list[Entry], list[tuple[Key, Sequence[int]]]]] = []
        for w, ((counts, scores, negs, codes, places), groups) in enumerate(self._receive()):
            # A worker names groups of interests by its own codes: translate them (it sends
            # each group once, with the first answer that names it).
            ours = self._groups[w]
            ours += [register(group) for group in groups]
            mapped = [c if c >= 0 else ours[SUMMED - 1 - c] for c in codes]
            table = list(zip(scores, negs, mapped, strict=True))
            at: list[tuple[Key, Sequence[int]]] = []
            start = 0
            for key, n in zip(keys[w::count], counts, strict=True):
                at.append((key, places[start : start + n]))
                start += n
            parts.append((table, at))
        return parts

    def explain(self, pairs: Sequence[tuple[int, int]]) -> list[Words]:
        """Explanations of (interest id, paper index) pairs, from the workers holding the papers."""
        return self.submit(pairs)()

    def submit(self, pairs: Sequence[tuple[int, int]]) -> Callable[[], list[Words]]:
        """Send pairs to be explained; the returned call waits for their explanations.

        Nothing else may be asked of the workers until it has been called.
        """
        shares: list[list[int]] = [[] for _ in self._conns]
        for i, (_, pidx) in enumerate(pairs):
            shares[bisect_right(self._starts, pidx) - 1].append(i)
        self._send([("explain", [pairs[i] for i in share]) for share in shares])

        def receive() -> list[Words]:
            out: list[Words] = [NO_WORDS] * len(pairs)
            for share, got in zip(shares, self._receive(), strict=True):
                for i, words in zip(share, got, strict=True):
                    out[i] = words
            return out

        return receive

    def close(self) -> None:
        """Stop the workers."""
        for conn in self._conns:
            with suppress(OSError):  # already gone
                conn.send(None)
            conn.close()
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():  # stuck writing a reply nobody reads (after an error)
                proc.terminate()
                proc.join()
        self._conns.clear()
        self._procs.clear()
