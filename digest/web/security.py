"""What every response and every form needs: security headers, a cap on request bodies,
CSRF tokens, and request paths with their secrets taken out (rate limits are counted in the
store, ``digest.store.counters``, so every process shares them)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from digest.tokens import Keys, each_key

# No script at all, styles from our own stylesheet only, never framed.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    # Links carry tokens: never hand a URL to another site.
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
)
MAX_BODY_BYTES = 64 * 1024

CSRF_COOKIE = "digest_csrf"
CSRF_FIELD = "csrf"

# Path parts that are secrets: /confirm/<token>, /manage/<token>, /feeds/private/<name>.atom ...
_SECRET_PATH = re.compile(
    r"^(/(?:confirm|manage|unsubscribe|feedback|export|delete)/|/feeds/private/)[^/?]+"
)
# ... and query values: a paper page's reader, /papers/<key>?r=<token>
_SECRET_QUERY = re.compile(r"([?&]r=)[^&#]+")


def redact(path: str) -> str:
    """A request path (and query, if any) fit for a log: the tokens in it replaced by ``***``."""
    return _SECRET_QUERY.sub(r"\1***", _SECRET_PATH.sub(r"\1***", path))


class HttpMiddleware:
    """ASGI middleware that acts on HTTP requests (``http``) and passes anything else on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        else:
            await self.http(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class SecurityHeaders(HttpMiddleware):
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every HTTP response."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimit(HttpMiddleware):
    """ASGI middleware refusing a request body over ``limit`` bytes with a 413 page: at
    once when Content-Length says so, else as soon as the streamed body passes it."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        super().__init__(app)
        self.limit = limit

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = dict(scope.get("headers", [])).get(b"content-length")
        too_large = declared is not None and (not declared.isdigit() or int(declared) > self.limit)
        seen = 0

        # Raised where the app reads the body, so the app's own error page answers it.
        async def counted() -> Message:
            nonlocal seen
            if too_large:
                raise HTTPException(413, "That request is larger than this site accepts.")
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, "That request is larger than this site accepts.")
            return message

        await self.app(scope, counted, send)


def csrf_token(request: Request, key: bytes) -> str:
    """The CSRF value for this browser's forms: the HMAC of its random cookie.

    A new cookie is made when the browser has none; :func:`digest.web.render.page` sets it
    on the response (``request.state.new_csrf_cookie``).
    """
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not _is_cookie(cookie):
        cookie = getattr(request.state, "new_csrf_cookie", "") or secrets.token_hex(16)
        request.state.new_csrf_cookie = cookie
    return _csrf_of(key, cookie)


def check_csrf(request: Request, keys: Keys, submitted: object) -> None:
    """Refuse (403) a form whose CSRF field does not belong to this browser's cookie (under
    any of the site's ``keys``: a form made before the key changed still goes through)."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not (
        _is_cookie(cookie)
        and isinstance(submitted, str)
        and submitted.isascii()
        and any(hmac.compare_digest(_csrf_of(key, cookie), submitted) for key in each_key(keys))
    ):
        raise HTTPException(
            403,
            "This form has expired or did not come from this site. Reload the page and try again"
            " (cookies must be allowed for this site).",
        )


def _is_cookie(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def _csrf_of(key: bytes, cookie: str) -> str:
    return hmac.new(key, f"csrf:{cookie}".encode(), hashlib.sha256).hexdigest()[:32]
