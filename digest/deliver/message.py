"""Building a digest email: plain data in, the RFC 5322 message as bytes out.

Nothing here touches the network, the clock or the store. The message is
assembled directly as bytes (headers, one boundary, two quoted-printable
parts) instead of through ``email.message.EmailMessage``: a run builds tens of
thousands of messages and most of each one is the same few paper blocks, so a
:class:`MessageBuilder` renders and encodes each part of a message once and joins the
encoded bytes (``digest.deliver.qp``: pieces encoded on their own join).

A paper's block is rendered once from the template with slots where what differs between
its readers goes (``_Skeleton``): the title and abstract with the words their interests
mark, the "Matched:" line. Those are encoded once each, for every distinct set of marks,
and so are the reader's vote lines for each reason; a block is the parts joined, and is
kept for every reader whose marks are the same. A reader's own links to a paper (its page,
"more like this", "not for me") differ only by the reader's token for that paper
(``DigestView.tokens``): the encoded parts hold a NUL where the token goes (``TOKEN``), each
token on a line segment of its own between soft line breaks, and a digest puts its reader's
token in its place. The shell around the papers is rendered once per date and length, and each
reader's preheader and links are put in the same way.

What a paper shows (its text as shown, its marks, its links) is ``digest.present.paper``,
the same for emails, feeds and web pages; this module lays it out as a message.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from datetime import datetime
from email.header import Header
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlsplit

import css_inline
import jinja2
from markupsafe import Markup, escape

from digest.clock import as_utc
from digest.deliver.headers import angle, format_address, header, mailto
from digest.deliver.kept import Kept
from digest.deliver.qp import GAP, decode, encode, gapped
from digest.deliver.wire import Wire
from digest.deliver.wrap import byline_text, indented
from digest.present.paper import (
    DigestView,
    PaperView,
    Shown,
    TokenLinks,
    arxiv_url,
    authors_line,
    clean_header,
    clean_text,
    day_text,
    find_links,
    is_code_link,
    paper_link,
    shown,
)
from digest.rank.highlight import mark

CACHE_BYTES = 160 * 1024 * 1024  # what a builder keeps of the parts it shares, at most
_SLOT = "\x00papers\x00"  # content passes clean_header or clean_text, which drop NULs
# Where a reader's marked title, abstract and reasons go in a paper's block (no shown text
# carries a \x02: clean_header and clean_text drop it).
_TITLE, _ABSTRACT, _REASONS = "\x02title\x02", "\x02abstract\x02", "\x02reasons\x02"
# A paper's cached blocks are keyed by every field of its view but these: what differs from
# reader to reader and is either not shown (the score) or keyed on its own (the interests
# that choose the marks; the reader's links and reason). Taking the rest from the view's
# own fields, not from a list kept by hand, means a new field is in the key from the start,
# so no paper is ever shown with another's cached block.
_PER_READER = frozenset({"score", "interests", "evidence", "because", "token_links"})
_SHOWN_TO_ALL = operator.attrgetter(
    *(field.name for field in fields(PaperView) if field.name not in _PER_READER)
)


def _gapped_size(encoded: bytes) -> int:
    """About what kept encoded bytes hold in memory."""
    return len(encoded) + 100


@dataclass(frozen=True)
class Sender:
    """Who the digests come from (``from_addr`` may carry a display name)."""

    from_addr: str
    site_name: str
    list_id: str
    base_url: str


@dataclass(frozen=True)
class _Block:
    """A paper rendered and encoded once, for both parts: encoded text with ``qp.GAP`` where
    the reader's token goes (none: no token)."""

    html: bytes
    text: bytes


@dataclass(frozen=True)
class _Skeleton:
    """A paper's block as every reader gets it, encoded, cut where what differs between
    readers goes: in the HTML part around the marked title, the marked abstract and the
    "Matched:" line; in the text part around the abstract and that line. The line itself is
    kept as text, with ``_REASONS`` where the reasons go."""

    html: tuple[bytes, bytes, bytes, bytes]  # each ``qp.gapped``
    text: tuple[bytes, bytes, bytes]
    html_reasons: str
    text_reasons: str


# --- caches held to a size -------------------------------------------------------


