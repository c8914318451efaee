"""``/healthz`` for load balancers and ``/metrics`` for Prometheus."""

from __future__ import annotations

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
