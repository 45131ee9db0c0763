"""The rules every report number depends on, as plain data.

Changing a rule and recomputing gives new numbers for any past period: the rules
are applied to the raw imported rows at report time, never baked into storage.
`from_mapping` reads them from a YAML/JSON mapping (unknown keys are errors, so a
typo cannot silently fall back to a default).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any


class RulesError(ValueError):
    """A rule value is missing, unknown or out of range; the message names it."""


@dataclass(frozen=True, slots=True)
class ReportRules:
    """Thresholds for the queue and agent metrics (see README "Reports")."""

    #: Service level: a call counts as "answered in time" when its queue wait <= this.
    service_level_seconds: float = 20.0
    #: Abandons with a queue wait below this are "short" and excluded from offered calls.
    short_abandon_seconds: float = 5.0
    #: Width of the offered/answered intervals.
    interval_minutes: int = 30
    #: Local time zone for intervals, hour of day and months.
    timezone: str = "Asia/Shanghai"
    #: After-call work per queue added to AHT (the queue's wrapuptime in the definition).
    wrapup_seconds: Mapping[str, float] = field(default_factory=dict)

    def wrapup(self, queue: str) -> float:
        return float(self.wrapup_seconds.get(queue, 0.0))


@dataclass(frozen=True, slots=True)
class PieceRateRules:
    """累计积分 = 基准积分 + 计件积分 + 综合积分, and what counts as a piece."""

    #: A handled call counts only with at least this much talk time.
    min_talk_seconds: float = 30.0
    #: 基准积分: monthly base points of every agent with a statement.
    base_points: float = 100.0
    #: 计件积分 per counted hotline call and per completed callback.
    points_per_call: float = 1.0
    points_per_callback: float = 1.0
    #: 综合积分 = survey_weight * mean satisfaction + praise_points * praises + qa_weight * QA score.
    survey_weight: float = 10.0
    praise_points: float = 5.0
    qa_weight: float = 0.2


def _coerce(cls: Any, base: Any, values: Mapping[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise RulesError(f"{where}: unknown rule(s) {', '.join(unknown)}")
    typed: dict[str, Any] = {}
    for name, value in values.items():
        default = getattr(base, name)
        if isinstance(default, Mapping):
            if not isinstance(value, Mapping):
                raise RulesError(f"{where}.{name}: expected a mapping")
            try:
                typed[name] = {str(k): float(v) for k, v in value.items()}
            except (TypeError, ValueError):
                raise RulesError(f"{where}.{name}: values must be numbers") from None
            continue
        try:
            typed[name] = type(default)(value)
        except (TypeError, ValueError):
            raise RulesError(f"{where}.{name}: {value!r} is not a {type(default).__name__}") from None
        if isinstance(typed[name], int | float) and typed[name] < 0:
            raise RulesError(f"{where}.{name}: must not be negative")
    return replace(base, **typed)


def from_mapping(raw: Mapping[str, Any] | None, *, wrapup: Mapping[str, float] | None = None
                 ) -> tuple[ReportRules, PieceRateRules]:
    """{"reports": {...}, "piece_rate": {...}} -> rules; `wrapup` seeds per-queue wrap-up times."""
    raw = raw or {}
    unknown = sorted(set(raw) - {"reports", "piece_rate"})
    if unknown:
        raise RulesError(f"unknown rule section(s) {', '.join(unknown)}")
    base = ReportRules(wrapup_seconds=dict(wrapup or {}))
    report = _coerce(ReportRules, base, raw.get("reports") or {}, "reports")
    if report.interval_minutes <= 0 or 1440 % report.interval_minutes:
        raise RulesError("reports.interval_minutes: must divide a day (e.g. 15, 30, 60)")
    piece = _coerce(PieceRateRules, PieceRateRules(), raw.get("piece_rate") or {}, "piece_rate")
    return report, piece


__all__ = ["PieceRateRules", "ReportRules", "RulesError", "from_mapping"]