def _block_size(block: _Block) -> int:
    return len(block.html) + len(block.text) + 260


# --- small pure helpers -------------------------------------------------------


def subject_for(view: DigestView) -> str:
    """``Your papers for 2026-11-22: 7 new``."""
    return f"Your papers for {view.period.isoformat()}: {len(view.papers)} new"


def preheader_for(view: DigestView) -> str:
    """The line an inbox shows after the subject: the digest's first titles."""
    titles = [clean_header(paper.title) for paper in view.papers[:2]]
    if not titles:
        return "Nothing new matched your interests this time."
    more = len(view.papers) - len(titles)
    return " · ".join(titles) + (f", and {more} more" if more else "")


def _shorturl(url: str) -> str:
    parts = urlsplit(url)
    shown = (parts.netloc.removeprefix("www.") + parts.path).rstrip("/")
    return shown if len(shown) <= 60 else shown[:59] + "…"


def _ends_line(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def _line_of(text: str, slot: str) -> tuple[str, str, str]:
    """``text`` cut around the line holding ``slot``: before it, the line, after it."""
    at = text.index(slot)
    start = text.rfind("\n", 0, at) + 1
    end = text.index("\n", at) + 1
    return text[:start], text[start:end], text[end:]


# --- templates ------------------------------------------------------------------


_SHELL_NAMES = (
    "subject", "heading", "lead", "preheader", "site_name", "site_url", "unsubscribe_url",
    "manage_url", "feed_url", "papers",
)  # fmt: skip


@dataclass(frozen=True)
class _Templates:
    html: jinja2.Template
    text: jinja2.Template
    html_macros: Any  # the templates' macros: a paper, a marked word
    text_macros: Any
    hit_open: str
    hit_close: str


@functools.cache
def _templates() -> _Templates:
    """Load both templates from the package, inlining the CSS into the HTML source once."""
    package = importlib.resources.files("digest.templates")
    css = package.joinpath("digest.css").read_text(encoding="utf-8")
    html_source = package.joinpath("digest.html").read_text(encoding="utf-8")
    html_source = html_source.replace("/* digest.css */", css)
    inliner = css_inline.CSSInliner(
        keep_at_rules=True, minify_css=True, load_remote_stylesheets=False
    )
    html_source = inliner.inline(html_source)
    common: dict[str, Any] = {
        "trim_blocks": True,
        "lstrip_blocks": True,
        "keep_trailing_newline": True,
        "undefined": jinja2.StrictUndefined,
    }
    html_env = jinja2.Environment(autoescape=True, **common)
    html_env.filters["shorturl"] = _shorturl
    text_env = jinja2.Environment(autoescape=False, **common)
    html = html_env.from_string(html_source)
    text = text_env.from_string(package.joinpath("digest.txt").read_text(encoding="utf-8"))
    # Making a module renders the shell once; empty values satisfy StrictUndefined.
    blank = dict.fromkeys(_SHELL_NAMES, "")
    html_macros: Any = html.make_module(blank)
    text_macros: Any = text.make_module(blank)
    hit_open, _, hit_close = str(html_macros.hit(Markup(_SLOT))).partition(_SLOT)
    return _Templates(html, text, html_macros, text_macros, hit_open, hit_close)


# A part's shell before or after the papers: encoded text, and the names of the reader's own
# values between (``_OWN``).
_Frame = tuple[bytes | str, ...]
_OWN = ("preheader", "unsubscribe_url", "manage_url", "feed_url")
_OWN_SLOT = re.compile("\x02(" + "|".join(_OWN) + ")\x02")


def _framed(text: str) -> _Frame:
    """Rendered shell text with the reader's values' slots: encoded, cut at the slots."""
    pieces = _OWN_SLOT.split(text)  # text, name, text, name, ..., text
    return tuple(
        name if number % 2 else b"".join(encode(name)) for number, name in enumerate(pieces)
    )


def _filled(frame: _Frame, context: dict[str, Any], html: bool) -> bytes:
    """A shell's encoded text with the reader's values, escaped as the template would."""
    out = []
    for piece in frame:
        if isinstance(piece, bytes):
            out.append(piece)
        else:
            value = context[piece]
            out.append(encode(str(escape(value)) if html else value)[0])
    return b"".join(out)


# --- the builder ----------------------------------------------------------------


class MessageBuilder:
    """Builds digest messages for one sender, rendering each paper once per builder."""

    def __init__(
        self, sender: Sender, *, cache_size: int = 50_000, cache_bytes: int = CACHE_BYTES
    ) -> None:
        self.sender = sender
        self._templates = _templates()
        # What differs between readers of a paper (its blocks, and their pieces: the marked
        # title and abstract, the reasons) is held to ``cache_bytes`` in all, so a run's
        # memory does not grow with its readers; one let go is made again when met again.
        # What each paper has once (its skeleton, what it shows to all, its vote lines) is
        # held for up to ``cache_size`` papers, a day's.
        self._cache: Kept[tuple[object, ...], _Block] = Kept(cache_bytes // 2, _block_size)
        self._pieces: Kept[tuple[object, ...], bytes] = Kept(cache_bytes // 2, _gapped_size)
        self._skeletons: dict[tuple[object, ...], _Skeleton] = {}
        self._bases: dict[tuple[object, ...], dict[str, Any]] = {}
        self._votes_parts: dict[tuple[TokenLinks, str], tuple[bytes, bytes]] = {}
        self._frames: dict[tuple[object, ...], tuple[_Frame, _Frame]] = {}
        self._by_view: dict[int, tuple[PaperView, TokenLinks | None, _Block]] = {}
        self._cache_size = cache_size
        self._date_at: datetime | None = None
        self._date = b""
        self._from = header("From", format_address(sender.from_addr))
        site = clean_header(sender.site_name)
        if site and not site.isascii():
            site = Header(site, "utf-8").encode()
        list_name = f"{site} {angle(sender.list_id)}" if site else angle(sender.list_id)
        self._list_id = header("List-Id", list_name)

    def _paper_base(self, paper: PaperView) -> dict[str, Any]:
        """What a paper shows whoever reads it: worked out once per paper, not per reader."""
        key = _SHOWN_TO_ALL(paper)
        base = self._bases.get(key)
        if base is None:
            text = shown(replace(paper, interests=(), evidence=()))
            authors = authors_line(paper.authors)
            arxiv_id = f"arXiv:{clean_header(paper.arxiv_id)}" if paper.arxiv_id else ""
            listed = day_text(paper.listed) if paper.listed else ""
            links = find_links(clean_text(paper.abstract))
            base = {
                "title": text.title,
                "abstract": text.abstract,
                "abstract_text": indented(text.abstract) if text.abstract else "  (no abstract)",
                "truncated": text.truncated,
                "authors": authors,
                "arxiv_id": arxiv_id,
                "arxiv_url": arxiv_url(paper.arxiv_id) if paper.arxiv_id else None,
                "listed": listed,
                "byline_text": byline_text(authors, arxiv_id, listed),
                "link": paper_link(paper),
                "code_links": [u for u in links if is_code_link(u)],
                "other_links": [u for u in links if not is_code_link(u)],
            }
            if len(self._bases) >= self._cache_size:
                self._bases.clear()
            self._bases[key] = base
        return base

    def _paper_context(self, paper: PaperView) -> dict[str, Any]:
        base = self._paper_base(paper)
        text = shown(paper)
        t = self._templates
        if text.abstract != base["abstract"]:  # a window around what this reader's matched
            base = {
                **base,
                "abstract": text.abstract,
                "abstract_text": indented(text.abstract),
                "truncated": text.truncated,
            }
        return {
            **base,
            "title_html": mark(text.title, text.marks.title, t.hit_open, t.hit_close),
            "abstract_html": mark(text.abstract, text.marks.abstract, t.hit_open, t.hit_close),
            "reasons": list(text.marks.reasons),
        }

    def _block(self, paper: PaperView, links: TokenLinks | None) -> _Block:
        """The paper's block, with the reader's ``links`` (token left out) and their reason
        for it, or without any: the paper's skeleton with what its marks and reasons make
        of it, each part encoded once however many readers share it."""
        # The same view object comes back for every digest carrying the item (``stored_view``):
        # found by identity, nothing about it is worked out or hashed again.
        seen = self._by_view.get(id(paper))
        if seen is not None and seen[0] is paper and seen[1] is links:
            return seen[2]
        text = shown(paper)
        # Everything shown, nothing else: the score differs per subscriber and is not shown,
        # and readers whose interests mark the same words share the block.
        to_all = _SHOWN_TO_ALL(paper)
        key = (to_all, text.abstract, text.marks, links, links and paper.because)
        block = self._cache.get(key)
        if block is None:
            block = self._cache.put(key, self._compose(paper, links, text, to_all))
        if len(self._by_view) >= self._cache_size:
            self._by_view.clear()
        self._by_view[id(paper)] = (paper, links, block)  # kept with it: its id is not reused
        return block

    def prepare(self, papers: Iterable[PaperView]) -> int:
        """Each paper's block as every reader gets it (``_skeleton``, with the paper's
        ``token_links`` or none; with them, the vote lines of readers who chose it for no
        paper they liked) worked out ahead, up to the papers a builder keeps: a run's
        process does it for the outbox's papers before its senders fork, and they inherit
        them. Returns how many were worked out (those known already are not)."""
        made = 0
        for paper in papers:
            if len(self._skeletons) >= self._cache_size:
                break
            to_all = _SHOWN_TO_ALL(paper)
            if (to_all, paper.token_links) not in self._skeletons:
                self._skeleton(paper, paper.token_links, to_all)
                made += 1
            if paper.token_links is not None:  # and its vote lines, for readers who liked none
                self._votes(paper.token_links, "")
        return made

    def next_batch(self) -> None:
        """The views built so far will not come back (a new batch of digests has its own):
        let them go, and the rows they hold."""
        self._by_view.clear()

    def _compose(
        self, paper: PaperView, links: TokenLinks | None, text: Shown, to_all: tuple[object, ...]
    ) -> _Block:
        t = self._templates
        skeleton = self._skeleton(paper, links, to_all)
        marks = text.marks
        title = self._piece(
            ("title", text.title, marks.title),
            lambda: str(mark(text.title, marks.title, t.hit_open, t.hit_close)),
        )
        abstract_html = self._piece(
            ("abstract", text.abstract, marks.abstract),
            lambda: str(mark(text.abstract, marks.abstract, t.hit_open, t.hit_close)),
        )
        abstract_text = self._piece(
            ("abstract text", text.abstract),
            lambda: indented(text.abstract) if text.abstract else "  (no abstract)",
        )
        reasons = marks.reasons  # joined as the templates' join filter joins them
        html_reasons = self._piece(
            ("reasons", skeleton.html_reasons, marks.reasons),
            lambda: (
                skeleton.html_reasons.replace(_REASONS, escape(", ".join(reasons)))
                if reasons
                else ""
            ),
        )
        text_reasons = self._piece(
            ("reasons text", skeleton.text_reasons, marks.reasons),
            lambda: skeleton.text_reasons.replace(_REASONS, ", ".join(reasons)) if reasons else "",
        )
        h0, h1, h2, h3 = skeleton.html
        t0, t1, t2 = skeleton.text
        if links is None:
            return _Block(
                b"".join((h0, title, h1, abstract_html, h2, html_reasons, h3)),
                b"".join((t0, abstract_text, t1, text_reasons, t2)),
            )
        because = clean_header(paper.because) if paper.because else ""
        votes_html, votes_text = self._votes(links, because)
        return _Block(
            b"".join((h0, title, h1, abstract_html, h2, html_reasons, h3, votes_html)),
            b"".join((t0, abstract_text, t1, text_reasons, t2, votes_text)),
        )

    def _piece(self, key: tuple[object, ...], render: Callable[[], str]) -> bytes:
        """A piece of a block, encoded once (``render`` makes its text; ``qp.gapped``)."""
        piece = self._pieces.get(key)
        if piece is None:
            piece = self._pieces.put(key, gapped(render()))
        return piece

    def _skeleton(
        self, paper: PaperView, links: TokenLinks | None, to_all: tuple[object, ...]
    ) -> _Skeleton:
        """The paper's block as its template renders it for every reader, cut where each
        reader's marks and reasons go (``_Skeleton``); ``to_all``: the paper's fields shown
        to every reader (``_SHOWN_TO_ALL``)."""
        key = (to_all, links)
        skeleton = self._skeletons.get(key)
        if skeleton is not None:
            return skeleton
        t = self._templates
        context = {
            **self._paper_base(paper),
            "title_html": Markup(_TITLE),
            "abstract_html": Markup(_ABSTRACT),
            "abstract_text": _ABSTRACT,
            "reasons": [Markup(_REASONS)],
        }
        if links is not None:
            context["link"] = links.page
        html = str(t.html_macros.paper(context))
        text = str(t.text_macros.paper(context))
        if links is None:  # the block's last line ends here
            html, text = _ends_line(html), _ends_line(text) + "\n"
        h0, rest = html.split(_TITLE)
        h1, rest = rest.split(_ABSTRACT)
        h2, html_line, h3 = _line_of(rest, _REASONS)
        t0, rest = text.split(_ABSTRACT)
        t1, text_line, t2 = _line_of(rest, _REASONS)
        skeleton = _Skeleton(
            (gapped(h0), gapped(h1), gapped(h2), gapped(h3)),
            (gapped(t0), gapped(t1), gapped(t2)),
            html_line,
            text_line,
        )
        if len(self._skeletons) >= self._cache_size:
            self._skeletons.clear()
        self._skeletons[key] = skeleton
        return skeleton

    def _votes(self, links: TokenLinks, because: str) -> tuple[bytes, bytes]:
        """A reader's own lines under a paper (why feedback chose it, their vote links),
        encoded once for the paper and the reason, the reader's token left out."""
        key = (links, because)
        found = self._votes_parts.get(key)
        if found is None:
            t = self._templates
            own = {"because": because, "more_url": links.more, "less_url": links.less}
            html = gapped(_ends_line(str(t.html_macros.votes(own))))
            text = gapped(_ends_line(str(t.text_macros.votes(own))) + "\n")
            if len(self._votes_parts) >= self._cache_size:
                self._votes_parts.clear()
            found = self._votes_parts[key] = (html, text)
        return found

    def _render_block(self, paper: PaperView, links: TokenLinks | None) -> _Block:
        """The paper's block rendered whole, in one go: what ``_block`` composes from its
        parts must decode to the same (``tests/test_paper_blocks.py``)."""
        t = self._templates
        context = self._paper_context(paper)
        if links is None:
            html = str(t.html_macros.paper(context))
            text = str(t.text_macros.paper(context))
        else:
            context["link"] = links.page
            because = clean_header(paper.because) if paper.because else ""
            own = {"because": because, "more_url": links.more, "less_url": links.less}
            html = str(t.html_macros.paper(context)) + str(t.html_macros.votes(own))
            text = str(t.text_macros.paper(context)) + str(t.text_macros.votes(own))
        # the text part's blank line between papers comes with each
        return _Block(gapped(_ends_line(html)), gapped(_ends_line(text) + "\n"))

    def _shell(self, view: DigestView) -> dict[str, Any]:
        count = len(view.papers)
        return {
            "subject": subject_for(view),
            "heading": f"Your papers for {view.period.isoformat()}",
            "lead": f"{count} new paper{'s' if count != 1 else ''} matched your interests.",
            "preheader": preheader_for(view),
            "site_name": clean_header(self.sender.site_name),
            "site_url": clean_header(self.sender.base_url),
            "unsubscribe_url": clean_header(view.unsubscribe_url),
            "manage_url": clean_header(view.manage_url) if view.manage_url else None,
            "feed_url": clean_header(view.feed_url),
            "papers": Markup(_SLOT),
        }

    def _wrap(self, html: bool, context: dict[str, Any], blocks: list[bytes]) -> bytes:
        """One part: its shell, with the reader's own values, around the papers' blocks."""
        return b"".join(self._wrapped(html, context, blocks))

    def _wrapped(self, html: bool, context: dict[str, Any], blocks: list[bytes]) -> list[bytes]:
        """``_wrap``'s pieces, not joined (a message joins all of its pieces once): the
        shell's put around the blocks in ``blocks`` itself, which is returned."""
        head, tail = self._frame(html, context)
        blocks.insert(0, _filled(head, context, html))
        blocks.append(_filled(tail, context, html))
        return blocks

    def _frame(self, html: bool, context: dict[str, Any]) -> tuple[_Frame, _Frame]:
        """A part's shell as its template renders it for every reader of a digest of this
        date and length (the subject, heading and lead), encoded once, before and after
        the papers, cut where each reader's own values go."""
        manage = bool(context["manage_url"])
        key = (html, context["subject"], context["heading"], context["lead"], manage)
        frame = self._frames.get(key)
        if frame is None:
            template = self._templates.html if html else self._templates.text
            # every value a slot, but a manage link that is not there (the template asks)
            slots = {name: f"\x02{name}\x02" for name in _OWN if name != "manage_url" or manage}
            head, _, tail = template.render({**context, **slots}).partition(_SLOT)
            frame = self._frames[key] = (_framed(_ends_line(head)), _framed(_ends_line(tail)))
        return frame

    def _blocks(self, view: DigestView) -> tuple[list[bytes], list[bytes]]:
        """Each paper's encoded block, in the HTML part and in the text part."""
        html: list[bytes] = []
        text: list[bytes] = []
        if not view.tokens:
            for paper in view.papers:
                block = self._block(paper, None)
                html.append(block.html)
                text.append(block.text)
            return html, text
        by_view = self._by_view
        for paper, token in zip(view.papers, view.tokens, strict=True):
            seen = by_view.get(id(paper))  # as ``_block`` finds it first, without a call
            if seen is not None and seen[0] is paper and seen[1] is paper.token_links:
                block = seen[2]
            else:
                block = self._block(paper, paper.token_links)
            encoded = token.encode()
            html.append(block.html.replace(GAP, encoded))
            text.append(block.text.replace(GAP, encoded))
        return html, text

    def render_html(self, view: DigestView) -> str:
        """The HTML part, decoded (for previews and tests)."""
        return decode(self._wrap(True, self._shell(view), self._blocks(view)[0]))

    def render_text(self, view: DigestView) -> str:
        """The plain-text part, decoded (for previews and tests)."""
        return decode(self._wrap(False, self._shell(view), self._blocks(view)[1]))

    def build(self, view: DigestView, now: datetime) -> bytes:
        """The complete message: headers and a multipart/alternative body (text, then HTML),
        in wire form (``Wire``: every line CRLF-ended, none starting with a dot)."""
        context = self._shell(view)
        html_blocks, text_blocks = self._blocks(view)
        message_id = angle(view.message_id)
        # "=_" can never occur in quoted-printable output, so the boundary is safe
        # without scanning the body; derived from the Message-ID to keep output stable.
        boundary = "=_" + hashlib.sha1(message_id.encode()).hexdigest()[:24]
        second = as_utc(now).replace(microsecond=0)
        if second != self._date_at:  # the header a second's messages share, made once
            self._date_at, self._date = second, header("Date", format_datetime(second))
        unsubscribe = f"{angle(view.unsubscribe_url)}, <{mailto(view.unsubscribe_mailto)}>"
        part_head = (
            f'--{boundary}\r\nContent-Type: text/%s; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        )
        pieces = [
            self._from,
            header("To", format_address(view.to)),
            header("Subject", context["subject"]),
            self._date,
            header("Message-ID", message_id),
            b"MIME-Version: 1.0\r\n",
            self._list_id,
            header("List-Unsubscribe", unsubscribe),
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
            b"Auto-Submitted: auto-generated\r\n",
            f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'.encode(),
            (part_head % "plain").encode(),
        ]
        # Every piece joined once: the parts' own joins copied the 65 KB of a message twice.
        pieces += self._wrapped(False, context, text_blocks)
        pieces.append((part_head % "html").encode())
        pieces += self._wrapped(True, context, html_blocks)
        pieces.append(f"--{boundary}--\r\n".encode())
        return Wire(b"".join(pieces))


def build_message(view: DigestView, sender: Sender, now: datetime) -> bytes:
    """One complete message; a run should keep one :class:`MessageBuilder` to share paper blocks."""
    return MessageBuilder(sender).build(view, now)
