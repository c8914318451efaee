"""The links a subscriber receives: unsubscribe (https and mailto) and the private feed."""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parseaddr
from urllib.parse import quote


@dataclass(frozen=True)
class Links:
    """How a subscriber's links are made: the public base URL, the signing key, the sender."""

    base_url: str
    key: bytes
    mail_from: str

    def unsubscribe_url(self, token: str) -> str:
        """The one-click (RFC 8058) unsubscribe URL."""
        return f"{self.base_url}/unsubscribe?token={quote(token)}"

    def unsubscribe_mailto(self, token: str) -> str:
        """The mailto: unsubscribe address, for clients without one-click."""
        address = parseaddr(self.mail_from)[1] or "digest@localhost"
        return f"mailto:{address}?subject={quote('unsubscribe ' + token)}"

    def feed_path(self, name: str) -> str:
        """A private feed's path under the feeds folder."""
        return f"private/{name}.atom"

    def feed_url(self, name: str) -> str:
        """A private feed's public URL."""
        return f"{self.base_url}/feeds/{self.feed_path(name)}"
