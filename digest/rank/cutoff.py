"""Where a reader's digest stops: the one cut-off, for readers with votes and without.

A list (best first) stops at ``max_items``, or at the first paper scoring less than its
floor. A reader without votes has the floor ``RELATIVE`` times their best paper's score,
or, when given, a ``threshold`` learned elsewhere, and never less than their own
``min_score``. A reader with votes has their list re-ordered by their model
(``digest.rank.reader_model``), which may object to some papers: an objected paper is left
out when its interests' score is below ``WEAK`` of the reader's best, unless it is among
the ``MIN_KEPT`` best of the list. The votes overrule only the interests' weak matches.

``RELATIVE`` is low on purpose. On the judged set (``tests/test_quality.py``) a paper
scoring a tenth of a reader's best is still often relevant: a reader with several
interests has their best paper matching two of them at once, and one matching a single
interest, in its abstract only, scores far below it. A higher share cut more relevant
papers than irrelevant ones; at this one only near-empty matches go (a soft match on
common words beside a paper matching the whole interest in its title).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

RELATIVE = 0.05  # share of the reader's best score a paper needs to be sent
WEAK = 0.5  # a paper the reader's votes object to goes below this share of their best
MIN_KEPT = 3  # the votes leave at least this many of the best papers

__all__ = ["MIN_KEPT", "RELATIVE", "WEAK", "cut", "kept"]


def kept(
    scores: Sequence[float],
    max_items: int,
    *,
    floor: float = -math.inf,
    objections: Sequence[float | None] = (),
) -> list[int]:
    """The places of ``scores`` (best first) a digest keeps, in order.

    ``objections`` (readers with votes), one per score: None, or the paper's interest
    score relative to the reader's best when their model would rather not send it.
    """
    out: list[int] = []
    for place, score in enumerate(scores):
        if len(out) >= max_items or score < floor:
            break
        weak = objections[place] if objections else None
        if weak is not None and weak < WEAK and place >= MIN_KEPT:
            continue
        out.append(place)
    return out


def cut(
    scores: Sequence[float], max_items: int, min_score: float, threshold: float | None = None
) -> int:
    """How many of ``scores`` (best first) the digest of a reader without votes keeps."""
    if not scores or max_items <= 0:
        return 0
    floor = RELATIVE * scores[0] if threshold is None else threshold
    return len(kept(scores, max_items, floor=max(floor, min_score)))
