"""Text for a message's plain part: wrapped to ``TEXT_WIDTH``, two spaces in, as textwrap
wraps it."""

from __future__ import annotations

import textwrap

TEXT_WIDTH = 72
_TEXTWRAP_SPACES = "\t\n\x0b\x0c\r "  # what textwrap splits words at


def one_spaced(text: str) -> bool:
    """Whether ``text`` is words one space apart (of textwrap's spaces: no other, none at
    either end), by a few of the string's own searches (a pattern over every character cost
    more)."""
    return (
        text[:1] not in _TEXTWRAP_SPACES
        and text[-1] not in _TEXTWRAP_SPACES
        and "  " not in text
        and not any(space in text for space in "\t\n\x0b\x0c\r")
    )


def indented(text: str) -> str:
    """Text for the plain part: wrapped, two spaces in."""
    if not one_spaced(text):
        return textwrap.fill(
            text,
            TEXT_WIDTH,
            initial_indent="  ",
            subsequent_indent="  ",
            break_on_hyphens=False,
            break_long_words=False,  # a long word (a URL) stays whole, on a line of its own
        )
    # Words one space apart (text as shown always is): the same lines as textwrap's, which
    # costs more than the rest of a paper's block. Each line is cut at the last space that
    # leaves it within the width (a word longer than that alone on its line, whole), found
    # by the string's own search: a line at a time, not a word at a time.
    room = TEXT_WIDTH - 2
    lines: list[str] = []
    at, end = 0, len(text)
    while end - at > room:
        cut = text.rfind(" ", at, at + room + 1)
        if cut < 0:  # the first word is longer than a line: on a line of its own
            cut = text.find(" ", at)
            if cut < 0:
                break
        lines.append("  " + text[at:cut])
        at = cut + 1
    lines.append("  " + text[at:])
    return "\n".join(lines)


def byline_text(authors: str, arxiv_id: str, listed: str) -> str:
    """The plain part's byline, wrapped; a date is never split over two lines."""
    glued = listed.replace(" ", "\u00a0")  # textwrap breaks at ASCII spaces only
    return indented(" · ".join(filter(None, (authors, arxiv_id, glued)))).replace("\u00a0", " ")
