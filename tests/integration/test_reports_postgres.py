"""The report tables, the idempotent import and the reports on a real PostgreSQL server
give the same numbers as on SQLite (recorded real-call fixtures)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cti.customers.models import Customer, PhoneNumber
from cti.db import Base, CallRecord, make_engine, session_factory
from cti.reports.importer import import_cdr, import_queue_log
from cti.reports.models import CdrRecord, QueueLogRow
from cti.reports.rules import ReportRules
from cti.reports.service import ReportService
from tests.support.postgres import postgres_server

pytestmark = pytest.mark.postgres
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "reports"
TABLES = (CallRecord, Customer, PhoneNumber, QueueLogRow, CdrRecord)


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


def _service(url: str) -> ReportService:
    engine = make_engine(url)
    tables: list[Any] = [t.__table__ for t in TABLES]
    Base.metadata.create_all(engine, tables=tables)
    return ReportService(engine, session_factory(engine), ReportRules(service_level_seconds=3, short_abandon_seconds=3),
                         agents=("1001", "1002", "1003", "1004"))


def test_reports_on_postgresql_match_sqlite(pg_url: str, tmp_path: Path) -> None:
    results = {}
    for name, url in (("postgresql", pg_url), ("sqlite", f"sqlite:///{tmp_path / 'r.sqlite3'}")):
        service = _service(url)
        q = import_queue_log(service.sessions, (FIXTURES / "queue_log").read_bytes())
        c = import_cdr(service.sessions, (FIXTURES / "hotline-cdr.csv").read_bytes())
        assert (q.added, c.added) == (16, 7), name
        assert import_queue_log(service.sessions, (FIXTURES / "queue_log").read_bytes()).added == 0
        period = service.period(None, "2026-11-29")
        results[name] = {r: service.report(r, period) for r in ("summary", "queues", "agents", "volume")}
        results[name]["statement"] = service.statement("1001", "2026-11")
        service.engine.dispose()
    for report in results["sqlite"]:
        assert {k: v for k, v in results["postgresql"][report].items() if k != "notes"} == {
            k: v for k, v in results["sqlite"][report].items() if k != "notes"}, report
    nobody = next(q for q in results["postgresql"]["queues"]["queues"] if q["queue"] == "nobody")
    assert (nobody["entered"], nobody["short_abandons"], nobody["abandoned"], nobody["timeouts"]) == (3, 1, 1, 1)
