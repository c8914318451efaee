"""Pages: the web templates (``templates/web/``), rendered with the site's state, and the
friendly error page every refusal and failure ends on."""

from __future__ import annotations

import functools
import importlib.resources
import logging
from typing import Any

import jinja2
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from digest.web.security import CSRF_COOKIE, CSRF_FIELD, csrf_token
from digest.web.state import state_of

log = logging.getLogger("digest.web")

_TITLES = {
    400: "That request could not be read",
    403: "Not allowed",
    404: "Nothing here",
    405: "Not allowed here",
    409: "Already done",
    410: "This link has expired",
    413: "Too large",
    422: "Please check the form",
    429: "Too many requests",
    500: "Something went wrong",
    503: "Not available right now",
}


@functools.cache
def environment() -> jinja2.Environment:
    """The Jinja environment of the web pages: autoescaped, strict about unknown names."""
    folder = importlib.resources.files("digest.templates") / "web"
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def page(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """``template`` rendered for ``request``: with the site's name and URL, and a CSRF field
    for its forms (setting the CSRF cookie when the browser has none)."""
    state = state_of(request)
    values = {
        "site_name": state.settings.site_name,
        "base_url": state.settings.base_url,
        "csrf_field": CSRF_FIELD,
        "csrf": csrf_token(request, state.key),
        "request_path": request.url.path,
        **(context or {}),
    }
    html = environment().get_template(template).render(values)
    response = HTMLResponse(html, status_code=status, headers=headers)
    response.headers.setdefault("cache-control", "no-store")
    new_cookie = getattr(request.state, "new_csrf_cookie", None)
    if new_cookie:
        response.set_cookie(
            CSRF_COOKIE,
            new_cookie,
            httponly=True,
            samesite="strict",
            secure=state.settings.base_url.startswith("https://"),
            path="/",
        )
    return response


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    """The friendly page of a refusal or failure: a title for the status and one message."""
    title = _TITLES.get(status, "That did not work")
    return page(request, "error.html", {"title": title, "message": message}, status=status)


async def http_error(request: Request, exc: Exception) -> Response:
    """Every HTTPException (a 404 for an unknown page included) as :func:`error_page`."""
    assert isinstance(exc, HTTPException)
    message = exc.detail if exc.detail and exc.detail != _default_phrase(exc.status_code) else ""
    if exc.status_code == 404 and not message:
        message = "There is no page at this address."
    if exc.status_code == 405 and not message:
        message = "This page does not take that kind of request."
    response = error_page(request, exc.status_code, message or _TITLES.get(exc.status_code, ""))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def server_error(request: Request, exc: Exception) -> Response:
    """An unexpected failure: logged with its traceback (never the URL's token), answered
    with a plain 500 page."""
    from digest.web.security import redact

    log.error("error on %s %s", request.method, redact(request.url.path), exc_info=exc)
    return error_page(request, 500, "The page could not be made. Please try again later.")


def _default_phrase(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
