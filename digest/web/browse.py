"""Pages to read: the front page with the subscribe form and the "try it" preview, paper
pages and the archive search."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from digest.web.render import page


def home(request: Request) -> Response:
    """What this is, and the subscribe form."""
    return page(request, "home.html")


routes: list[BaseRoute] = [Route("/", home, methods=["GET", "HEAD"])]
