"""Monthly piece-rate statements: 累计积分 = 基准积分 + 计件积分 + 综合积分.

Every call the agent answered or placed in the month is listed with whether it
counted and why (the rules are in README "Reports" and `PieceRateRules`). Pure:
the same facts and rules always give the same statement.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from cti.reports.facts import Callback, QueueAttempt
from cti.reports.rules import PieceRateRules


@dataclass(frozen=True, slots=True)
class StatementLine:
    kind: str  # hotline | callback
    linkedid: str
    at: float
    queue: str
    number: str
    talk_seconds: float | None
    counted: bool
    reason: str
    points: float


@dataclass(frozen=True, slots=True)
class CompositeInputs:
    """The inputs of 综合积分; None means no data for the month (contributes 0)."""

    survey_mean_score: float | None = None
    survey_responses: int = 0
    praise: int = 0
    qa_score: float | None = None


@dataclass(frozen=True, slots=True)
class Statement:
    agent: str
    month: str
    lines: tuple[StatementLine, ...]
    counted_calls: int
    counted_callbacks: int
    base_points: float
    piece_points: float
    composite_points: float
    composite: CompositeInputs
    composite_parts: dict[str, float] = field(default_factory=dict)
    rules: PieceRateRules = field(default_factory=PieceRateRules)

    @property
    def total_points(self) -> float:
        return round(self.base_points + self.piece_points + self.composite_points, 2)

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent, "month": self.month,
            "total_points": self.total_points, "base_points": self.base_points,
            "piece_points": self.piece_points, "composite_points": self.composite_points,
            "formula": "累计积分 = 基准积分 + 计件积分 + 综合积分",
            "counted_calls": self.counted_calls, "counted_callbacks": self.counted_callbacks,
            "not_counted": sum(1 for line in self.lines if not line.counted),
            "composite": {**asdict(self.composite), "parts": self.composite_parts},
            "rules": asdict(self.rules),
            "lines": [{**asdict(line), "at_utc": datetime.fromtimestamp(line.at, UTC).isoformat()}
                      for line in self.lines],
        }


def _hotline_line(a: QueueAttempt, rules: PieceRateRules) -> StatementLine:
    talk = a.talk_seconds
    if a.is_test:
        counted, reason = False, "test call"
    elif a.internal:
        counted, reason = False, f"internal: {a.internal}"
    elif talk is None:
        counted, reason = False, "still connected (no talk time logged yet)"
    elif talk < rules.min_talk_seconds:
        counted, reason = False, f"talk {talk:g} s < minimum {rules.min_talk_seconds:g} s"
    else:
        counted, reason = True, f"answered from queue {a.queue}, talk {talk:g} s"
    return StatementLine("hotline", a.callid, float(a.entered_at), a.queue, a.caller_num, talk, counted, reason,
                         rules.points_per_call if counted else 0.0)


def _callback_line(c: Callback, rules: PieceRateRules) -> StatementLine:
    if c.is_test:
        counted, reason = False, "test call"
    elif not c.answered:
        counted, reason = False, "callback not answered"
    elif c.talk_seconds < rules.min_talk_seconds:
        counted, reason = False, f"talk {c.talk_seconds:g} s < minimum {rules.min_talk_seconds:g} s"
    else:
        counted, reason = True, f"completed callback, talk {c.talk_seconds:g} s"
    return StatementLine("callback", c.linkedid, c.started_at, "", c.number, c.talk_seconds, counted, reason,
                         rules.points_per_callback if counted else 0.0)


def statement(agent: str, month: str, attempts: Iterable[QueueAttempt], calls_back: Iterable[Callback],
              composite: CompositeInputs, rules: PieceRateRules) -> Statement:
    """The agent's statement from the month's attempts and callbacks (already limited to the month)."""
    lines = [_hotline_line(a, rules) for a in attempts if a.agent == agent and a.outcome == "answered"]
    lines += [_callback_line(c, rules) for c in calls_back if c.agent == agent]
    lines.sort(key=lambda line: (line.at, line.linkedid))
    parts = {
        "survey": round(rules.survey_weight * (composite.survey_mean_score or 0.0), 2),
        "praise": round(rules.praise_points * composite.praise, 2),
        "qa": round(rules.qa_weight * (composite.qa_score or 0.0), 2),
    }
    return Statement(
        agent=agent, month=month, lines=tuple(lines),
        counted_calls=sum(1 for line in lines if line.counted and line.kind == "hotline"),
        counted_callbacks=sum(1 for line in lines if line.counted and line.kind == "callback"),
        base_points=rules.base_points, piece_points=round(sum(line.points for line in lines), 2),
        composite_points=round(sum(parts.values()), 2), composite=composite, composite_parts=parts, rules=rules,
    )


__all__ = ["CompositeInputs", "Statement", "StatementLine", "statement"]
