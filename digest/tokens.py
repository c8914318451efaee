"""Signed values: a subscriber's link tokens, private feed names and digest Message-IDs.

Each is an HMAC under the installation's secret key (a reader's links to a paper: a keyed
BLAKE2b under a key derived from it per reader). Links sign a per-subscriber random
salt, so the database alone (which holds only the salt) cannot forge them, and rotating
the salt revokes them.

The site has one key that signs and may have older ones that still verify (until they are
retired, so rotating the key breaks no link already sent): every check takes ``keys``,
one key or several, and accepts a token signed by any of them.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from email.utils import parseaddr

Keys = bytes | Sequence[bytes]


@dataclass(frozen=True)
class SiteKeys:
    """The key that signs, and every key that verifies (the signing one first)."""

    signing: bytes
    verifying: tuple[bytes, ...]


def each_key(keys: Keys) -> tuple[bytes, ...]:
    """``keys`` as a tuple, one key or several."""
    return (keys,) if isinstance(keys, bytes) else tuple(keys)


def _sign(key: bytes, purpose: str, ident: int | None, salt: str) -> str:
    message = f"{purpose}:{ident}:{salt}".encode()
    return hmac.digest(key, message, "sha256").hex()[:32]  # 128 bits (one call: cheaper)


def link_token(key: bytes, ident: int | None, salt: str, purpose: str = "unsubscribe") -> str:
    """The token in a subscriber's links: ``<id>.<hmac>``, 128 bits of signature."""
    return f"{ident}.{_sign(key, purpose, ident, salt)}"


def feed_name(key: bytes, ident: int | None, salt: str) -> str:
    """The unguessable file name of a subscriber's private feed."""
    return _sign(key, "feed", ident, salt)


def token_id(token: str) -> int | None:
    """The subscriber id a token claims, or None when it is not a token at all."""
    ident, _, signature = token.partition(".")
    # isdigit() alone lets "²" through; 18 digits is as far as an SQL integer goes
    if not (ident.isascii() and ident.isdigit() and len(ident) <= 18) or not signature:
        return None
    return int(ident)


def check_token(
    keys: Keys, token: str, ident: int | None, salt: str, purpose: str = "unsubscribe"
) -> bool:
    """Whether ``token`` is the link of subscriber ``ident`` with ``salt``, for ``purpose``."""
    signature = token.partition(".")[2]
    # compare_digest refuses text beyond ASCII with a TypeError: such a token is simply wrong
    return (
        token_id(token) == ident
        and signature.isascii()
        and any(
            hmac.compare_digest(_sign(key, purpose, ident, salt), signature)
            for key in each_key(keys)
        )
    )


class Verdict(enum.Enum):
    """What checking an expiring token found."""

    VALID = "valid"
    EXPIRED = "expired"  # signed by us for this subscriber and purpose, but too old
    INVALID = "invalid"  # forged, cut short, another purpose or another subscriber


def _expiring_key(key: bytes) -> bytes:
    # Expiring tokens are signed under a key of their own, so no lasting token (whatever
    # its purpose says) is ever the signature of an expiring one, nor the other way round.
    return hmac.new(key, b"expiring link tokens", hashlib.sha256).digest()


def _until(purpose: str, expires: int | str) -> str:
    return f"{purpose}@{expires}"


def expiring_token(key: bytes, ident: int, salt: str, purpose: str, expires: int) -> str:
    """A link token that stops working at ``expires`` (Unix seconds): ``<id>.<expires>.<hmac>``.

    The expiry is signed with the rest, so changing it breaks the signature.
    """
    signature = _sign(_expiring_key(key), _until(purpose, expires), ident, salt)
    return f"{ident}.{expires}.{signature}"


def check_expiring_token(
    keys: Keys, token: str, ident: int | None, salt: str, purpose: str, now: float
) -> Verdict:
    """Whether ``token`` is an :func:`expiring_token` of subscriber ``ident`` for ``purpose``,
    and still valid at ``now`` (Unix seconds)."""
    expires, _, signature = token.partition(".")[2].partition(".")
    if (
        ident is None
        or token_id(token) != ident
        or not (expires.isascii() and expires.isdigit() and len(expires) <= 12)
        or not signature.isascii()
        or not any(
            hmac.compare_digest(
                _sign(_expiring_key(key), _until(purpose, expires), ident, salt), signature
            )
            for key in each_key(keys)
        )
    ):
        return Verdict.INVALID
    return Verdict.VALID if now < int(expires) else Verdict.EXPIRED


