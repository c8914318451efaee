"""Fan-out: each subscriber's top papers, drawn from the day's matches per interest.

A subscriber's score for a paper is the sum over their matching interests.
Papers that match several of a subscriber's interests are few and found with bit
masks and set intersections; every other paper scores what its one interest gives
it, so it can only make the top k if it is among the first k (plus the summed
ones) of that interest's list. Merging those heads with the few summed papers
gives the exact top k. Subscribers with the same interests and limits share one
answer; explanations (``InterestHit``) are built once per (interest, paper) and
``Ranked`` items once per distinct entry, all shared. Answers and explanations
can come from worker processes (``digest.rank.workers``) through callables; while
the workers explain, the objects are built with the words left to fill in.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import chain, repeat
from operator import add

from digest.rank.explain import Words
from digest.rank.match import Entry
from digest.rank.types import (
    SUMMED,
    Explain,
    InterestHit,
    Interests,
    Key,
    PaperText,
    Profile,
    Ranked,
)

_FEW = 48  # up to this many summed papers, they are read off a bit mask
# Starts explaining pairs elsewhere; what it returns waits for the answer.
Submit = Callable[[Sequence[tuple[int, int]]], Callable[[], list[Words]]]
# Answers (``best``) for many keys at once, from elsewhere, in parts: each with its distinct
# entries, and (key, the places of its entries among those). The callable registers groups.
Answer = Callable[
    [list[Key], Callable[[tuple[int, ...]], int]],
    list[tuple[list[Entry], list[tuple[Key, Sequence[int]]]]],
]


@contextmanager
def no_collection() -> Iterator[None]:
    """Hold off the cycle collector while building millions of small acyclic objects.

    It would otherwise walk the growing heap again and again (a third of the run).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            # The objects made meanwhile would all be walked by the first collection after
            # this (about 0.7 s); they are acyclic and freed by reference counting, so the
            # collector may as well leave them, and whatever else is alive now, out.
            gc.freeze()
            gc.enable()


