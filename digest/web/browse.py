"""Pages to read: the front page with the subscribe form and the "try it" preview, paper
pages and the archive search.

What they show comes from ``digest.service.papers``: marked by the email's highlighter,
ranked by the run's own ranking path.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from digest.service import papers
from digest.service.papers import MAX_INTEREST_CHARS, MAX_INTERESTS, PREVIEW_DAYS
from digest.service.votes import READER
from digest.web.render import page
from digest.web.state import state_of
from digest.web.votes import reader_votes

NEW_SHOWN = 5
TRENDING_SHOWN = 5
TRENDING_DAYS = 30
PAGE_SIZE = 20
MAX_PAGES = 25


def home(request: Request) -> Response:
    """What this is, the subscribe form, the "try it" preview, new and trending papers."""
    state = state_of(request)
    text = request.query_params.get("try")
    if text is not None and len(text) > MAX_INTERESTS * (MAX_INTEREST_CHARS + 2):
        raise HTTPException(400, "Those interests are too long to try.")
    front = papers.front_page(
        state.engine,
        state.caches,
        now=state.now(),
        base_url=state.settings.base_url,
        tried=text,
        new_shown=NEW_SHOWN,
        trending_shown=TRENDING_SHOWN,
        trending_days=TRENDING_DAYS,
    )
    tried = front.tried
    return page(
        request,
        "home.html",
        {
            "tried": tried,
            "preview_days": PREVIEW_DAYS,
            "new": front.new,
            "trending": front.trending,
            # the interests tried fill the subscribe form above too
            "form": {"interests": tried.text} if tried is not None and not tried.error else {},
        },
        status=422 if tried is not None and tried.error else 200,
    )


def paper_page(request: Request) -> Response:
    """A paper: title, authors, abstract, its links, when it was listed and how often; and
    for the reader whose token its link carries (from their digest or private feed), their
    vote buttons."""
    state = state_of(request)
    key = request.path_params["key"]
    interests = tuple(
        line.strip() for line in request.query_params.get("for", "").splitlines() if line.strip()
    )
    context = papers.paper_page(state.engine, key, interests)
    if context is None:
        raise HTTPException(404, "This site has no paper under that name.")
    votes = reader_votes(state, request.query_params.get(READER), key, context["paper"].id)
    return page(request, "paper.html", {**context, "feedback": votes})


def search_page(request: Request) -> Response:
    """The archive searched with the interest language, ``PAGE_SIZE`` hits a page."""
    state = state_of(request)
    query = request.query_params.get("q", "").strip()
    try:
        number = int(request.query_params.get("page", "1"))
    except ValueError:
        number = 0
    if not 1 <= number <= MAX_PAGES:
        raise HTTPException(400, f"Pages go from 1 to {MAX_PAGES}.")
    context: dict[str, Any] = {"query": query, "hits": [], "error": None, "page": number}
    context.update(previous=None, next=None)
    if not query:
        return page(request, "search.html", context)
    context["error"] = papers.search_refusal(query)
    if context["error"] is not None:
        return page(request, "search.html", context, status=400)
    context["hits"], more = papers.search_page(
        state.engine,
        state.caches,
        query,
        first=PAGE_SIZE * (number - 1),
        size=PAGE_SIZE,
        base_url=state.settings.base_url,
    )
    if number > 1:
        context["previous"] = "/search?" + urlencode({"q": query, "page": number - 1})
    if more and number < MAX_PAGES:
        context["next"] = "/search?" + urlencode({"q": query, "page": number + 1})
    context["feed"] = "/feeds/search.atom?" + urlencode({"q": query})
    return page(request, "search.html", context)


routes: list[BaseRoute] = [
    Route("/", home, methods=["GET", "HEAD"]),
    Route("/papers/{key:path}", paper_page, methods=["GET", "HEAD"]),
    Route("/search", search_page, methods=["GET", "HEAD"]),
]
