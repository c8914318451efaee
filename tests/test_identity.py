"""A paper's arXiv id is read whole or not at all."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from digest.ingest.dumps import Clock, ingest_paths
from digest.ingest.identity import damaged_twin, normalize_arxiv_id, normalize_title

CLOCK = Clock(lambda: datetime(2026, 3, 12, 8, 0, tzinfo=UTC))


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


# --- a damaged byte in a title known without an arXiv id ---------------------------------

ABSTRACT = "We study a problem. Our method improves the baseline on every benchmark we tried."


def _ingest_bytes(engine: Engine, tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    (result,) = ingest_paths(engine, [path], clock=CLOCK)
    assert result.status == "ok", result.error


def _titles(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT title, times_seen FROM paper")).all()
    return {str(title): int(times) for title, times in rows}


CLEAN = "A Study of Caf\u00e9 Recommenders \u2013 Self\u2013Supervised"


@pytest.mark.parametrize(
    ("damage", "same"),
    [
        # the second byte of "é" lost: a replacement character stands for it
        (lambda b: b.replace("\u00e9".encode(), b"\xc3 ", 1).replace(b"\xc3 ", b"\xc3", 1), True),
        # a stray byte added inside a word
        (lambda b: b.replace(b"Study", b"St\xe1udy", 1), True),
        # an en dash (folded to a space in the key) damaged
        (lambda b: b.replace("\u2013".encode(), b"\x96", 1), True),
        # damaged, and another word too: another paper
        (
            lambda b: b.replace(b"Study", b"St\xe1udy", 1).replace(b"Recommenders", b"Rankers"),
            False,
        ),
    ],
)
def test_a_damaged_byte_in_a_known_title_is_the_same_paper(
    engine: Engine, tmp_path: Path, damage: Callable[[bytes], bytes], same: bool
) -> None:
    clean = f"{CLEAN}\n{ABSTRACT}\n".encode()
    _ingest_bytes(engine, tmp_path, "clean.txt", clean)
    damaged = damage(clean)
    assert "\ufffd".encode() in damaged.decode("utf-8", "replace").encode()
    _ingest_bytes(engine, tmp_path, "damaged.txt", damaged)
    titles = _titles(engine)
    if same:
        assert titles == {CLEAN: 2}  # the undamaged title is kept
    else:
        assert len(titles) == 2 and titles[CLEAN] == 1


def test_damaged_twin_pattern() -> None:
    assert damaged_twin("Plain Title Without Damage") is None
    assert damaged_twin("\ufffdShort") is None  # no clean start to look it up by
    found = damaged_twin("Gerv\ufffdsio and Caf\ufffds: A Study")
    assert found is not None
    prefix, pattern = found
    assert prefix == "gerv"
    assert pattern.fullmatch(normalize_title("Gerv\u00e1sio and Caf\u00e9s: A Study"))
    assert not pattern.fullmatch(normalize_title("Gervasio and Cafes: Another Study"))
