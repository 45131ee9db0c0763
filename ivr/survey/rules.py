"""Dialing rules as pure functions: calling window, holidays, retries, sampling, clocks.

Every decision takes `now` (aware UTC) as an argument, so tests drive time with a
ManualClock and production uses SystemClock; nothing here reads the wall clock.
A decision carries the text of the rule that made it: it goes into the attempt's
audit row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

#: Outcomes after which a job is never dialled again.
FINAL_OUTCOMES = frozenset({"completed", "partial"})
#: Outcomes that may be retried, with their default delay in seconds.
DEFAULT_RETRY_DELAYS: Mapping[str, int] = {
    "no_answer": 3600, "busy": 900, "congestion": 600, "no_input": 7200, "failed": 1800,
}


class RulesError(ValueError):
    """Campaign rules that cannot be used; the message names the field."""


def _hhmm(value: str, what: str) -> time:
    try:
        hours, minutes = value.split(":")
        return time(int(hours), int(minutes))
    except (ValueError, AttributeError):
        raise RulesError(f"{what} must be HH:MM, not {value!r}") from None


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise RulesError(f"unknown time zone {name!r}") from None


@dataclass(frozen=True, slots=True)
class CampaignRules:
    """How, when and how often a campaign may call (stored as JSON on the campaign)."""

    window_start: str = "09:00"
    window_end: str = "20:00"
    #: Weekdays calls are allowed on (Monday = 0).
    weekdays: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)
    #: ISO dates (in the customer's zone) with no calls at all.
    holidays: tuple[str, ...] = ()
    max_attempts: int = 3
    retry_delays: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_RETRY_DELAYS))
    max_concurrent: int = 5
    #: Originates per second at most.
    pace_per_second: float = 1.0
    #: One survey per customer number per this many days (across campaigns).
    period_days: int = 30
    #: call_ended trigger: fraction of finished calls surveyed, per queue ("*" = default).
    sample_rates: Mapping[str, float] = field(default_factory=lambda: {"*": 1.0})
    #: Dial string; {number} is the customer's national number, {e164} the E.164 form.
    dial: str = "PJSIP/{number}@carrier"
    context: str = "survey-call"
    exten: str = "s"
    caller_id: str = "Survey <4008001234>"
    ring_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        start = _hhmm(self.window_start, "window_start")
        end = _hhmm(self.window_end, "window_end")
        if end <= start:
            raise RulesError("window_end must be after window_start")
        if not self.weekdays or any(not 0 <= d <= 6 for d in self.weekdays):
            raise RulesError("weekdays must be a non-empty list of 0..6 (Monday = 0)")
        for day in self.holidays:
            try:
                date.fromisoformat(day)
            except ValueError:
                raise RulesError(f"holiday {day!r} is not an ISO date") from None
        if not 1 <= self.max_attempts <= 20:
            raise RulesError("max_attempts must be 1..20")
        for outcome, delay in self.retry_delays.items():
            if outcome not in DEFAULT_RETRY_DELAYS or int(delay) < 0:
                raise RulesError(f"retry_delays: bad entry {outcome!r}: {delay!r}")
        if not 1 <= self.max_concurrent <= 1000:
            raise RulesError("max_concurrent must be 1..1000")
        if not 0 < self.pace_per_second <= 200:
            raise RulesError("pace_per_second must be in (0, 200]")
        if self.period_days < 0:
            raise RulesError("period_days must not be negative")
        for queue, rate in self.sample_rates.items():
            if not 0.0 <= float(rate) <= 1.0:
                raise RulesError(f"sample_rates[{queue!r}] must be within 0..1")
        if "{number}" not in self.dial and "{e164}" not in self.dial:
            raise RulesError("dial must contain {number} or {e164}")
        if not 1 <= self.ring_timeout_s <= 300:
            raise RulesError("ring_timeout_s must be 1..300")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> CampaignRules:
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise RulesError(f"unknown rule(s): {', '.join(sorted(unknown))}")
        values = dict(raw)
        for name in ("weekdays", "holidays"):
            if name in values:
                values[name] = tuple(values[name])
        if "retry_delays" in values:
            values["retry_delays"] = {**DEFAULT_RETRY_DELAYS, **{k: int(v) for k, v in values["retry_delays"].items()}}
        try:
            return cls(**values)
        except TypeError as exc:
            raise RulesError(str(exc)) from None

    @classmethod
    def from_json(cls, text: str) -> CampaignRules:
        return cls.from_dict(json.loads(text or "{}"))

    def to_json(self) -> str:
        data = asdict(self)
        data["weekdays"] = list(self.weekdays)
        data["holidays"] = list(self.holidays)
        return json.dumps(data, sort_keys=True)

    def with_(self, **changes: Any) -> CampaignRules:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class WindowDecision:
    allowed: bool
    rule: str
    #: When allowed: now. Otherwise the next moment the window opens (aware UTC).
    next_open: datetime


def calling_window(now: datetime, tz_name: str, rules: CampaignRules) -> WindowDecision:
    """May we call a customer in zone `tz_name` at `now`? If not, when next?"""
    tz = zone(tz_name)
    start = _hhmm(rules.window_start, "window_start")
    end = _hhmm(rules.window_end, "window_end")
    holidays = {date.fromisoformat(d) for d in rules.holidays}
    local = now.astimezone(tz)
    desc = f"window {rules.window_start}-{rules.window_end} {tz_name}"
    day = local.date()
    if day in holidays:
        reason = f"holiday {day.isoformat()} ({tz_name})"
    elif day.weekday() not in rules.weekdays:
        reason = f"weekday {day.weekday()} not allowed ({tz_name})"
    elif local.time() < start:
        reason = f"before {rules.window_start} {tz_name}"
    elif local.time() >= end:
        reason = f"after {rules.window_end} {tz_name}"
    else:
        return WindowDecision(True, f"{desc}; local {local:%Y-%m-%d %H:%M}", now)
    # The first allowed day from today on whose window start is still ahead.
    for offset in range(0, 370):
        candidate = day + timedelta(days=offset)
        if candidate in holidays or candidate.weekday() not in rules.weekdays:
            continue
        opens = datetime.combine(candidate, start, tzinfo=tz)
        if opens > local:
            return WindowDecision(False, reason, opens.astimezone(UTC))
    raise RulesError("no calling day within a year (weekdays/holidays exclude every day)")


def retry_at(outcome: str, attempts_made: int, now: datetime, rules: CampaignRules) -> tuple[datetime | None, str]:
    """When to try again after `outcome`, or None (with why) when the job is finished."""
    if outcome in FINAL_OUTCOMES:
        return None, outcome
    if outcome == "not_dialed":  # provably never reached Asterisk: does not use up an attempt
        return now, "retry: the call was never placed"
    if attempts_made >= rules.max_attempts:
        return None, f"max_attempts ({rules.max_attempts}) reached, last {outcome}"
    delay = rules.retry_delays.get(outcome)
    if delay is None:
        return None, f"no retry rule for {outcome}"
    return now + timedelta(seconds=int(delay)), f"retry after {outcome} in {int(delay)} s"


def sampled(key: str, queue: str, rules: CampaignRules) -> bool:
    """Deterministic sampling by call: the same call always gets the same answer."""
    rate = float(rules.sample_rates.get(queue, rules.sample_rates.get("*", 1.0)))
    if rate >= 1.0:
        return True
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


# -- clocks -------------------------------------------------------------------------------
class SystemClock:
    """Wall-clock time, aware UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def subscribe(self, _callback: Callable[[], None]) -> None:
        """Real time moves by itself; nobody needs waking."""


class ManualClock:
    """Time that moves only when a test says so; subscribers are told (the dialer wakes)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._now = start.astimezone(UTC)
        self._callbacks: list[Callable[[], None]] = []

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        self._now = when.astimezone(UTC)
        for callback in list(self._callbacks):
            callback()

    def advance(self, seconds: float) -> None:
        self.set(self._now + timedelta(seconds=seconds))

    def subscribe(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)
