"""Composition of the reports: settings + hotline definition -> cti.reports.ReportService."""

from __future__ import annotations

import argparse
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from cti.reports.models import CdrRecord, QueueLogRow
from cti.reports.service import ReportService, load_rules
from dialplans.definition import HotlineDefinition, InvalidDefinition, load_definition
from hotline.settings import Settings

# The raw report tables must be on the shared metadata before create_schema runs.
REPORT_TABLES = (QueueLogRow, CdrRecord)


def report_service(settings: Settings, engine: Engine, sessions: sessionmaker[Session],
                   defn: HotlineDefinition | None = None, log_dir: Path | None = None) -> ReportService:
    """Agents and per-queue wrap-up come from the definition; rules from settings.report_rules."""
    if defn is None:
        try:
            defn = load_definition(settings.definition)
        except (InvalidDefinition, OSError):
            defn = None
    wrapup = {qid: float(q.wrapup) for qid, q in defn.queues.items()} if defn else {}
    rules, piece = load_rules(Path(settings.report_rules) if settings.report_rules else None, wrapup)
    where = log_dir or (Path(settings.asterisk_log_dir) if settings.asterisk_log_dir else None)
    return ReportService(engine, sessions, rules, piece, tuple(sorted(defn.agents)) if defn else (),
                         settings.default_region, where)


def cli_report_service(args: argparse.Namespace, settings: Settings, sandbox_log_dir: Path | None) -> ReportService:
    """For `hotline report ...`: the service database, `--rules` over settings."""
    from cti.db import create_schema, make_engine, session_factory

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    create_schema(engine)
    service = report_service(settings, engine, session_factory(engine), log_dir=sandbox_log_dir)
    if getattr(args, "rules", None):
        wrapup = dict(service.rules.wrapup_seconds)
        service.rules, service.piece_rules = load_rules(args.rules, wrapup)
    return service


__all__ = ["REPORT_TABLES", "cli_report_service", "report_service"]
