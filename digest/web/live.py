"""Feeds served live from the store: the public feed, private feeds and search feeds."""

from __future__ import annotations

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
