"""Quoted-printable pieces as a message builder joins them (``deliver.qp``)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from digest.deliver import qp


def _general(piece: str) -> bytes:
    """A piece of a line as the general encoder makes it, whatever it holds: with a
    character more (so the soft break fits on its last line), then without it, ended with a
    soft break."""
    encoded = qp.qp(piece + "x")[:-1]
    return encoded if encoded.endswith(qp.SOFT_BREAK) else encoded + qp.SOFT_BREAK


_CHARS = st.sampled_from(["a", "Z", "0", " ", ".", "=", "/", "?", "&", "~", "é", "\t"])
_SAFE = st.sampled_from(["a", "Z", "0", " ", ".", "/", "?", "&", "~"])


@settings(max_examples=2000, deadline=None)
@given(
    st.one_of(
        st.text(alphabet=_CHARS, min_size=1, max_size=90),
        st.text(alphabet=_SAFE, min_size=70, max_size=80),  # around one line's length
    )
)
def test_a_piece_quoted_printable_leaves_alone_is_encoded_as_the_encoder_encodes_it(
    piece: str,
) -> None:
    """Short printable ASCII is kept as it is, with its soft break: the same bytes as the
    general encoder's, for pieces at and around the length that still fits one line."""
    assert qp.run_on(piece) == _general(piece)


def test_a_short_link_is_kept_as_it_is() -> None:
    """The check above is not empty: a reader's link goes as written, one soft break after."""
    url = "https://example.org/unsubscribe/12.0123456789abcdef"
    assert qp.run_on(url) == url.encode() + b"=\r\n"
    assert qp.run_on("." + url) != ("." + url).encode() + b"=\r\n"  # a dot first is escaped
    assert qp.run_on("x" * 76) != b"x" * 76 + b"=\r\n"  # too long for one line with its break