class DayMatches:
    """One day's matches per interest, and the subscribers' top papers drawn from them.

    An entry summed over several interests carries, instead of an interest id, a negative
    number naming that group of interests (``group``). Each distinct entry becomes one
    ``Ranked`` item, shared by every list it appears in.
    """

    def __init__(
        self,
        index: Interests,
        papers: Sequence[PaperText],
        lists: dict[int, list[Entry]],
        explain: Explain,
        close: Callable[[], None] | None = None,
        answer: Answer | None = None,
        submit: Submit | None = None,
    ) -> None:
        self.index = index
        self.papers = papers  # in id order: a paper's index is its place here
        self.lists = lists  # interest id → its matches, best first
        self.ids = [paper.id for paper in papers]
        self._explain = explain
        self._close = close
        self._answer = answer
        self._submit = submit
        self._tables: dict[int, dict[int, float]] = {}
        self._masks: dict[int, int] = {}
        self._groups: list[tuple[int, ...]] = []
        self._group_ids: dict[tuple[int, ...], int] = {}
        self._hits: dict[tuple[int, int], InterestHit] = {}
        self._items: dict[Entry, Ranked] = {}
        self._shared: dict[Key, list[Ranked]] = {}

    def close(self) -> None:
        """Stop the worker processes, if any; later questions needing them then fail."""
        if self._close is not None:
            self._close()
            self._close = self._answer = self._submit = None

    def __enter__(self) -> DayMatches:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _table(self, qid: int) -> dict[int, float]:
        """-paper index → score for one interest."""
        table = self._tables.get(qid)
        if table is None:
            table = self._tables[qid] = {neg: s for s, neg, _ in self.lists.get(qid, ())}
        return table

    def _mask(self, qid: int) -> int:
        """The papers one interest matches, as bits of an int (bit i: paper index i)."""
        mask = self._masks.get(qid)
        if mask is None:
            mask = 0
            for _, neg, _ in self.lists.get(qid, ()):
                mask |= 1 << -neg
            self._masks[qid] = mask
        return mask

    def prepare(self) -> None:
        """Build every interest's score table and bit mask now rather than on first use."""
        for qid in self.lists:
            self._table(qid)
            self._mask(qid)

    @property
    def groups(self) -> list[tuple[int, ...]]:
        """The groups of interests named so far; code ``SUMMED - 1 - i`` names the i-th."""
        return self._groups

    def group(self, code: int) -> tuple[int, ...]:
        """The interest ids behind an entry's interest field (one id, or a group)."""
        return (code,) if code >= 0 else self._groups[SUMMED - 1 - code]

    def _group_code(self, qids: tuple[int, ...]) -> int:
        code = self._group_ids.get(qids)
        if code is None:
            self._groups.append(qids)
            code = self._group_ids[qids] = SUMMED - len(self._groups)
        return code

    def scores(self, qid: int) -> dict[int, float]:
        """Paper index → score for one interest."""
        return {-neg: score for neg, score in self._table(qid).items()}

    def best(
        self,
        qids: Sequence[int],
        limit: int,
        min_score: float,
        allowed: Collection[int] | None = None,
    ) -> list[Entry]:
        """The exact top ``limit`` entries for a set of interests, scores summed.

        ``allowed`` holds the paper ids that may be chosen (``None``: all).

        A paper matching several of the interests gets its sum computed explicitly (bit
        masks tell in a few machine words which interests share any paper). Any other
        paper scores only what its one interest gives it, so it can make the top
        ``limit`` only if it is among the first ``limit`` allowed, unsummed papers of
        its list: the answer is a merge of the lists' heads with the summed papers.
        """
        if limit <= 0 or not qids:
            return []
        masks = [self._mask(q) for q in qids]
        overlap = 0
        for i in range(1, len(masks)):
            for j in range(i):
                overlap |= masks[i] & masks[j]
        tables: list[dict[int, float]] = []
        several: set[int] = set()
        chosen: list[Entry] = []
        if overlap:
            tables, several, chosen = self._sums(qids, masks, overlap)
            if allowed is not None:
                ids = self.ids
                chosen = [entry for entry in chosen if ids[-entry[1]] in allowed]
        for q, mask in zip(qids, masks, strict=True):
            entries = self.lists.get(q)
            if not entries:
                continue
            if allowed is None:
                # The head, long enough to hold ``limit`` papers besides the summed ones.
                chosen += (
                    entries[: limit + (overlap & mask).bit_count()] if overlap else entries[:limit]
                )
            else:
                chosen += self._allowed_head(entries, limit, min_score, several, allowed)
        if len(qids) > 1:
            chosen.sort(reverse=True)
        if several:
            chosen = self._merged(chosen, qids, tables, several, limit)
        else:
            del chosen[limit:]
        while chosen and chosen[-1][0] < min_score:
            chosen.pop()
        return chosen

    def _allowed_head(
        self,
        entries: list[Entry],
        limit: int,
        min_score: float,
        several: set[int],
        allowed: Collection[int],
    ) -> list[Entry]:
        """The first ``limit`` entries of one interest's list that may be chosen and are
        not summed."""
        ids = self.ids
        out: list[Entry] = []
        for entry in entries:
            if entry[0] < min_score:
                break
            if entry[1] in several or ids[-entry[1]] not in allowed:
                continue
            out.append(entry)
            if len(out) == limit:
                break
        return out

    def _merged(
        self,
        chosen: list[Entry],
        qids: Sequence[int],
        tables: list[dict[int, float]],
        several: set[int],
        limit: int,
    ) -> list[Entry]:
        """The first ``limit`` of the chosen entries, each summed paper once, named by the
        group of interests it came from, and not again by any one of them."""
        out: list[Entry] = []
        for entry in chosen:
            total, neg, code = entry
            if code == SUMMED:
                # Which interests a summed paper came from is looked up only if it makes it.
                group = tuple(q for q, table in zip(qids, tables, strict=True) if neg in table)
                out.append((total, neg, self._group_code(group)))
            elif neg in several:
                continue  # counted in its sum
            else:
                out.append(entry)
            if len(out) == limit:
                break
        return out

    def _sums(
        self, qids: Sequence[int], masks: list[int], overlap: int
    ) -> tuple[list[dict[int, float]], set[int], list[Entry]]:
        """The tables of qids, the papers several of them match, and those papers' entries."""
        tables = [self._table(q) for q in qids]
        several: set[int] = set()
        if overlap.bit_count() <= _FEW:
            # Read off the bits: cheaper than intersecting tables, and it leaves them in memory
            # (two workers side by side are slowed most by cache misses).
            while overlap:
                low = overlap & -overlap
                several.add(1 - low.bit_length())  # bit i is paper index i: -i
                overlap ^= low
        else:
            for i in range(1, len(masks)):
                for j in range(i):
                    if masks[i] & masks[j]:
                        several |= tables[i].keys() & tables[j].keys()
        papers = list(several)
        # Summed in interest order, as one would by hand (adding 0.0 changes nothing).
        totals = list(map(tables[0].get, papers, repeat(0.0)))
        for table in tables[1:]:
            totals = list(map(add, totals, map(table.get, papers, repeat(0.0))))
        return tables, several, list(zip(totals, papers, repeat(SUMMED)))

    def _covers_day(self, allowed: Collection[int]) -> bool:
        """Whether a candidate set lets through every paper of the day."""
        return len(allowed) >= len(self.ids) and all(pid in allowed for pid in self.ids)

    def hit(self, qid: int, pidx: int) -> InterestHit:
        """The explanation of one interest matching one paper."""
        hit = self._hits.get((qid, pidx))
        if hit is None:
            self._explain_all([(qid, pidx)])
            hit = self._hits[(qid, pidx)]
        return hit

    def _explain_all(self, pairs: Iterable[tuple[int, int]]) -> None:
        """Build the missing explanations among pairs, in one batch (one round trip)."""
        self._request(pairs)()

    def _request(self, pairs: Iterable[tuple[int, int]]) -> Callable[[], None]:
        """Start explaining the missing pairs; what it returns completes their explanations.

        The ``InterestHit`` objects exist at once, without their words: everything that
        refers to them can be built while the workers explain.
        """
        hits = self._hits
        missing = [pair for pair in dict.fromkeys(pairs) if pair not in hits]
        if not missing:
            return lambda: None
        if self._submit is not None:
            words = self._submit(missing)
        else:
            done = self._explain(missing)

            def words() -> list[Words]:
                return done

        texts, table = self.index.texts, self._table
        made = [InterestHit(texts[qid], table(qid)[-pidx], (), ()) for qid, pidx in missing]
        hits.update(zip(missing, made, strict=True))

        def finish() -> None:
            try:
                got = words()
            except BaseException:
                for pair in missing:  # no explanation without its words survives a failure
                    del hits[pair]
                raise
            put = object.__setattr__
            for hit, (terms, fields, marks) in zip(made, got, strict=True):
                # Frozen to its users; set here once, as dataclasses' own __init__ does.
                put(hit, "terms", terms)
                put(hit, "fields", fields)
                put(hit, "marks", marks)

        return finish

    def _materialize(self, entries: Sequence[Entry]) -> Callable[[], None]:
        """Build the ``Ranked`` items of the entries not seen before; call what it returns.

        The explanations are asked for first and completed by the returned call, so the
        caller can use the wait (the workers' part) to build what holds the items.
        """
        items, groups = self._items, self._groups
        new = [entry for entry in dict.fromkeys(entries) if entry not in items]
        # Most entries come from one interest: spelled out, not through ``group`` (a few
        # hundred thousand calls saved in the parent while the workers wait).
        finish = self._request(
            chain.from_iterable(
                ((code, -neg),) if code >= 0 else [(q, -neg) for q in groups[SUMMED - 1 - code]]
                for _, neg, code in new
            )
        )
        hits, ids = self._hits, self.ids
        for entry in new:
            total, neg, code = entry
            if code >= 0:
                found: tuple[InterestHit, ...] = (hits[(code, -neg)],)
            else:
                found = tuple([hits[(q, -neg)] for q in groups[SUMMED - 1 - code]])
            items[entry] = Ranked(ids[-neg], total, found)

        def fill() -> None:
            try:
                finish()
            except BaseException:
                for entry in new:  # nor any item holding one
                    del items[entry]
                raise

        return fill

    def ranked(self, profile: Profile, allowed_ids: Collection[int] | None = None) -> list[Ranked]:
        """A profile's papers, best first, each with its explanation."""
        allowed = None if allowed_ids is None else {profile.id: allowed_ids}
        return self.ranked_many([profile], allowed)[profile.id]

    def ranked_many(
        self,
        profiles: Iterable[Profile],
        candidates: Mapping[int, Collection[int]] | None = None,
    ) -> dict[int, list[Ranked]]:
        """Every profile's papers; ``candidates[profile id]`` limits which papers (ids).

        A profile without candidates, or whose candidates hold every paper of the day,
        is not limited: such profiles share answers by interests and limits (most readers
        share one cut-off, the last run). Profiles given the same candidate set (the same
        object) share answers too.
        """
        with no_collection():
            # Every answer first, then the explanations they need in one batch (one round
            # trip to the workers each, during which the items and lists are built).
            shared, best = self._shared, self.best
            plans: list[tuple[int, Key, list[Entry] | None]] = []
            missing: dict[Key, None] = {}
            whole: dict[int, bool] = {}  # id of a candidate set → whether it is the whole day
            limited: dict[tuple[Key, int], list[Entry]] = {}
            for profile in profiles:
                qids = self.index.profiles.get(profile.id, ())
                key = (qids, profile.max_items, profile.min_score)
                allowed = None if candidates is None else candidates.get(profile.id)
                if allowed is not None:
                    covers = whole.get(id(allowed))
                    if covers is None:
                        covers = whole[id(allowed)] = self._covers_day(allowed)
                    if not covers:
                        entries = limited.get((key, id(allowed)))
                        if entries is None:
                            entries = limited[(key, id(allowed))] = best(*key, allowed)
                        plans.append((profile.id, key, entries))
                        continue
                if key not in shared:
                    missing[key] = None
                plans.append((profile.id, key, None))
            keys = list(missing)
            item = self._items.__getitem__
            if self._answer is not None and len(keys) > 1:
                # From the workers: their distinct entries, and each key's as places in those.
                parts = self._answer(keys, self._group_code)
                table = [entry for part, _ in parts for entry in part]
                fill = self._materialize(table)  # the workers explain while lists are built
                ranked = list(map(item, table))
                start = 0
                for part, places in parts:
                    mine = ranked[start : start + len(part)].__getitem__
                    start += len(part)
                    for key, at in places:
                        shared[key] = list(map(mine, at))
                try:
                    fill()
                except BaseException:
                    for key in keys:  # their items have no hits
                        shared.pop(key, None)
                    raise
                keys = []
            answers = [best(*key) for key in keys]
            self._materialize(list(chain.from_iterable(answers + list(limited.values()))))()
            for key, entries in zip(keys, answers, strict=True):
                shared[key] = list(map(item, entries))
            return {
                pid: list(shared[key]) if entries is None else list(map(item, entries))
                for pid, key, entries in plans
            }
