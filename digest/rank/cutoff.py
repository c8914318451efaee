"""Where a reader's digest stops: where the scores fall away from the best item.

The list stops at the first paper scoring less than ``RELATIVE`` times the reader's best
one, or, when given, less than a ``threshold`` learned elsewhere (from the reader's
feedback, say). ``max_items`` stays the cap and ``min_score`` the reader's own floor.

``RELATIVE`` is low on purpose. On the judged set (``tests/test_quality.py``) a paper
scoring a tenth of a reader's best is still often relevant: a reader with several
interests has their best paper matching two of them at once, and one matching a single
interest, in its abstract only, scores far below it. A higher share cut more relevant
papers than irrelevant ones; at this one only near-empty matches go (a soft match on
common words beside a paper matching the whole interest in its title).
"""

from __future__ import annotations

from collections.abc import Sequence

RELATIVE = 0.05  # share of the reader's best score a paper needs to be sent


def cut(
    scores: Sequence[float], max_items: int, min_score: float, threshold: float | None = None
) -> int:
    """How many of ``scores`` (best first) the digest keeps."""
    if not scores or max_items <= 0:
        return 0
    floor = RELATIVE * scores[0] if threshold is None else threshold
    floor = max(floor, min_score)
    kept = 0
    for score in scores[:max_items]:
        if score < floor:
            break
        kept += 1
    return kept
