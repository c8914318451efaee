"""A cache held to a number of bytes, for what a message builder shares between readers."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Kept(Generic[K, V]):
    """A cache that holds at most ``budget`` bytes of values (as ``size`` counts them, the
    keys' own objects shared with the views apart), the oldest let go first: what a run's
    builder keeps does not grow with the number of readers. (First in, first out: readers
    come in no order, so keeping the most recently used would keep no more of what comes
    back, and would cost a move on every hit.) ``size`` is asked again of a value let go: it
    must be cheap (a length or two) and the same each time."""

    def __init__(self, budget: int, size: Callable[[V], int]) -> None:
        self.budget = budget
        self.size = size
        self.held = 0
        self._items: OrderedDict[K, V] = OrderedDict()
        self.get = self._items.get

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: K, value: V) -> V:
        items, size = self._items, self.size
        before = items.get(key)
        if before is not None:
            self.held -= size(before)
        items[key] = value
        self.held += size(value)
        while self.held > self.budget and len(items) > 1:
            self.held -= size(items.popitem(last=False)[1])
        return value
