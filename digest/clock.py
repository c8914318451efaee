"""Times as digest keeps them: aware UTC, and the day a moment falls on where the site is."""

from __future__ import annotations

from datetime import UTC, date, datetime, tzinfo
from typing import Literal


def as_utc(moment: datetime, naive: Literal["utc", "refuse"] = "utc") -> datetime:
    """``moment`` as an aware UTC time.

    A naive time is taken to be UTC already (``naive="utc"``), or refused with a
    ``ValueError`` (``naive="refuse"``: the store, where a missing zone is a bug).
    """
    if moment.tzinfo is None:
        if naive == "refuse":
            raise ValueError("times given to the store must carry a zone")
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def period_of(now: datetime, tz: tzinfo) -> date:
    """The day ``now`` falls on in the configured time zone."""
    return now.astimezone(tz).date()
