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
    back, and would cost a move on every hit.)"""

    def __init__(self, budget: int, size: Callable[[V], int]) -> None:
        self.budget = budget
        self.size = size
        self.held = 0
        self._items: OrderedDict[K, V] = OrderedDict()
        self._sizes: dict[K, int] = {}  # each value's size, counted once as it comes in
        self.get = self._items.get

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: K, value: V) -> V:
        before = self._sizes.get(key)
        if before is not None:
            self.held -= before
        self._items[key] = value
        self._sizes[key] = size = self.size(value)
        self.held += size
        while self.held > self.budget and len(self._items) > 1:
            dropped, _ = self._items.popitem(last=False)
            self.held -= self._sizes.pop(dropped)
        return value
