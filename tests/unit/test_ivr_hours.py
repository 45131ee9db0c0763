"""Business hours, holidays, make-up workdays and time zones (ivr.hours)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from dialplans.definition import InvalidDefinition, load_definition
from ivr.hours import is_open, why
from ivr.model import Calendar, Hours

WEEKDAYS_9_TO_6 = tuple((d, 9 * 60, 18 * 60) for d in range(5))
SHANGHAI = Calendar("main", "Asia/Shanghai", WEEKDAYS_9_TO_6,
                    holidays=((date(2026, 10, 1), date(2026, 10, 7)),), workdays=(date(2026, 10, 10),))
CST = timezone(timedelta(hours=8))


@pytest.mark.parametrize(("local", "expected"), [
    (datetime(2026, 11, 25, 9, 0, tzinfo=CST), True),  # Wednesday, opening minute
    (datetime(2026, 11, 25, 17, 59, tzinfo=CST), True),
    (datetime(2026, 11, 25, 18, 0, tzinfo=CST), False),  # end is exclusive
    (datetime(2026, 11, 25, 8, 59, tzinfo=CST), False),
    (datetime(2026, 11, 28, 10, 0, tzinfo=CST), False),  # Saturday
    (datetime(2026, 10, 5, 10, 0, tzinfo=CST), False),  # Monday inside the National Day holiday
    (datetime(2026, 10, 10, 10, 0, tzinfo=CST), True),  # Saturday make-up workday
    (datetime(2026, 10, 10, 19, 0, tzinfo=CST), False),
])
def test_open_in_local_time(local: datetime, expected: bool) -> None:
    assert is_open(SHANGHAI, local) is expected
    assert is_open(SHANGHAI, local.astimezone(UTC)) is expected  # the instant counts, not the offset


def test_utc_instant_is_read_in_the_calendars_zone() -> None:
    # 01:30 UTC is 09:30 in Shanghai (open) but still the previous evening in New York.
    now = datetime(2026, 11, 25, 1, 30, tzinfo=UTC)
    assert is_open(SHANGHAI, now)
    new_york = Calendar("ny", "America/New_York", WEEKDAYS_9_TO_6)
    assert not is_open(new_york, now)


def test_daylight_saving_keeps_local_opening_time() -> None:
    berlin = Calendar("eu", "Europe/Berlin", WEEKDAYS_9_TO_6)
    assert is_open(berlin, datetime(2026, 7, 1, 7, 0, tzinfo=UTC))  # 09:00 CEST
    assert not is_open(berlin, datetime(2026, 1, 7, 7, 0, tzinfo=UTC))  # 08:00 CET
    assert is_open(berlin, datetime(2026, 1, 7, 8, 0, tzinfo=UTC))


def test_naive_clock_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        is_open(SHANGHAI, datetime(2026, 11, 25, 10, 0))  # noqa: DTZ001 - the point of the test


def test_reason_names_the_day_kind() -> None:
    assert why(SHANGHAI, datetime(2026, 10, 2, 10, 0, tzinfo=CST)) == "closed: holiday 2026-10-02 10:00 Asia/Shanghai"
    assert why(SHANGHAI, datetime(2026, 11, 25, 10, 0, tzinfo=CST)) == "open: wed 2026-11-25 10:00 Asia/Shanghai"


HOURS_YAML = """
version: 1
hotline: {{numbers: ["4000"], failsafe_queue: q, failsafe_prompt: p}}
hours:
  main:
    timezone: {tz}
    weekly:
      {days}: {ranges}
    holidays: [2026-10-01, {{from: 2026-02-16, to: 2026-02-20}}]
    workdays: [2026-02-28]
    workday_hours: "10:00-16:00"
prompts: {{p: {{text: hi}}}}
agents: {{"1001": {{name: A}}}}
queues: {{q: {{members: ["1001"]}}}}
ivr:
  start: h
  nodes:
    h: {{type: hours, calendar: main, open: q, closed: bye}}
    q: {{type: queue, queue: q}}
    bye: {{type: hangup, prompts: [p]}}
"""


def test_calendar_from_the_definition() -> None:
    text = HOURS_YAML.format(tz="Asia/Shanghai", days="mon-fri, sat", ranges='["08:00-12:00", "13:00-20:00"]')
    defn = load_definition(text)
    node = defn.flow.nodes["h"]
    assert isinstance(node, Hours) and node.calendar is defn.calendars["main"]
    cal = node.calendar
    assert (5, 13 * 60, 20 * 60) in cal.weekly and not any(d == 6 for d, _, _ in cal.weekly)
    assert cal.holidays == ((date(2026, 10, 1), date(2026, 10, 1)), (date(2026, 2, 16), date(2026, 2, 20)))
    assert cal.workdays == (date(2026, 2, 28),) and cal.workday_hours == (600, 960)
    assert not is_open(cal, datetime(2026, 11, 25, 12, 30, tzinfo=CST))  # lunch break


@pytest.mark.parametrize(("tz", "days", "ranges", "message"), [
    ("Mars/Olympus", "mon-fri", '"08:00-20:00"', "unknown time zone 'Mars/Olympus'"),
    ("Asia/Shanghai", "mon-fry", '"08:00-20:00"', "days are mon, tue"),
    ("Asia/Shanghai", "fri-mon", '"08:00-20:00"', "runs forward"),
    ("Asia/Shanghai", "mon-fri", '"20:00-08:00"', "ends before it starts"),
    ("Asia/Shanghai", "mon-fri", '"8am-8pm"', "not a time range"),
])
def test_calendar_errors_name_the_line(tz: str, days: str, ranges: str, message: str) -> None:
    text = HOURS_YAML.format(tz=tz, days=days, ranges=ranges)
    with pytest.raises(InvalidDefinition) as info:
        load_definition(text)
    hits = [e for e in info.value.errors if message in e.message]
    assert hits, info.value.errors
    assert hits[0].line is not None and hits[0].line > 1
