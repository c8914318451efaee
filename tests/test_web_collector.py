"""A web worker's garbage collector: a full pass freezes what it found in use, so the next
one looks only at what became long-lived since; garbage is still freed, and a pass over
everything comes back every ``whole_every`` seconds."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from digest.web import collector
from digest.web.app import app_from_environment
from digest.web.collector import Collector
from tests.conftest import Site


class Node:
    """A cycle's member, weakly referable: whether it was freed can be asked."""

    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> tuple[weakref.ref[Node], Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a), a


def tracked(thing: object) -> bool:
    """Whether the collector's generations (not its frozen objects) hold ``thing``."""
    return any(found is thing for found in gc.get_objects())


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Iterator[tuple[Collector, Clock]]:
    time = Clock()
    made = Collector(whole_every=60, clock=time)
    made.install()
    try:
        yield made, time
    finally:
        made.uninstall()


def test_a_full_pass_freezes_what_it_kept(clock: tuple[Collector, Clock]) -> None:
    frozen = gc.get_freeze_count()
    assert frozen > 0  # what start-up made
    kept = [[] for _ in range(100)]
    assert tracked(kept)  # a full pass would look at it
    gc.collect()
    assert not tracked(kept)  # frozen: full passes skip it now
    assert gc.get_freeze_count() >= frozen + len(kept)


def test_garbage_made_between_passes_is_still_collected(clock: tuple[Collector, Clock]) -> None:
    gone, node = cycle()
    del node
    gc.collect()
    assert gone() is None
    # freed by its reference count even when frozen
    kept = Node()
    held = weakref.ref(kept)
    gc.collect()
    assert not tracked(kept)
    del kept
    assert held() is None


def test_a_frozen_cycle_is_freed_by_the_pass_over_everything(
    clock: tuple[Collector, Clock],
) -> None:
    _, time = clock
    gone, node = cycle()
    gc.collect()  # in use: frozen
    del node
    gc.collect()
    assert gone() is not None  # frozen garbage waits
    time.now = 61
    gc.collect()  # hands the frozen objects back for the next full pass
    assert gone() is not None
    gc.collect()
    assert gone() is None
    kept = [[] for _ in range(10)]
    gc.collect()  # the clock did not move: frozen again
    assert not tracked(kept)


def test_full_passes_come_often_once_they_are_short(clock: tuple[Collector, Clock]) -> None:
    # the middle generation's passes that make a full pass due: fewer than CPython's 10
    assert gc.get_threshold()[2] == collector.FULL_AFTER < 10
    seen: list[int] = []

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            seen.append(info["generation"])

    # CPython waits until the objects promoted since the last full pass are a quarter of
    # those it kept: after one pass over what is not frozen yet, that is few
    gc.collect()
    gc.callbacks.append(note)
    try:
        kept = [[[] for _ in range(50)] for _ in range(2_000)]  # long-lived: promoted
    finally:
        gc.callbacks.remove(note)
    assert 2 in seen
    assert not tracked(kept[0])  # a full pass froze it


def test_uninstall_leaves_the_collector_as_it_was() -> None:
    before = gc.get_threshold()
    made = Collector()
    made.install()
    made.uninstall()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    kept = [[] for _ in range(10)]
    gc.collect()
    assert tracked(kept)


def test_digest_web_workers_keep_full_passes_short(site: Site) -> None:
    assert not collector._worker.installed
    try:
        app_from_environment()
        assert collector._worker.installed
        assert gc.get_freeze_count() > 0
    finally:
        collector._worker.uninstall()
