"""The web front's frame: error pages, security headers, the body cap, CSRF, rate limits,
and logs without tokens."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from digest.store.counters import SharedLimit
from digest.web.security import (
    CONTENT_SECURITY_POLICY,
    MAX_BODY_BYTES,
    BodyLimit,
    check_csrf,
    csrf_token,
    redact,
)
from tests.conftest import Site


def test_front_page_has_security_headers_and_a_csrf_cookie(site: Site) -> None:
    response = site.web().get("/")
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src" not in CONTENT_SECURITY_POLICY  # default-src 'none': no script at all
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-content-type-options"] == "nosniff"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" in cookie


@pytest.mark.parametrize(
    ("method", "path", "status", "words"),
    [
        ("GET", "/no/such/page", 404, "There is no page at this address."),
        ("DELETE", "/", 405, "does not take that kind of request"),
    ],
)
def test_unknown_pages_get_a_friendly_page(
    site: Site, method: str, path: str, status: int, words: str
) -> None:
    response = site.web().request(method, path)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert words in response.text
    assert "Traceback" not in response.text
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


def test_the_stylesheet_is_served(site: Site) -> None:
    response = site.web().get("/static/web.css")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")
    assert "prefers-color-scheme: dark" in response.text


def test_a_body_over_the_cap_is_refused_where_it_is_read() -> None:
    async def echo(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(len(await request.body())))

    app = Starlette(
        routes=[Route("/echo", echo, methods=["POST"])],
        middleware=[Middleware(BodyLimit, limit=100)],
        exception_handlers={HTTPException: _plain_error},
    )
    client = TestClient(app)
    assert client.post("/echo", content=b"x" * 100).text == "100"
    assert client.post("/echo", content=b"x" * 101).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(5):
            yield b"x" * 30

    assert client.post("/echo", content=chunks()).status_code == 413
    assert MAX_BODY_BYTES == 64 * 1024


async def _plain_error(request: Request, exc: Exception) -> PlainTextResponse:
    assert isinstance(exc, HTTPException)
    return PlainTextResponse(str(exc.detail), status_code=exc.status_code)


def _request(cookie: str | None = None) -> Request:
    headers = [(b"cookie", f"digest_csrf={cookie}".encode())] if cookie else []
    return Request({"type": "http", "headers": headers, "method": "POST", "path": "/"})


def test_csrf_token_belongs_to_one_browser() -> None:
    key = b"k" * 32
    fresh = _request()
    token = csrf_token(fresh, key)
    cookie = fresh.state.new_csrf_cookie
    check_csrf(_request(cookie), key, token)  # the same browser: accepted

    for request, submitted in [
        (_request(), token),  # no cookie
        (_request("0" * 32), token),  # another browser's cookie
        (_request(cookie), token[:-1] + ("1" if token.endswith("0") else "0")),  # forged
        (_request(cookie), None),  # missing
    ]:
        with pytest.raises(HTTPException) as refused:
            check_csrf(request, key, submitted)
        assert refused.value.status_code == 403
    with pytest.raises(HTTPException):
        check_csrf(_request(cookie), b"another key", token)


def test_rate_limit_counts_per_key_and_forgets_after_the_window(engine: Engine) -> None:
    limit = SharedLimit(engine, "test", 3, 60)
    assert [limit.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limit.allow("b", 0.0)
    assert limit.allow("a", 61.0)


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/manage/12.abcdef", "/manage/***"),
        ("/confirm/xyz", "/confirm/***"),
        ("/unsubscribe/12.abc", "/unsubscribe/***"),
        ("/feeds/private/0123abcd.atom", "/feeds/private/***"),
        ("/papers/2401.00001", "/papers/2401.00001"),
    ],
)
def test_tokens_are_taken_out_of_logged_paths(path: str, logged: str) -> None:
    assert redact(path) == logged


def test_the_access_log_never_holds_a_token(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="digest.web.access"):
        site.web().get("/manage/7.secretsecretsecret")
    lines = [r.getMessage() for r in caplog.records if r.name == "digest.web.access"]
    assert lines and all("secretsecret" not in line for line in lines)
    assert any("/manage/***" in line for line in lines)
