"""arXiv's XML listings: the Atom API response and the RSS announcement feeds.

* ``arxiv-atom``: ``export.arxiv.org/api/query`` answers with an Atom feed;
  each ``<entry>`` has ``<id>http://arxiv.org/abs/2403.01234v1</id>``,
  ``<title>``, ``<summary>``, ``<author><name>`` and ``<published>``. An API
  error comes back as a feed whose single entry has an ``…/api/errors#…`` id;
  that is refused with arXiv's message. The API answers a query, not a day,
  so the listing has no date.
* ``arxiv-rss``: ``rss.arxiv.org/rss/<category>`` is RSS 2.0; each ``<item>``
  has ``<title>``, ``<link>https://arxiv.org/abs/2403.01234</link>``,
  ``<description>arXiv:2403.01234v1 Announce Type: new Abstract: …``
  and ``<dc:creator>``. The older RSS 1.0 (RDF) feed has the same item
  elements and is read the same way. The channel's ``pubDate`` (else its
  ``lastBuildDate``) is the listing date. Every announcement type (new,
  cross-list, replacement) is kept; telling a paper already seen is the
  store's job.

Titles, abstracts and names have their whitespace collapsed. Older feeds put
HTML into descriptions and creators; tags are stripped and entities decoded.

ElementTree does not fetch external entities, but it does expand internal
ones, so a document with a DOCTYPE (where entities are declared: the
"billion laughs" attack) is refused before parsing. No real arXiv feed has
one; an HTML error page does, and is reported as such.
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from datetime import date
from email.utils import parsedate_to_datetime
from pathlib import Path

from digest.errors import ListingError
from digest.ingest.identity import normalize_arxiv_id
from digest.ingest.listing import Entry, Listing

from .decoding import collapse

LAYOUT_ATOM = "arxiv-atom"
LAYOUT_RSS = "arxiv-rss"
ABS_URL = "https://arxiv.org/abs/"

_ATOM = "{http://www.w3.org/2005/Atom}"
_DC_CREATOR = "{http://purl.org/dc/elements/1.1/}creator"
_DECLARATION = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_HTML_ROOT = re.compile(r"<html[\s>]", re.IGNORECASE)
_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
# Only the tags old feeds used, so "x <y" in a plain-text abstract survives.
_TAG = re.compile(r"</?(?:a|p|br|b|i|em|strong|sub|sup|span|div|math)\b[^>]*>", re.IGNORECASE)
# RSS descriptions read "arXiv:2403.01234v1 Announce Type: new \nAbstract: …".
_ABSTRACT_MARK = re.compile(r"^\s*arXiv:\S+\s+Announce Type:.*?Abstract:\s*", re.DOTALL)


def parse_arxiv_feed(text: str, path: Path) -> Listing:
    """Parse an arXiv Atom API response or RSS listing into a listing."""
    _refuse_html_and_declarations(text, path)
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        line = exc.position[0] if exc.position else None
        raise ListingError(f"not well-formed XML: {_reason(exc)}", str(path), line) from None
    if root.tag == _ATOM + "feed":
        entries = [_atom_entry(element, path) for element in root.iter(_ATOM + "entry")]
        return Listing(layout=LAYOUT_ATOM, entries=entries, listing_date=None)
    if _local(root.tag) in ("rss", "RDF"):
        entries = [_rss_entry(item, path) for item in root.iter() if _local(item.tag) == "item"]
        return Listing(layout=LAYOUT_RSS, entries=entries, listing_date=_channel_date(root))
    raise ListingError(
        f"XML document <{_local(root.tag)}> is neither an Atom feed nor an RSS feed", str(path)
    )


def _refuse_html_and_declarations(text: str, path: Path) -> None:
    head = text[:4096]
    if _HTML_ROOT.search(head) or head.lstrip().lower().startswith("<!doctype html"):
        title = _HTML_TITLE.search(text[:65536])
        what = f" ({collapse(html.unescape(title[1]))})" if title and title[1].strip() else ""
        raise ListingError(f"an HTML page{what}, not a listing", str(path))
    declaration = _DECLARATION.search(text)
    if declaration:
        line = text.count("\n", 0, declaration.start()) + 1
        raise ListingError(
            f"XML with a <!{declaration[1].upper()}> declaration is refused (entity expansion)",
            str(path),
            line,
        )


def _atom_entry(element: ET.Element, path: Path) -> Entry:
    raw_id = _child_text(element, _ATOM + "id")
    title = collapse(_child_text(element, _ATOM + "title"))
    summary = collapse(_child_text(element, _ATOM + "summary"))
    if "/api/errors" in raw_id:
        raise ListingError(f"arXiv API error: {summary or title or raw_id}", str(path))
    if not title:
        raise ListingError(f"Atom entry {raw_id or '(no id)'} has no title", str(path))
    arxiv_id = normalize_arxiv_id(raw_id)
    names = (
        collapse(_child_text(author, _ATOM + "name"))
        for author in element.findall(_ATOM + "author")
    )
    return Entry(
        title=title,
        abstract=summary,
        arxiv_id=arxiv_id,
        authors=", ".join(name for name in names if name),
        url=ABS_URL + arxiv_id if arxiv_id else _atom_link(element),
        published=_iso_day(_child_text(element, _ATOM + "published")),
        revised=_iso_day(_child_text(element, _ATOM + "updated")),
    )


def _atom_link(element: ET.Element) -> str | None:
    for link in element.findall(_ATOM + "link"):
        if link.get("rel", "alternate") == "alternate" and link.get("href"):
            return link.get("href")
    return None


def _rss_entry(item: ET.Element, path: Path) -> Entry:
    fields: dict[str, str] = {}
    creators: list[str] = []
    for child in item:
        if child.tag == _DC_CREATOR:
            creators.append(_html_text(child.text or ""))
        else:
            fields.setdefault(_local(child.tag), "".join(child.itertext()))
    link = fields.get("link", "").strip()
    arxiv_id = (
        normalize_arxiv_id(link)
        or normalize_arxiv_id(fields.get("guid"))
        or normalize_arxiv_id(fields.get("description", "")[:64])
    )
    title = _rss_title(fields.get("title", ""))
    if not title:
        raise ListingError(f"RSS item {link or '(no link)'} has no title", str(path))
    description = _ABSTRACT_MARK.sub("", fields.get("description", ""), count=1)
    return Entry(
        title=title,
        abstract=_html_text(description),
        arxiv_id=arxiv_id,
        authors=", ".join(name for name in creators if name),
        url=ABS_URL + arxiv_id if arxiv_id else (link or None),
        published=_rfc822_day(fields.get("pubDate", "")),
    )


def _rss_title(raw: str) -> str:
    title = _html_text(raw)
    # The RDF feed appends "(arXiv:2403.01234v1 [cs.LG] UPDATED)" to every title.
    if title.endswith(")") and "(arXiv:" in title:
        title = title[: title.rindex("(arXiv:")].rstrip().removesuffix(".")
    return title


def _channel_date(root: ET.Element) -> date | None:
    for element in root.iter():
        if _local(element.tag) == "channel":
            for name in ("pubDate", "lastBuildDate", "date"):
                for child in element:
                    if _local(child.tag) == name and child.text:
                        day = _rfc822_day(child.text) or _iso_day(child.text)
                        if day is not None:
                            return day
    return None


def _child_text(element: ET.Element, tag: str) -> str:
    child = element.find(tag)
    return "".join(child.itertext()) if child is not None else ""


def _html_text(raw: str) -> str:
    if "<" in raw:
        raw = _TAG.sub(" ", raw)
    return collapse(html.unescape(raw) if "&" in raw else raw)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _iso_day(value: str) -> date | None:
    try:
        return date.fromisoformat(value.strip()[:10])
    except ValueError:
        return None


def _rfc822_day(value: str) -> date | None:
    try:
        return parsedate_to_datetime(value.strip()).date()
    except (TypeError, ValueError, IndexError):
        return None


def _reason(exc: ET.ParseError) -> str:
    # ParseError's text ends with "line N, column M", which the error already names.
    message = str(exc)
    return message.split(":", 1)[0] if ": line" in message else message
