"""Metric functions against numbers computed by hand (comments show the arithmetic)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cti.reports.facts import QueueAttempt, TrackedCall, callbacks, hotline_calls, queue_attempts
from cti.reports.metrics import (
    SurveyResult,
    TestCallRun,
    hotline_summary,
    intervals,
    per_agent,
    per_queue,
    praise_counts,
    queue_metrics,
    satisfaction,
    test_call_pass_rates,
    volume,
)
from cti.reports.rules import ReportRules, RulesError, from_mapping
from cti.reports.sources import complete_lines, parse_cdr_line, parse_queue_log_line

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "reports"
TZ = ZoneInfo("Asia/Shanghai")
# 2026-03-02 09:00:00 local time
T0 = int(datetime(2026, 3, 2, 9, 0, tzinfo=TZ).timestamp())
RULES = ReportRules(service_level_seconds=20, short_abandon_seconds=5, interval_minutes=30,
                    wrapup_seconds={"repair": 10})


def attempt(n: int, queue: str = "repair", **kw: object) -> QueueAttempt:
    fields: dict[str, object] = {"callid": f"c{n}", "queue": queue, "entered_at": T0 + n * 60}
    fields.update(kw)
    return QueueAttempt(**fields)  # type: ignore[arg-type]


# repair: 4 answered (waits 5, 15, 25, 40; talks 100, 200, 300, 400), 2 abandoned (waits 3 -> short, 30),
# 1 timeout (wait 120), 1 test call answered (excluded). sales: 1 answered (wait 10, talk 60), 1 abandoned (wait 4).
ATTEMPTS = [
    attempt(0, outcome="answered", wait_seconds=5, talk_seconds=100, agent="1001"),
    attempt(1, outcome="answered", wait_seconds=15, talk_seconds=200, agent="1002"),
    attempt(2, outcome="answered", wait_seconds=25, talk_seconds=300, agent="1001"),
    attempt(3, outcome="answered", wait_seconds=40, talk_seconds=400, agent="1001", ring_no_answer=("1002",)),
    attempt(4, outcome="abandoned", wait_seconds=3),
    attempt(5, outcome="abandoned", wait_seconds=30),
    attempt(6, outcome="timeout", wait_seconds=120),
    attempt(7, outcome="answered", wait_seconds=1, talk_seconds=50, agent="1002", is_test=True),
    attempt(40, "sales", outcome="answered", wait_seconds=10, talk_seconds=60, agent="1002"),
    attempt(41, "sales", outcome="abandoned", wait_seconds=4),
]


def test_queue_metrics_by_hand() -> None:
    repair = queue_metrics([a for a in ATTEMPTS if a.queue == "repair"], RULES, "repair")
    # entered 7 (test call out), short abandon 1 -> offered 6
    assert (repair.entered, repair.short_abandons, repair.offered) == (7, 1, 6)
    assert (repair.answered, repair.abandoned, repair.timeouts) == (4, 1, 1)
    # answered within 20 s: waits 5 and 15 -> 2 of 6 offered
    assert repair.answered_in_service_level == 2
    assert repair.service_level == round(2 / 6, 4)
    assert repair.abandon_rate == round(1 / 6, 4)
    assert repair.asa_seconds == (5 + 15 + 25 + 40) / 4  # 21.25
    assert repair.avg_talk_seconds == 250.0
    assert repair.aht_seconds == 260.0  # 250 talk + 10 wrap-up
    assert repair.max_wait_seconds == 120
    assert repair.test_calls_excluded == 1


def test_per_queue_total_and_empty() -> None:
    rows = {q.queue: q for q in per_queue(ATTEMPTS, RULES)}
    total = rows["(all)"]
    # entered 9, short abandons 2 (waits 3 and 4) -> offered 7; answered 5; in SL 3 (5, 15, 10)
    assert (total.entered, total.offered, total.answered, total.answered_in_service_level) == (9, 7, 5, 3)
    assert total.service_level == round(3 / 7, 4)
    assert total.abandon_rate == round(1 / 7, 4)
    # AHT: repair (110, 210, 310, 410), sales 60 (no wrap-up) -> 1100 / 5
    assert total.aht_seconds == 220.0
    assert rows["sales"].short_abandons == 1 and rows["sales"].abandon_rate == 0.0
    empty = queue_metrics([], RULES)
    assert empty.service_level is None and empty.asa_seconds is None and empty.abandon_rate is None


def test_rules_change_recomputes() -> None:
    strict = ReportRules(service_level_seconds=10, short_abandon_seconds=0)
    repair = queue_metrics([a for a in ATTEMPTS if a.queue == "repair"], strict)
    # no short abandons: offered 7, abandoned 2; SL: only wait 5 -> 1/7; no wrap-up configured -> AHT = talk
    assert (repair.offered, repair.abandoned, repair.answered_in_service_level) == (7, 2, 1)
    assert repair.service_level == round(1 / 7, 4)
    assert repair.aht_seconds == 250.0


def test_intervals_by_hand() -> None:
    rows = intervals(ATTEMPTS, RULES)
    # repair: minutes 0..6 -> 09:00-09:30 (7 non-test; offered 6 after the short abandon, answered 4)
    # sales: minute 40 and 41 -> 09:30-10:00 (offered 1: the 4 s abandon is short)
    assert [(r["queue"], r["interval_start"][11:16], r["offered"], r["answered"], r["abandoned"]) for r in rows] == [
        ("repair", "09:00", 6, 4, 1), ("sales", "09:30", 1, 1, 0)]
    hourly = intervals(ATTEMPTS, ReportRules(interval_minutes=60))
    assert [(r["queue"], r["interval_start"][11:16], r["interval_end"][11:16]) for r in hourly] == [
        ("repair", "09:00", "10:00"), ("sales", "09:00", "10:00")]


def test_per_agent_by_hand() -> None:
    agents = {a.agent: a for a in per_agent(ATTEMPTS, RULES)}
    assert agents["1001"].handled == 3 and agents["1001"].talk_seconds == 800
    assert agents["1001"].aht_seconds == pytest.approx((110 + 310 + 410) / 3, abs=0.01)
    # 1002: repair 200 (+10) and sales 60; the test call is only counted as excluded
    assert (agents["1002"].handled, agents["1002"].aht_seconds) == (2, 135.0)
    assert (agents["1002"].ring_no_answer, agents["1002"].test_calls_excluded) == (1, 1)


def test_volume_by_region_and_hour() -> None:
    from cti.reports.facts import HotlineCall

    calls = [
        HotlineCall("a", T0, "13800000001", True, True),
        HotlineCall("b", T0 + 3600, "13800000001", True, False),
        HotlineCall("c", T0 + 3600, "13900000002", False, False),
        HotlineCall("d", T0 + 7200, "", False, False),
        HotlineCall("e", T0, "13800000001", True, True, is_test=True),
    ]
    v = volume(calls, {"13800000001": "华东", "13900000002": "华北"}, RULES)
    assert v["by_region"] == [{"region": "华东", "calls": 2}, {"region": "(unknown)", "calls": 1},
                              {"region": "华北", "calls": 1}]
    assert {h["hour"]: h["calls"] for h in v["by_hour"] if h["calls"]} == {9: 1, 10: 2, 11: 1}
    assert hotline_summary(calls) == {"calls": 4, "ivr_hangups": 2, "ivr_hangup_rate": 0.5, "queued": 2,
                                      "answered": 1, "test_calls": 1}


def test_real_queue_log_rebuilds_the_scripted_calls() -> None:
    """The fixture's seven calls (see tests/integration/test_reports_real_calls.py)."""
    lines, _ = complete_lines((FIXTURES / "queue_log").read_bytes())
    entries = [parse_queue_log_line(raw, n) for n, raw in lines]
    tracked = {"1795907138.4": TrackedCall("1795907138.4", is_test_call=True)}
    got = {a.caller_num[-1]: a for a in queue_attempts(entries, tracked, ["1001", "1002", "1003", "1004"])}
    # callers ...1 fast, ...2 slow, ...3 short abandon, ...4 abandon, ...5 timeout, ...7 test call
    assert (got["1"].outcome, got["1"].agent, got["1"].wait_seconds, got["1"].talk_seconds, got["1"].ended_by) == (
        "answered", "1001", 0.0, 5.0, "caller")
    assert (got["2"].outcome, got["2"].agent, got["2"].wait_seconds, got["2"].ended_by) == (
        "answered", "1002", 5.0, "agent")
    assert (got["3"].outcome, got["3"].wait_seconds) == ("abandoned", 0.0)
    assert (got["4"].outcome, got["4"].wait_seconds) == ("abandoned", 5.0)
    assert (got["5"].outcome, got["5"].wait_seconds) == ("timeout", 8.0)
    assert got["7"].is_test and got["7"].agent == "1004"
    assert "6" not in got  # hung up in the IVR, never queued

    cdr_lines, _ = complete_lines((FIXTURES / "hotline-cdr.csv").read_bytes())
    cdrs = [parse_cdr_line(raw, n) for n, raw in cdr_lines]
    calls = hotline_calls(cdrs, got.values(), tracked)
    assert len(calls) == 7
    assert [c.caller_num[-1] for c in calls if not c.queued] == ["6"]
    assert hotline_summary(calls)["ivr_hangups"] == 1 and hotline_summary(calls)["test_calls"] == 1
    assert callbacks(cdrs, ["1001", "1002", "1003", "1004"]) == []


