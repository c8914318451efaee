"""Feedback links: "more like this" and "not for me" under every paper a reader is sent.

``GET /feedback/{token}?paper=KEY&vote=up|down`` checks the signed link and shows one
button; the ``POST`` of that button records the vote and answers a thank-you page with an
undo button. The GET changes nothing on purpose: mail scanners that open every link of a
message would otherwise vote on every paper, both ways, the later click winning, and teach
the reader's model noise. The vote itself is idempotent (voting again replaces it), so a
repeated POST is harmless. A link that was altered, forged or revoked, or names an unknown
paper or vote, gets a friendly 404 and changes nothing.

A digest item's link to the paper's page carries the same token (``/papers/KEY?r=TOKEN``):
there the page shows that reader's two vote buttons, which post to these routes. A page
link with a token that does not check out shows the page without them.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from digest import tokens
from digest.service.subscriptions import Subscriber
from digest.service.votes import (
    PaperRow,
    link_vote,
    reader_page,
    reader_vote,
    store_vote,
    undo_vote,
)
from digest.web.render import page
from digest.web.security import CSRF_FIELD, check_csrf
from digest.web.state import WebState, state_of

ASKED = {"up": "More like this", "down": "Not for me"}
_BAD_LINK = (
    "This feedback link is not valid: it may be incomplete, or from an address that has"
    " since left. Use the links of your latest digest."
)


def reader_votes(
    state: WebState, token: str | None, paper_key: str, paper_id: int
) -> dict[str, str | None] | None:
    """What a paper's page shows the reader whose ``token`` its link carried (for the key
    ``paper_key`` it was made with), as ``feedback_links.html`` shows it: where their two
    buttons post, and their vote so far. None without a token that checks out."""
    if not token:
        return None
    found = reader_vote(state.engine, state.verifying, token, paper_key, paper_id)
    if found is None:
        return None
    return {
        "more_action": found.more_action,
        "less_action": found.less_action,
        "given": ASKED.get(found.given or ""),
    }


def _checked(request: Request) -> tuple[WebState, Subscriber, PaperRow, str]:
    state = state_of(request)
    vote = request.query_params.get("vote", "")
    paper_key = request.query_params.get("paper", "")
    found = link_vote(state.engine, state.verifying, request.path_params["token"], paper_key, vote)
    if found is None:
        raise HTTPException(404, _BAD_LINK)
    subscriber, paper = found
    return state, subscriber, paper, vote


def _context(
    request: Request, reader: Subscriber, paper: PaperRow, vote: str, **more: Any
) -> dict[str, Any]:
    state = state_of(request)
    token = request.path_params["token"]
    return {
        "paper": paper,
        "vote": vote,
        "asked": ASKED[vote],
        "action": f"{request.url.path}?{request.url.query}",
        # where to go next: the paper's page (with the reader's buttons), their settings
        "paper_url": reader_page(paper.key, token),
        "manage_url": "/manage/"
        + tokens.link_token(state.key, reader.id, reader.token_salt, purpose="manage"),
        **more,
    }


def ask(request: Request) -> Response:
    """The confirm page of a feedback link: the paper, and one button."""
    _, reader, paper, vote = _checked(request)
    return page(request, "feedback.html", _context(request, reader, paper, vote, done=None))


async def answer(request: Request) -> Response:
    """The button: record the vote (or, from the thank-you page, take it back)."""
    form = await request.form()
    state, subscriber, paper, vote = await run_in_threadpool(_checked, request)
    check_csrf(request, state.verifying, form.get(CSRF_FIELD))
    if form.get("undo") == "1":
        await run_in_threadpool(undo_vote, state.engine, subscriber, paper)
        done = "undone"
    else:
        await run_in_threadpool(store_vote, state.engine, subscriber, paper, vote, state.now())
        done = "recorded"
    context = _context(request, subscriber, paper, vote, done=done)
    return page(request, "feedback.html", context)


routes: list[BaseRoute] = [
    Route("/feedback/{token}", ask, methods=["GET", "HEAD"]),
    Route("/feedback/{token}", answer, methods=["POST"]),
]
