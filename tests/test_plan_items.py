"""An outbox item's row: its paper, its score as stored, and its explanation as the JSON of
its hits (and of the liked paper it was chosen for), made once per distinct item however
many readers' lists hold it."""

from __future__ import annotations

import json

from digest.deliver.plan import _Items
from digest.rank.types import InterestHit, Ranked, hits_from_json, hits_to_json

SPEECH = InterestHit("speech", 1.23456789, ("Speech", "speech"), ("title",))
MARKED = InterestHit(
    '"language model" — “quoted”', 0.5, ("language", "models"), ("abstract",), (((1, 4, 19),), "x")
)
PREFIX = InterestHit("diffus*", 2.0, ("diffusion",), ("title", "abstract"), ((), "diffusion"))


def _written(item: Ranked) -> str:
    """The stored explanation as one ``json.dumps`` of the whole list writes it."""
    rows = hits_to_json(item.hits)
    if item.because:
        rows.append({"liked": item.because})
    return json.dumps(rows)


def test_item_rows_are_the_json_of_their_hits_written_at_once() -> None:
    items = [
        Ranked(1, 3.14159, (SPEECH, MARKED)),
        Ranked(2, 2.0, (MARKED,)),  # shares a hit with the first
        Ranked(3, 1.0, (SPEECH, MARKED, PREFIX), because="Über “speech” models"),
        Ranked(4, 0.25, ()),
        Ranked(5, 0.5, (PREFIX,), because="plain"),
    ]
    rows = _Items()
    for item in items:
        paper, score, matched = rows(item)
        assert (paper, score) == (item.paper_id, round(item.score, 4))
        assert matched == _written(item)
        assert [hit.interest for hit in hits_from_json(matched)] == [
            hit.interest for hit in item.hits
        ]


def test_an_item_met_again_is_the_same_row() -> None:
    rows = _Items()
    item = Ranked(1, 1.0, (SPEECH,))
    assert rows(item) is rows(item)