def test_queue_attempts_transfers_internal_and_unlogged_exits() -> None:
    e = [
        f"{T0}|c1|repair|NONE|ENTERQUEUE||13800000001|1",
        f"{T0 + 2}|c1|repair|1001|CONNECT|2|x|1",
        f"{T0 + 50}|c1|repair|1001|BLINDTRANSFER|600|hotline-route|2|48|1",
        f"{T0 + 51}|c1|sales|NONE|ENTERQUEUE||13800000001|1",
        f"{T0 + 53}|c1|sales|1002|CONNECT|2|y|1",
        f"{T0 + 90}|c1|sales|1002|COMPLETECALLER|2|37|1",
        f"{T0 + 100}|c2|repair|NONE|ENTERQUEUE||1003|1",
        f"{T0 + 101}|c2|repair|1001|RINGNOANSWER|1000",
        f"{T0 + 102}|c3|repair|1001|COMPLETEAGENT|1|1|1",  # no ENTERQUEUE imported: ignored
    ]
    entries = [parse_queue_log_line(line) for line in e]
    got = queue_attempts(entries, {}, ["1001", "1002", "1003"])
    first, second, internal = got
    assert (first.queue, first.ended_by, first.talk_seconds, first.internal) == ("repair", "transfer", 48.0, None)
    assert (second.queue, second.agent, second.talk_seconds) == ("sales", "1002", 37.0)
    assert second.internal == "transferred in by agent 1001"
    assert (internal.outcome, internal.internal, internal.ring_no_answer) == ("in_queue", "caller is agent 1003",
                                                                              ("1001",))


