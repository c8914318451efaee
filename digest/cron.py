"""The schedule: a standard five-field cron line, read the way APScheduler 3 will run it.

One reading serves three places: the settings refuse a bad line when they are read,
``digest serve`` runs it, and ``digest status`` and ``/healthz`` show when it fires next.
APScheduler's trigger is only imported here, not its schedulers: a command that shows the
next run does not load the machinery that runs it.
"""

from __future__ import annotations

from datetime import tzinfo
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]

from digest.errors import ConfigError

_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _cron_day(token: str) -> int:
    token = token.strip().lower()
    if token[:3] in _CRON_DAYS and not token.isdigit():
        return _CRON_DAYS.index(token[:3])
    day = int(token)
    if not 0 <= day <= 7:
        raise ValueError(f"day of week {day} is out of range 0-7")
    return day % 7


def _weekday_field(field: str) -> str:
    """Standard cron's day-of-week field (0 or 7 = Sunday) in APScheduler 3's terms (0 = Monday).

    APScheduler 3's ``from_crontab`` passes the field through unchanged, which shifts every
    numbered weekday by one; so expand it to explicit day names.
    """
    if field in {"*", "?"}:
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError("a step must be 1 or more")
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            low, high = span.split("-", 1)
            first, last = _cron_day(low), _cron_day(high)
            if high.strip() == "7":
                last = 7  # "5-7" means Friday to Sunday
        else:
            first = _cron_day(span)
            last = 6 if step_text else first  # "1/2": from Monday, every other day
        if first > last:
            raise ValueError(f"day range {span} runs backwards")
        days.update(day % 7 for day in range(first, last + 1, step))
    return ",".join(_CRON_DAYS[day] for day in sorted(days))


def schedule_problem(schedule: str) -> str | None:
    """Why ``schedule`` is no cron line APScheduler can run, or None."""
    fields = schedule.split()
    if len(fields) != 5:
        return "must be a cron expression of five fields, such as '0 7 * * *'"
    try:
        fields[4] = _weekday_field(fields[4])
        CronTrigger.from_crontab(" ".join(fields), timezone=ZoneInfo("UTC"))
    except ValueError as exc:
        return f"is not valid cron: {exc}"
    return None


def crontab_trigger(schedule: str, timezone: str | tzinfo) -> CronTrigger:
    """A trigger for a standard five-field cron ``schedule`` in ``timezone``."""
    problem = schedule_problem(schedule)
    if problem:
        raise ConfigError(f"setting schedule ({schedule!r}) {problem}")
    fields = schedule.split()
    fields[4] = _weekday_field(fields[4])
    zone = ZoneInfo(timezone) if isinstance(timezone, str) else timezone
    return CronTrigger.from_crontab(" ".join(fields), timezone=zone)
