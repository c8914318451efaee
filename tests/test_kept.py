"""A cache held to a number of bytes (``deliver.kept.Kept``)."""

from __future__ import annotations

from digest.deliver.kept import Kept


def test_what_is_held_is_counted_once_and_the_oldest_goes_first() -> None:
    kept: Kept[str, bytes] = Kept(10, len)
    kept.put("a", b"1234")
    kept.put("a", b"123")  # the same key again: counted once, at its new size
    assert kept.held == 3 and len(kept) == 1
    kept.put("b", b"1234")
    kept.put("c", b"1234")  # 11 bytes: the oldest goes
    assert kept.get("a") is None and kept.get("b") == b"1234" and kept.get("c") == b"1234"
    assert kept.held == 8
    kept.put("d", b"x" * 30)  # more than the budget alone: kept, everything else let go
    assert len(kept) == 1 and kept.held == 30
