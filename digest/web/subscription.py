"""Subscribing with double opt-in, confirming, managing, and one-click unsubscribe."""

from __future__ import annotations

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
