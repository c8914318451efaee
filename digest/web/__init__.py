"""The web front: subscription with double opt-in, manage, one-click unsubscribe, paper
pages, search and live feeds, as an ASGI app (Starlette) served by uvicorn.

It reads and writes only through the store's queries and ranks only through
``digest.rank``; it never runs the digest itself (``digest serve`` runs the scheduler
beside it, under the run lock).
"""
