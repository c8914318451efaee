"""A paper's arXiv id is read whole or not at all."""

from __future__ import annotations

import pytest

from digest.ingest.identity import normalize_arxiv_id


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2403.01234", "2403.01234"),
        ("2403.01234v2", "2403.01234"),
        ("0704.0001", "0704.0001"),
        ("arXiv:2403.01234", "2403.01234"),
        ("https://arxiv.org/abs/2403.01234v3", "2403.01234"),
        ("https://arxiv.org/pdf/2403.01234v1.pdf", "2403.01234"),
        ("arXiv:2403.01234v1 Announce Type: new", "2403.01234"),
        ("see 2403.01234.", "2403.01234"),
        ("hep-th/9901001v2", "hep-th/9901001"),
        ("http://arxiv.org/abs/hep-th/9901001v1", "hep-th/9901001"),
        # one digit too many is another identifier, never this one cut short
        ("2403.123456", None),
        ("2403.123456v1", None),
        ("12403.12345", None),
        ("hep-th/99010011", None),
        ("", None),
        ("no id here", None),
    ],
)
def test_arxiv_ids_are_never_shortened(raw: str, expected: str | None) -> None:
    assert normalize_arxiv_id(raw) == expected
