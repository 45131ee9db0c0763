"""Scheduler rules: calling window per customer zone, holidays, weekdays, retries, sampling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ivr.survey.rules import CampaignRules, ManualClock, RulesError, calling_window, retry_at, sampled

RULES = CampaignRules(window_start="09:00", window_end="20:00", holidays=("2026-10-01",), weekdays=(0, 1, 2, 3, 4, 5))


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_inside_the_window_in_the_customers_zone() -> None:
    # 02:30 UTC is 10:30 in Shanghai (Tuesday 2026-09-29).
    decision = calling_window(utc(2026, 9, 29, 2, 30), "Asia/Shanghai", RULES)
    assert decision.allowed
    assert "Asia/Shanghai" in decision.rule and "10:30" in decision.rule


def test_same_instant_is_outside_for_a_customer_in_another_zone() -> None:
    # 02:30 UTC is 22:30 the previous evening in New York: closed until 09:00 local.
    decision = calling_window(utc(2026, 9, 29, 2, 30), "America/New_York", RULES)
    assert not decision.allowed
    assert decision.rule.startswith("after 20:00")
    assert decision.next_open == utc(2026, 9, 29, 13, 0)  # 09:00 EDT


def test_before_the_window_opens_today() -> None:
    decision = calling_window(utc(2026, 9, 29, 0, 0), "Asia/Shanghai", RULES)  # 08:00 local
    assert not decision.allowed
    assert decision.next_open == utc(2026, 9, 29, 1, 0)  # 09:00 local


def test_holiday_and_excluded_weekday_are_skipped() -> None:
    # 2026-10-01 (Thursday) is a holiday; 10-03 is Saturday (allowed), 10-04 Sunday (not).
    decision = calling_window(utc(2026, 10, 1, 3, 0), "Asia/Shanghai", RULES)
    assert not decision.allowed and "holiday 2026-10-01" in decision.rule
    assert decision.next_open == utc(2026, 10, 2, 1, 0)
    sunday = calling_window(utc(2026, 10, 4, 3, 0), "Asia/Shanghai", RULES)
    assert not sunday.allowed and "weekday 6" in sunday.rule
    assert sunday.next_open == utc(2026, 10, 5, 1, 0)


def test_window_end_is_exclusive() -> None:
    assert not calling_window(utc(2026, 9, 29, 12, 0), "Asia/Shanghai", RULES).allowed  # 20:00 local
    assert calling_window(utc(2026, 9, 29, 11, 59), "Asia/Shanghai", RULES).allowed


def test_retry_delays_per_outcome_and_max_attempts() -> None:
    rules = CampaignRules(max_attempts=3, retry_delays={"no_answer": 600, "busy": 120, "congestion": 60,
                                                       "no_input": 3600, "failed": 30})
    now = utc(2026, 9, 29, 3, 0)
    for outcome, delay in (("no_answer", 600), ("busy", 120), ("congestion", 60), ("no_input", 3600)):
        when, why = retry_at(outcome, 1, now, rules)
        assert when == now + timedelta(seconds=delay), outcome
        assert outcome in why
    when, why = retry_at("no_answer", 3, now, rules)
    assert when is None and "max_attempts (3)" in why
    assert retry_at("completed", 1, now, rules) == (None, "completed")
    assert retry_at("partial", 1, now, rules)[0] is None
    # Never placed: may go again at once, whatever the attempt count.
    assert retry_at("not_dialed", 3, now, rules)[0] == now


def test_sampling_is_deterministic_and_per_queue() -> None:
    rules = CampaignRules(sample_rates={"repair": 0.25, "*": 0.0, "vip": 1.0})
    keys = [f"1700000000.{i}" for i in range(4000)]
    picked = [k for k in keys if sampled(k, "repair", rules)]
    assert 800 < len(picked) < 1200
    assert picked == [k for k in keys if sampled(k, "repair", rules)]
    assert not any(sampled(k, "complaint", rules) for k in keys[:200])
    assert all(sampled(k, "vip", rules) for k in keys[:200])


@pytest.mark.parametrize("bad", [
    {"window_start": "25:00"}, {"window_start": "10:00", "window_end": "09:00"}, {"holidays": ["not-a-date"]},
    {"max_attempts": 0}, {"retry_delays": {"sometimes": 5}}, {"pace_per_second": 0}, {"sample_rates": {"*": 2}},
    {"dial": "PJSIP/carrier"}, {"weekdays": [7]}, {"unknown_rule": 1},
])
def test_bad_rules_are_refused_with_the_field_named(bad: dict[str, object]) -> None:
    with pytest.raises(RulesError):
        CampaignRules.from_dict(bad)


def test_rules_round_trip_through_json() -> None:
    rules = CampaignRules.from_dict({"holidays": ["2026-10-01"], "retry_delays": {"busy": 5}, "max_concurrent": 7})
    again = CampaignRules.from_json(rules.to_json())
    assert again == rules
    assert again.retry_delays["busy"] == 5 and again.retry_delays["no_answer"] == 3600


def test_manual_clock_wakes_subscribers() -> None:
    clock = ManualClock(utc(2026, 9, 29, 0, 0))
    woke: list[datetime] = []
    clock.subscribe(lambda: woke.append(clock.now()))
    clock.advance(90)
    assert woke == [utc(2026, 9, 29, 0, 1, 30)]
