"""The reports as JSON-ready dicts and CSV tables, from a period's facts and the rules.

`REPORTS` maps each report name (CLI subcommand, REST path) to a function
``(data, rules) -> dict``; `table_of` picks the rows a CSV export writes.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from cti.reports import metrics
from cti.reports.dataset import ReportData
from cti.reports.piecerate import CompositeInputs, Statement, statement
from cti.reports.rules import PieceRateRules, ReportRules


def _period(data: ReportData) -> dict[str, Any]:
    return {"label": data.period.label, "start": data.period.start, "end": data.period.end}


def _rules(rules: ReportRules) -> dict[str, Any]:
    return {**asdict(rules), "wrapup_seconds": dict(rules.wrapup_seconds)}


def summary(data: ReportData, rules: ReportRules) -> dict[str, Any]:
    queues = metrics.per_queue(data.attempts, rules)
    return {
        "report": "summary", "period": _period(data), "rules": _rules(rules),
        "hotline": metrics.hotline_summary(data.hotline_calls),
        "queues_total": queues[-1].to_dict(),
        "satisfaction": None if data.surveys is None else metrics.satisfaction(data.surveys),
        "praise": None if data.praise is None else metrics.praise_counts(data.praise),
        "test_calls": None if data.test_runs is None else metrics.test_call_pass_rates(data.test_runs),
        "notes": data.notes,
    }


def queues(data: ReportData, rules: ReportRules) -> dict[str, Any]:
    return {"report": "queues", "period": _period(data), "rules": _rules(rules),
            "queues": [q.to_dict() for q in metrics.per_queue(data.attempts, rules)],
            "intervals": metrics.intervals(data.attempts, rules), "notes": data.notes}


def agents(data: ReportData, rules: ReportRules) -> dict[str, Any]:
    return {"report": "agents", "period": _period(data), "rules": _rules(rules),
            "agents": [a.to_dict() for a in metrics.per_agent(data.attempts, rules)],
            "satisfaction": None if data.surveys is None else metrics.satisfaction(data.surveys),
            "praise": None if data.praise is None else metrics.praise_counts(data.praise),
            "qa_scores": None if data.qa_reviews is None else qa_by_agent(data),
            "notes": data.notes}


def volume(data: ReportData, rules: ReportRules) -> dict[str, Any]:
    return {"report": "volume", "period": _period(data), "timezone": rules.timezone,
            **metrics.volume(data.hotline_calls, data.regions, rules), "notes": data.notes}


REPORTS: Mapping[str, Callable[[ReportData, ReportRules], dict[str, Any]]] = {
    "summary": summary, "queues": queues, "agents": agents, "volume": volume,
}


def agent_statement(data: ReportData, agent: str, rules: PieceRateRules,
                    qa_scores: Mapping[str, float] | None = None) -> Statement:
    """The month's statement for one agent, composite inputs from the period's surveys and praise."""
    mine = [r.score for r in (data.surveys or []) if r.agent == agent]
    if qa_scores is None:
        qa_scores = qa_by_agent(data)
    composite = CompositeInputs(
        survey_mean_score=round(sum(mine) / len(mine), 4) if mine else None, survey_responses=len(mine),
        praise=sum(1 for a in (data.praise or []) if a == agent), qa_score=qa_scores.get(agent))
    return statement(agent, data.period.label, data.attempts, data.callbacks, composite, rules)


def qa_by_agent(data: ReportData) -> dict[str, float]:
    """Mean QA review score (percent) per agent: each review counts for the agent who took that call."""
    agent_of = {a.callid: a.agent for a in data.attempts if a.agent and a.outcome == "answered"}
    scores: dict[str, list[float]] = {}
    for linkedid, score in data.qa_reviews or []:
        agent = agent_of.get(linkedid)
        if agent:
            scores.setdefault(agent, []).append(score)
    return {agent: round(sum(v) / len(v), 2) for agent, v in scores.items()}


def table_of(report: Mapping[str, Any]) -> tuple[list[str], list[Mapping[str, Any]]]:
    """The rows a CSV export of `report` contains (its main table) and their columns."""
    name = report.get("report")
    rows: Sequence[Mapping[str, Any]]
    if name == "queues":
        rows = report["queues"]
    elif name == "agents":
        rows = report["agents"]
    elif name == "volume":
        rows = report["by_region_hour"]
    elif name == "statement":
        rows = report["lines"]
    else:
        total = report["queues_total"]
        rows = [{"period": report["period"]["label"], **report["hotline"],
                 **{f"queue_{k}": v for k, v in total.items() if k != "queue"}}]
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    return columns, list(rows)


def to_csv(report: Mapping[str, Any]) -> str:
    """CSV of the report's main table (UTF-8 text; Excel users: open as UTF-8)."""
    columns, rows = table_of(report)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()


def statement_dict(st: Statement) -> dict[str, Any]:
    return {"report": "statement", **st.to_dict()}


__all__ = ["REPORTS", "agent_statement", "agents", "queues", "statement_dict", "summary", "table_of", "to_csv",
           "volume"]
