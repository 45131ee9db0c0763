"""Report metrics: pure functions of call facts and rules (definitions in README "Reports").

Test calls never enter a queue or agent number: they are counted once, separately.
Ratios are None when their denominator is 0 (no calls is not 0 %).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cti.reports.facts import HotlineCall, QueueAttempt
from cti.reports.rules import ReportRules

UNKNOWN_REGION = "(unknown)"


def _ratio(part: float, whole: float) -> float | None:
    return None if whole == 0 else round(part / whole, 4)


def _mean(values: list[float]) -> float | None:
    return None if not values else round(sum(values) / len(values), 2)


@dataclass(frozen=True, slots=True)
class QueueMetrics:
    """One queue's (or all queues') numbers for a period."""

    queue: str
    #: Every attempt that entered the queue (test calls excluded).
    entered: int
    #: Abandoned with wait < short_abandon_seconds: not counted as offered.
    short_abandons: int
    #: entered - short_abandons.
    offered: int
    answered: int
    answered_in_service_level: int
    #: Abandoned after waiting at least short_abandon_seconds.
    abandoned: int
    timeouts: int
    other_exits: int
    in_queue: int
    service_level: float | None
    abandon_rate: float | None
    asa_seconds: float | None
    avg_talk_seconds: float | None
    aht_seconds: float | None
    max_wait_seconds: float | None
    test_calls_excluded: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_short_abandon(a: QueueAttempt, rules: ReportRules) -> bool:
    return a.outcome == "abandoned" and (a.wait_seconds or 0.0) < rules.short_abandon_seconds


def queue_metrics(attempts: Iterable[QueueAttempt], rules: ReportRules, queue: str = "(all)") -> QueueMetrics:
    """The metrics of the given attempts taken as one queue."""
    all_attempts = list(attempts)
    real = [a for a in all_attempts if not a.is_test]
    short = [a for a in real if is_short_abandon(a, rules)]
    answered = [a for a in real if a.outcome == "answered"]
    waits = [a.wait_seconds for a in answered if a.wait_seconds is not None]
    talks = [a for a in answered if a.talk_seconds is not None]
    offered = len(real) - len(short)
    in_sl = sum(1 for a in answered if a.wait_seconds is not None and a.wait_seconds <= rules.service_level_seconds)
    abandoned = sum(1 for a in real if a.outcome == "abandoned") - len(short)
    all_waits = [a.wait_seconds for a in real if a.wait_seconds is not None]
    return QueueMetrics(
        queue=queue, entered=len(real), short_abandons=len(short), offered=offered, answered=len(answered),
        answered_in_service_level=in_sl, abandoned=abandoned,
        timeouts=sum(1 for a in real if a.outcome == "timeout"),
        other_exits=sum(1 for a in real if a.outcome in ("exit_empty", "exit_key")),
        in_queue=sum(1 for a in real if a.outcome == "in_queue"),
        service_level=_ratio(in_sl, offered), abandon_rate=_ratio(abandoned, offered),
        asa_seconds=_mean(waits), avg_talk_seconds=_mean([a.talk_seconds or 0.0 for a in talks]),
        aht_seconds=_mean([(a.talk_seconds or 0.0) + rules.wrapup(a.queue) for a in talks]),
        max_wait_seconds=max(all_waits) if all_waits else None,
        test_calls_excluded=len(all_attempts) - len(real),
    )


def per_queue(attempts: Iterable[QueueAttempt], rules: ReportRules) -> list[QueueMetrics]:
    """One QueueMetrics per queue seen, sorted by name, then the total as "(all)"."""
    items = list(attempts)
    by_queue: dict[str, list[QueueAttempt]] = defaultdict(list)
    for a in items:
        by_queue[a.queue].append(a)
    return [queue_metrics(by_queue[q], rules, q) for q in sorted(by_queue)] + [queue_metrics(items, rules)]


def local(ts: float, rules: ReportRules) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC).astimezone(ZoneInfo(rules.timezone))


def intervals(attempts: Iterable[QueueAttempt], rules: ReportRules) -> list[dict[str, Any]]:
    """Offered and answered per queue per interval (local time, interval_minutes wide)."""
    rows: dict[tuple[str, datetime], Counter[str]] = defaultdict(Counter)
    width = rules.interval_minutes
    for a in attempts:
        if a.is_test:
            continue
        at = local(a.entered_at, rules)
        minute = (at.hour * 60 + at.minute) // width * width
        start = at.replace(hour=minute // 60, minute=minute % 60, second=0, microsecond=0)
        c = rows[(a.queue, start)]
        c["entered"] += 1
        if is_short_abandon(a, rules):
            continue
        c["offered"] += 1
        c["answered"] += a.outcome == "answered"
        c["abandoned"] += a.outcome == "abandoned"
    return [{"queue": q, "interval_start": start.isoformat(), "interval_end": (start + timedelta(minutes=width))
             .isoformat(), "offered": c["offered"], "answered": c["answered"], "abandoned": c["abandoned"]}
            for (q, start), c in sorted(rows.items())]


@dataclass(frozen=True, slots=True)
class AgentMetrics:
    agent: str
    #: Answered queue calls (test calls excluded; internal transfers included).
    handled: int
    handled_internal: int
    talk_seconds: float
    avg_talk_seconds: float | None
    aht_seconds: float | None
    #: Times the agent's phone rang for a queue caller and was not answered (RINGNOANSWER).
    ring_no_answer: int
    test_calls_excluded: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def per_agent(attempts: Iterable[QueueAttempt], rules: ReportRules) -> list[AgentMetrics]:
    handled: dict[str, list[QueueAttempt]] = defaultdict(list)
    rna: Counter[str] = Counter()
    tests: Counter[str] = Counter()
    for a in attempts:
        if a.is_test:
            if a.agent:
                tests[a.agent] += 1
            continue
        rna.update(a.ring_no_answer)
        if a.outcome == "answered" and a.agent:
            handled[a.agent].append(a)
    out = []
    for agent in sorted(set(handled) | set(rna) | set(tests)):
        mine = handled.get(agent, [])
        talks = [a for a in mine if a.talk_seconds is not None]
        out.append(AgentMetrics(
            agent=agent, handled=len(mine), handled_internal=sum(1 for a in mine if a.internal),
            talk_seconds=round(sum(a.talk_seconds or 0.0 for a in talks), 2),
            avg_talk_seconds=_mean([a.talk_seconds or 0.0 for a in talks]),
            aht_seconds=_mean([(a.talk_seconds or 0.0) + rules.wrapup(a.queue) for a in talks]),
            ring_no_answer=rna[agent], test_calls_excluded=tests[agent]))
    return out


def volume(calls: Iterable[HotlineCall], region_of: dict[str, str], rules: ReportRules) -> dict[str, Any]:
    """Hotline calls (test calls excluded) by caller region, by local hour, and both."""
    by_region: Counter[str] = Counter()
    by_hour: Counter[int] = Counter()
    both: Counter[tuple[str, int]] = Counter()
    for c in calls:
        if c.is_test:
            continue
        region = region_of.get(c.caller_num) or UNKNOWN_REGION
        hour = local(c.started_at, rules).hour
        by_region[region] += 1
        by_hour[hour] += 1
        both[(region, hour)] += 1
    return {
        "by_region": [{"region": r, "calls": n} for r, n in sorted(by_region.items(), key=lambda p: (-p[1], p[0]))],
        "by_hour": [{"hour": h, "calls": by_hour[h]} for h in range(24)],
        "by_region_hour": [{"region": r, "hour": h, "calls": n} for (r, h), n in sorted(both.items())],
    }


def hotline_summary(calls: Iterable[HotlineCall]) -> dict[str, Any]:
    """Calls into the hotline and how many ended in the IVR, before any queue."""
    items = list(calls)
    real = [c for c in items if not c.is_test]
    ivr = sum(1 for c in real if not c.queued)
    return {"calls": len(real), "ivr_hangups": ivr, "ivr_hangup_rate": _ratio(ivr, len(real)),
            "queued": sum(1 for c in real if c.queued), "answered": sum(1 for c in real if c.answered),
            "test_calls": len(items) - len(real)}


@dataclass(frozen=True, slots=True)
class SurveyResult:
    """One answered survey: the mean of its scored answers and whom it is about."""

    job_id: int
    score: float
    agent: str = ""
    technician: str = ""
    queue: str = ""
    at: float = 0.0


def satisfaction(results: Iterable[SurveyResult]) -> dict[str, list[dict[str, Any]]]:
    """Mean survey score and response count per agent, technician and queue."""
    groups: dict[str, dict[str, list[float]]] = {"agent": defaultdict(list), "technician": defaultdict(list),
                                                 "queue": defaultdict(list)}
    for r in results:
        for dim in groups:
            who = getattr(r, dim)
            if who:
                groups[dim][who].append(r.score)
    return {dim: [{dim: who, "responses": len(scores), "mean_score": _mean(scores)}
                  for who, scores in sorted(values.items())] for dim, values in groups.items()}


def praise_counts(agents: Iterable[str]) -> list[dict[str, Any]]:
    """One entry per praise (the agent praised) -> counts per agent, most praised first."""
    counts = Counter(a for a in agents if a)
    return [{"agent": a, "praise": n} for a, n in sorted(counts.items(), key=lambda p: (-p[1], p[0]))]


@dataclass(frozen=True, slots=True)
class TestCallRun:
    """One finished QA test call: which scenario, and whether every check passed."""

    __test__ = False  # not a pytest class

    scenario: str
    passed: bool
    at: float = 0.0


def test_call_pass_rates(runs: Iterable[TestCallRun]) -> list[dict[str, Any]]:
    """Runs, passes and pass rate per scenario, then "(all)"."""
    per: dict[str, list[bool]] = defaultdict(list)
    for r in runs:
        per[r.scenario].append(r.passed)
    every = [p for results in per.values() for p in results]
    rows = [(s, per[s]) for s in sorted(per)] + [("(all)", every)]
    return [{"scenario": s, "runs": len(v), "passed": sum(v), "pass_rate": _ratio(sum(v), len(v))} for s, v in rows]


test_call_pass_rates.__test__ = False  # type: ignore[attr-defined]

__all__ = [
    "AgentMetrics", "QueueMetrics", "SurveyResult", "TestCallRun", "hotline_summary", "intervals",
    "is_short_abandon", "per_agent", "per_queue", "praise_counts", "queue_metrics", "satisfaction",
    "test_call_pass_rates", "volume",
]
