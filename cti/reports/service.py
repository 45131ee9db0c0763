"""One object the REST API and the CLI share: rules, database, Asterisk's log directory.

Blocking (SQLAlchemy): the web layer calls it in a worker thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from cti.reports import views
from cti.reports.dataset import Period, ReportData, date_period, load, month_period, parse_day
from cti.reports.importer import ImportResult, LogFollower, import_log_dir
from cti.reports.rules import PieceRateRules, ReportRules, RulesError, from_mapping


def load_rules(path: Path | None, wrapup: Mapping[str, float] | None = None) -> tuple[ReportRules, PieceRateRules]:
    """Rules from a YAML file ({reports: {...}, piece_rate: {...}}); defaults when `path` is None."""
    raw: Any = None
    if path is not None:
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise RulesError(f"cannot read report rules {path}: {exc}") from None
        if raw is not None and not isinstance(raw, dict):
            raise RulesError(f"report rules {path} must be a mapping")
    return from_mapping(raw, wrapup=wrapup)


@dataclass
class ReportService:
    engine: Engine
    sessions: sessionmaker[Session]
    rules: ReportRules = field(default_factory=ReportRules)
    piece_rules: PieceRateRules = field(default_factory=PieceRateRules)
    agents: tuple[str, ...] = ()
    default_region: str = "CN"
    #: Asterisk's log directory as the service sees it (queue_log, cdr-custom/); None: import by upload only.
    log_dir: Path | None = None
    #: Before each report, import what Asterisk appended to the log directory since the last one.
    auto_import: bool = True
    _follower: LogFollower | None = field(default=None, init=False, repr=False)

    def period(self, month: str | None = None, first: str | None = None, last: str | None = None) -> Period:
        if month:
            return month_period(month, self.rules.timezone)
        if first or last:
            start = parse_day(first or last or "")
            return date_period(start, parse_day(last) if last else start, self.rules.timezone)
        raise RulesError("give a month (YYYY-MM) or a date range")

    def data(self, period: Period) -> ReportData:
        return load(self.engine, self.sessions, period, agents=self.agents, default_region=self.default_region)

    def report(self, name: str, period: Period, rules: ReportRules | None = None) -> dict[str, Any]:
        notes = self.refresh()
        body = views.REPORTS[name](self.data(period), rules or self.rules)
        body["notes"] = notes + body.get("notes", [])
        return body

    def statement(self, agent: str, month: str, piece_rules: PieceRateRules | None = None,
                  qa_scores: Mapping[str, float] | None = None) -> dict[str, Any]:
        notes = self.refresh()
        data = self.data(month_period(month, self.rules.timezone))
        st = views.agent_statement(data, agent, piece_rules or self.piece_rules, qa_scores)
        return {**views.statement_dict(st), "notes": notes + data.notes}

    def refresh(self) -> list[str]:
        """The automatic incremental import; a problem becomes a note, the report still runs."""
        if not (self.auto_import and self.log_dir):
            return []
        try:
            results = self.import_logs()
        except OSError as exc:
            return [f"import from {self.log_dir} failed: {exc}"]
        return [f"{r.source}: {len(r.rejected)} line(s) rejected on import" for r in results if r.rejected]

    def import_logs(self, log_dir: Path | None = None) -> list[ImportResult]:
        """Import the log directory: incrementally for the configured one, fully for another."""
        if log_dir is not None and log_dir != self.log_dir:
            return import_log_dir(self.sessions, log_dir)
        if self.log_dir is None:
            raise RulesError("no Asterisk log directory configured")
        if self._follower is None:
            self._follower = LogFollower(self.sessions, self.log_dir)
        return self._follower.poll()

    def known_agents(self) -> Iterable[str]:
        return self.agents


__all__ = ["ReportService", "load_rules"]