def test_satisfaction_praise_and_pass_rates() -> None:
    results = [SurveyResult(1, 5.0, agent="1001", technician="王师傅", queue="repair"),
               SurveyResult(2, 3.0, agent="1001", queue="repair"),
               SurveyResult(3, 4.0, agent="1002", technician="王师傅", queue="sales")]
    s = satisfaction(results)
    assert s["agent"] == [{"agent": "1001", "responses": 2, "mean_score": 4.0},
                          {"agent": "1002", "responses": 1, "mean_score": 4.0}]
    assert s["technician"] == [{"technician": "王师傅", "responses": 2, "mean_score": 4.5}]
    assert [q["mean_score"] for q in s["queue"]] == [4.0, 4.0]
    assert praise_counts(["1002", "1001", "1002", ""]) == [{"agent": "1002", "praise": 2},
                                                           {"agent": "1001", "praise": 1}]
    rates = test_call_pass_rates([TestCallRun("menu", True), TestCallRun("menu", False), TestCallRun("agent", True)])
    assert rates == [{"scenario": "agent", "runs": 1, "passed": 1, "pass_rate": 1.0},
                     {"scenario": "menu", "runs": 2, "passed": 1, "pass_rate": 0.5},
                     {"scenario": "(all)", "runs": 3, "passed": 2, "pass_rate": round(2 / 3, 4)}]


def test_rules_from_mapping() -> None:
    report, piece = from_mapping({"reports": {"service_level_seconds": "15", "wrapup_seconds": {"repair": 5}},
                                  "piece_rate": {"min_talk_seconds": 20}}, wrapup={"sales": 3})
    assert report.service_level_seconds == 15.0 and report.wrapup("repair") == 5.0 and report.wrapup("x") == 0
    assert piece.min_talk_seconds == 20.0
    assert from_mapping(None, wrapup={"sales": 3})[0].wrapup("sales") == 3.0
    for bad, message in [({"reports": {"service_levl_seconds": 1}}, "unknown rule"),
                         ({"reports": {"short_abandon_seconds": -1}}, "negative"),
                         ({"reports": {"interval_minutes": 7}}, "divide a day"),
                         ({"piece_rate": {"base_points": "lots"}}, "not a float"),
                         ({"bonus": {}}, "unknown rule section")]:
        with pytest.raises(RulesError, match=message):
            from_mapping(bad)  # type: ignore[arg-type]


def test_thresholds_are_inclusive_where_the_readme_says() -> None:
    at_limit = [attempt(0, outcome="answered", wait_seconds=20, talk_seconds=1, agent="1001"),
                attempt(1, outcome="abandoned", wait_seconds=5)]
    m = queue_metrics(at_limit, RULES)
    # wait == service_level_seconds is in time; an abandon at exactly short_abandon_seconds is not short
    assert (m.answered_in_service_level, m.short_abandons, m.abandoned, m.offered) == (1, 0, 1, 2)
