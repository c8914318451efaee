"""A digest message's header lines: folded, RFC 2047-encoded when not ASCII, addresses
with their names encoded and their domains in IDNA."""

from __future__ import annotations

import re
from email.header import Header
from email.utils import formataddr, parseaddr

from digest.present.paper import clean_header

_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


def header(name: str, value: str) -> bytes:
    """One header line (folded when long), RFC 2047-encoded when not ASCII."""
    value = clean_header(value)
    if not value.isascii():
        encoded = Header(value, "utf-8", header_name=name).encode(linesep="\r\n")
        return f"{name}: {encoded}\r\n".encode("ascii")
    line = f"{name}: {value}"
    if len(line) <= 78:
        return (line + "\r\n").encode("ascii")
    # Fold at spaces; a single word longer than a line stays whole (legal up to 998).
    out: list[str] = []
    current = f"{name}:"
    for word in value.split(" "):
        if len(current) + 1 + len(word) > 78 and current != f"{name}:":
            out.append(current)
            current = ""
        current += " " + word
    out.append(current)
    return ("\r\n".join(out) + "\r\n").encode("ascii")


def format_address(raw: str) -> str:
    """``Name <user@domain>`` with the name RFC 2047-encoded and the domain in IDNA when needed."""
    if _PLAIN_ADDRESS.fullmatch(raw):  # the common case; parseaddr costs more than a build
        return raw
    name, addr = parseaddr(clean_header(raw))
    if "@" not in addr:
        raise ValueError(f"not an email address: {clean_header(raw)!r}")
    local, _, domain = addr.rpartition("@")
    if not local.isascii():
        raise ValueError(f"address needs SMTPUTF8, which is not supported: {addr!r}")
    if not domain.isascii():
        domain = domain.encode("idna").decode("ascii")
    return formataddr((name, f"{local}@{domain}"), charset="utf-8")


def angle(value: str) -> str:
    return "<" + clean_header(value).strip("<>").replace("<", "").replace(">", "") + ">"


def mailto(value: str) -> str:
    value = clean_header(value).strip("<>").replace(" ", "")
    if not value.lower().startswith("mailto:"):
        value = "mailto:" + value
    if "?" not in value:
        value += "?subject=unsubscribe"
    return value
