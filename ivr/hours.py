"""Is the hotline open now? Business hours and holidays in the calendar's time zone.

Pure functions over `ivr.model.Calendar` and an aware datetime: the engine passes
its (injectable) clock, so tests force after-hours without touching the system time.
Local time comes from zoneinfo, so a calendar in a zone with daylight saving time
opens at 08:00 local all year.
"""

from __future__ import annotations

from datetime import date, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from ivr.model import Calendar

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@lru_cache(maxsize=32)
def zone(name: str) -> ZoneInfo:
    """ZoneInfo by name (cached; raises ZoneInfoNotFoundError for an unknown zone)."""
    return ZoneInfo(name)


def holiday(calendar: Calendar, day: date) -> bool:
    return any(first <= day <= last for first, last in calendar.holidays)


def is_open(calendar: Calendar, now: datetime) -> bool:
    """True during opening hours; `now` must be timezone-aware."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("the clock must give timezone-aware datetimes")
    local = now.astimezone(zone(calendar.timezone))
    day = local.date()
    minute = local.hour * 60 + local.minute
    if day in calendar.workdays:
        start, end = calendar.workday_hours
        return start <= minute < end
    if holiday(calendar, day):
        return False
    return any(wd == local.weekday() and start <= minute < end for wd, start, end in calendar.weekly)


def why(calendar: Calendar, now: datetime) -> str:
    """A short reason for the route log, e.g. `closed: holiday 2026-10-01 (Asia/Shanghai)`."""
    local = now.astimezone(zone(calendar.timezone))
    state = "open" if is_open(calendar, now) else "closed"
    detail = "workday" if local.date() in calendar.workdays else (
        "holiday" if holiday(calendar, local.date()) else WEEKDAYS[local.weekday()])
    return f"{state}: {detail} {local:%Y-%m-%d %H:%M} {calendar.timezone}"