@functools.lru_cache(maxsize=8)
def _domain(mail_from: str) -> str:
    # Parsed once: a run makes one Message-ID per reader, all from the same address.
    return parseaddr(mail_from)[1].rpartition("@")[2] or "localhost"


def message_id(key: bytes, subscriber_id: int, period: date, mail_from: str) -> str:
    """The Message-ID of a digest: the same for every attempt, so receivers can drop a repeat."""
    domain = _domain(mail_from)
    tag = hmac.new(key, f"mid:{subscriber_id}:{period}".encode(), hashlib.sha256).hexdigest()
    return f"<digest.{period:%Y%m%d}.{tag[:20]}@{domain}>"


# A reader's links to one paper (its page on the site, "more like this", "not for me"):
# three under every paper of every digest and private feed, so signing them must be cheap.
# A reader's vote key (one HMAC, under a key of its own derived from the site key) signs one
# token per paper with keyed BLAKE2b, a fraction of an HMAC's cost, and that one token goes
# in all three links. The vote key binds the reader and their salt (rotating the salt
# revokes the links); the token binds the paper. The vote itself is not signed: whoever
# holds one of an item's links holds the others (they travel together), and the page shows
# both buttons.


@functools.lru_cache(maxsize=8)
def _votes_key(key: bytes) -> bytes:
    return hmac.new(key, b"vote links", hashlib.sha256).digest()


@functools.lru_cache(maxsize=4096)
def vote_key(key: bytes, ident: int | None, salt: str) -> bytes:
    """A reader's key for signing their links to papers (remembered: one per reader a digest)."""
    return hmac.digest(_votes_key(key), f"{ident}:{salt}".encode(), "sha256")


class PaperSigner:
    """Signs one reader's tokens for papers: ``<id>.<signature>``, 128 bits of keyed BLAKE2b
    over the paper's key (the keyed state is made once, then copied per paper)."""

    def __init__(self, reader_key: bytes, ident: int | None) -> None:
        self._keyed = hashlib.blake2b(key=reader_key, digest_size=16)
        self._prefix = f"{ident}."

    def signature(self, paper_key: str) -> str:
        """The signature alone."""
        keyed = self._keyed.copy()
        keyed.update(paper_key.encode())
        return keyed.hexdigest()

    def token(self, paper_key: str) -> str:
        """The reader's token for the paper ``paper_key``, as their links carry it."""
        return self._prefix + self.signature(paper_key)


def paper_token(reader_key: bytes, ident: int | None, paper_key: str) -> str:
    """One reader's token for one paper, ``reader_key`` from ``vote_key``."""
    return PaperSigner(reader_key, ident).token(paper_key)


def check_paper_token(
    keys: Keys, token: str, ident: int | None, salt: str, paper_key: str, vote: str = ""
) -> bool:
    """Whether ``token`` is subscriber ``ident``'s (with ``salt``) token for the paper
    ``paper_key`` (the key the link was made with). A vote link from before the one token
    per paper (its signature bound the vote as well, ``vote:paper``) is still good for that
    ``vote``: digests already sent keep working."""
    signature = token.partition(".")[2]
    if token_id(token) != ident or not signature.isascii():
        return False
    for key in each_key(keys):
        signer = PaperSigner(vote_key(key, ident, salt), ident)
        if hmac.compare_digest(signer.signature(paper_key), signature):
            return True
        if vote and hmac.compare_digest(signer.signature(f"{vote}:{paper_key}"), signature):
            return True
    return False


def check_feed_name(keys: Keys, name: str, ident: int | None, salt: str) -> bool:
    """Whether ``name`` is subscriber ``ident``'s private feed name under one of ``keys``."""
    return name.isascii() and any(
        hmac.compare_digest(feed_name(key, ident, salt), name) for key in each_key(keys)
    )
