"""Quoted-printable as digest messages carry it: CRLF line ends, no line starting with a
dot, and encoded pieces that join.

Quoted-printable is line-local, and a soft line break (``=`` at a line's end) ends an
encoded line without ending the line of text. So a piece of text encoded on its own and
ended with a soft break joins the next piece encoded on its own: the joined bytes decode
to the texts joined, and no line grows past 76 characters. A message is such pieces: the
parts of its shell, each paper's parts, each encoded once however many messages carry
it, and the reader's tokens between them.
"""

from __future__ import annotations

import binascii

from digest.present.paper import TOKEN

SOFT_BREAK = b"=\r\n"
# Encoded text cut where a reader's token goes: joined with the token between each two.
Parts = tuple[bytes, ...]


def qp(text: str) -> bytes:
    """Quoted-printable with CRLF line ends; ``text`` must end with a line break."""
    encoded = binascii.b2a_qp(text.encode("utf-8"), istext=True).replace(b"\n", b"\r\n")
    if encoded.startswith(b".") or b"\n." in encoded:
        return _no_leading_dots(encoded)
    return encoded


def _no_leading_dots(encoded: bytes) -> bytes:
    """A line's first "." as "=2E" (the same in quoted-printable): with no line starting with
    a dot, the SMTP transport has no dot-stuffing pass to make over the whole message. A line
    that grows past 76 characters by it is broken again, never inside an escape."""
    pending = encoded.split(b"\r\n")[::-1]
    out = []
    while pending:
        line = pending.pop()
        if line.startswith(b"."):
            line = b"=2E" + line[1:]
        if len(line) > 76:
            cut = 75 - (line[74] == ord("=")) - 2 * (line[73] == ord("="))
            out.append(line[:cut] + b"=")
            pending.append(line[cut:])
        else:
            out.append(line)
    return b"\r\n".join(out)


def encode(text: str) -> Parts:
    """``text`` quoted-printable, cut where ``TOKEN`` stands; a piece of a line, or lines.

    Joined with a token between each two, the parts are the encoding of the text with the
    token there; encoded pieces joined one after the other are the encoding of the texts
    joined. Each token, and each piece not ending with a line break, ends with a soft line
    break: quoted-printable is line-local, and a soft break ends an encoded line without
    ending the line of text, so no line grows past 76 characters and nothing, token or
    piece, is ever cut by one. A token (``<id>.<hex>``, at most 51 characters, never starting
    with a dot) is ASCII that quoted-printable leaves as it is.
    """
    pieces = text.split(TOKEN)
    parts = []
    for number, piece in enumerate(pieces):
        if piece.endswith("\n"):
            encoded = qp(piece)
        elif piece:
            encoded = run_on(piece)
        else:
            encoded = b""
        parts.append(SOFT_BREAK + encoded if number else encoded)
    return tuple(parts)


def run_on(piece: str) -> bytes:
    """A piece of a line (no line break in it), encoded and ended with a soft line break."""
    # Printable ASCII but "=", no dot first, on one line with its soft break: quoted-printable
    # leaves it as it is (most of a reader's own values: their links).
    if (
        len(piece) < 76
        and piece.isascii()
        and piece.isprintable()
        and "=" not in piece
        and piece[:1] != "."
    ):
        return piece.encode() + SOFT_BREAK
    # A character more keeps the last line short enough for its soft break, which the
    # encoder may already have put before that character.
    encoded = qp(piece + "x")[:-1]
    return encoded if encoded.endswith(SOFT_BREAK) else encoded + SOFT_BREAK


# Where a reader's token goes in encoded text as a message builder keeps it: quoted-printable
# never carries a NUL (it writes one as "=00"), nor does a token (ASCII letters, digits, a
# dot). Encoded pieces kept so join by concatenation (one ``bytes.join``: parts cut at the
# tokens had to be joined part by part in Python), and a reader's copy is one ``replace``.
GAP = b"\x00"


def gapped(text: str) -> bytes:
    """``text`` quoted-printable (``encode``) as one bytes, ``GAP`` where ``TOKEN`` stands."""
    parts = encode(text)
    return parts[0] if len(parts) == 1 else GAP.join(parts)


def decode(data: bytes) -> str:
    return binascii.a2b_qp(data).decode("utf-8").replace("\r\n", "\n")
