"""Read a period's raw rows from the database and turn them into report facts.

The only I/O of the reports. Survey, praise and test-call tables belong to other
packages that may not exist on a site (or not yet): they are read by reflection,
by table and column name, and a missing table is reported as "no data" in
`ReportData.notes` instead of failing the report.
"""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, MetaData, Table, func, inspect, select
from sqlalchemy.orm import Session, sessionmaker

from cti.customers.models import Customer, PhoneNumber
from cti.customers.phone import InvalidPhoneNumber, normalize
from cti.db import CallRecord
from cti.reports.facts import Callback, HotlineCall, QueueAttempt, TrackedCall, callbacks, hotline_calls, queue_attempts
from cti.reports.metrics import SurveyResult, TestCallRun
from cti.reports.models import CdrRecord, QueueLogRow
from cti.reports.sources import CDR_COLUMNS, CdrRow, QueueLogEntry

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
#: Tables other features own; read here only when they exist.
SURVEY_JOBS, SURVEY_ANSWERS, SURVEY_PRAISE = "survey_jobs", "survey_answers", "survey_agent_praise"
TEST_CALL_TABLES = ("testcall_results", "test_call_runs")
#: QA reviews of how an agent handled a (test) call: per-criterion scores 0..QA_CRITERION_MAX
#: (ivr.testcall.store.MAX_SCORE; a unit test keeps them equal).
QA_REVIEWS = "testcall_reviews"
QA_CRITERION_MAX = 5
#: Calls may outlast midnight: queue events this long after the period still belong to it.
SPILL_SECONDS = 6 * 3600
_CHUNK = 500


class PeriodError(ValueError):
    """A month or date range that cannot be read; the message says what is expected."""


@dataclass(frozen=True, slots=True)
class Period:
    start: float
    end: float
    label: str


def month_period(month: str, timezone: str) -> Period:
    """'2026-11' -> [first day 00:00, next month 00:00) in the report time zone."""
    m = _MONTH.match(month or "")
    if not m:
        raise PeriodError(f"month must be YYYY-MM, got {month!r}")
    year, mon = int(m.group(1)), int(m.group(2))
    first = date(year, mon, 1)
    last = date(year, mon, calendar.monthrange(year, mon)[1])
    return date_period(first, last, timezone, label=month)


def date_period(first: date, last: date, timezone: str, label: str | None = None) -> Period:
    """Whole local days first..last (inclusive)."""
    if last < first:
        raise PeriodError(f"the period ends ({last}) before it starts ({first})")
    zone = ZoneInfo(timezone)
    start = datetime.combine(first, datetime.min.time(), zone)
    end = datetime.combine(last + timedelta(days=1), datetime.min.time(), zone)
    return Period(start.timestamp(), end.timestamp(), label or f"{first.isoformat()}..{last.isoformat()}")


def parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise PeriodError(f"dates are YYYY-MM-DD, got {text!r}") from None


@dataclass
class ReportData:
    """Everything a report needs for one period, as facts."""

    period: Period
    attempts: list[QueueAttempt]
    hotline_calls: list[HotlineCall]
    callbacks: list[Callback]
    regions: dict[str, str] = field(default_factory=dict)
    surveys: list[SurveyResult] | None = None
    praise: list[str] | None = None
    test_runs: list[TestCallRun] | None = None
    #: (linkedid reviewed, score in percent) of QA reviews in the period.
    qa_reviews: list[tuple[str, float]] | None = None
    notes: list[str] = field(default_factory=list)


_QUEUE_LOG_COLUMNS = (QueueLogRow.time, QueueLogRow.callid, QueueLogRow.queue, QueueLogRow.agent, QueueLogRow.event,
                      QueueLogRow.data)
_CDR_COLUMNS = tuple(getattr(CdrRecord, name) for name in CDR_COLUMNS)


def _tracked(session: Session, linkedids: Iterable[str]) -> dict[str, TrackedCall]:
    ids = sorted(set(linkedids))
    out: dict[str, TrackedCall] = {}
    for i in range(0, len(ids), _CHUNK):
        rows = session.execute(select(CallRecord.linkedid, CallRecord.caller_num, CallRecord.is_test_call,
                                      CallRecord.outcome).where(CallRecord.linkedid.in_(ids[i:i + _CHUNK])))
        for linkedid, caller, is_test, outcome in rows:
            out[linkedid] = TrackedCall(linkedid, caller or "", bool(is_test), outcome)
    return out


def caller_regions(session: Session, numbers: Iterable[str], default_region: str = "CN") -> dict[str, str]:
    """Caller number as presented -> the customer's region ('(several)' if owners disagree)."""
    e164_of: dict[str, str] = {}
    for raw in set(numbers):
        try:
            e164_of[raw] = normalize(raw, default_region)
        except InvalidPhoneNumber:
            continue
    wanted = sorted(set(e164_of.values()))
    regions: dict[str, set[str]] = {}
    for i in range(0, len(wanted), _CHUNK):
        rows = session.execute(select(PhoneNumber.e164, Customer.region).join(Customer)
                               .where(PhoneNumber.e164.in_(wanted[i:i + _CHUNK])))
        for e164, region in rows:
            if region:
                regions.setdefault(e164, set()).add(region)
    out = {}
    for raw, e164 in e164_of.items():
        found = regions.get(e164)
        if found:
            out[raw] = next(iter(found)) if len(found) == 1 else "(several)"
    return out


def _reflect(engine: Engine, name: str, columns: Sequence[str]) -> Table | None:
    if not inspect(engine).has_table(name):
        return None
    table = Table(name, MetaData(), autoload_with=engine)
    return table if all(c in table.c for c in columns) else None


def _ts(value: Any) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value)
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    return float(value or 0.0)


def _in(value: Any, period: Period) -> bool:
    return period.start <= _ts(value) < period.end


def load_surveys(engine: Engine, period: Period) -> tuple[list[SurveyResult] | None, list[str] | None, list[str]]:
    """Survey results (mean scored answer per job) and praise rows in the period, if those tables exist."""
    notes: list[str] = []
    jobs = _reflect(engine, SURVEY_JOBS, ("id", "agent", "technician", "queue"))
    answers = _reflect(engine, SURVEY_ANSWERS, ("job_id", "score", "at"))
    results: list[SurveyResult] | None = None
    if jobs is None or answers is None:
        notes.append("surveys: no survey tables in this database (no data yet)")
    else:
        stmt = (select(jobs.c.id, jobs.c.agent, jobs.c.technician, jobs.c.queue,
                       func.avg(answers.c.score), func.max(answers.c.at))
                .join(answers, answers.c.job_id == jobs.c.id).where(answers.c.score.is_not(None))
                .group_by(jobs.c.id, jobs.c.agent, jobs.c.technician, jobs.c.queue))
        with engine.connect() as conn:
            results = [SurveyResult(int(job_id), round(float(score), 4), agent or "", technician or "", queue or "",
                                    _ts(at)) for job_id, agent, technician, queue, score, at in conn.execute(stmt)
                       if _in(at, period)]
    praise_table = _reflect(engine, SURVEY_PRAISE, ("agent", "at"))
    praise: list[str] | None = None
    if praise_table is None:
        notes.append("praise: no praise table in this database (no data yet)")
    else:
        with engine.connect() as conn:
            praise = [agent for agent, at in conn.execute(select(praise_table.c.agent, praise_table.c.at))
                      if _in(at, period)]
    return results, praise, notes


def load_test_runs(engine: Engine, period: Period) -> tuple[list[TestCallRun] | None, list[str]]:
    """Finished test calls (scenario, passed) from the test-call feature's table, if present."""
    for name in TEST_CALL_TABLES:
        if not inspect(engine).has_table(name):
            continue
        table = Table(name, MetaData(), autoload_with=engine)
        scenario = next((table.c[c] for c in ("scenario", "scenario_name", "name") if c in table.c), None)
        passed = next((table.c[c] for c in ("passed", "ok", "success") if c in table.c), None)
        status = table.c["status"] if "status" in table.c else None
        when = next((table.c[c] for c in ("finished_at", "ended_at", "started_at", "at", "created_at")
                     if c in table.c), None)
        if scenario is None or when is None or (passed is None and status is None):
            return None, [f"test calls: table {name} has no scenario/result/time columns this report knows"]
        result_col = passed if passed is not None else status
        assert result_col is not None
        runs = []
        with engine.connect() as conn:
            for scen, at, result in conn.execute(select(scenario, when, result_col)):
                if at is None or not _in(at, period):
                    continue
                if passed is None:
                    if result not in ("passed", "failed", "error"):
                        continue  # still running
                    ok = result == "passed"
                else:
                    if result is None:
                        continue
                    ok = bool(result)
                runs.append(TestCallRun(str(scen), ok, _ts(at)))
        return runs, []
    return None, ["test calls: no test-call results table in this database (no data yet)"]


def load_qa_reviews(engine: Engine, period: Period) -> tuple[list[tuple[str, float]] | None, list[str]]:
    """QA review scores (percent of the form's maximum) by reviewed linkedid, if the table exists."""
    table = _reflect(engine, QA_REVIEWS, ("linkedid", "total", "scores_json", "created_at"))
    if table is None:
        return None, ["QA scores: no QA review table in this database (no data yet)"]
    out = []
    with engine.connect() as conn:
        rows = conn.execute(select(table.c.linkedid, table.c.total, table.c.scores_json, table.c.created_at))
        for linkedid, total, scores_json, at in rows:
            try:
                criteria = len(json.loads(scores_json or "{}"))
            except ValueError:
                continue
            if linkedid and criteria and at is not None and _in(at, period):
                out.append((str(linkedid), round(100.0 * float(total) / (QA_CRITERION_MAX * criteria), 2)))
    return out, []


def load(engine: Engine, sessions: sessionmaker[Session], period: Period, *, agents: Iterable[str] = (),
         default_region: str = "CN") -> ReportData:
    """All facts for `period`: attempts entered in it, hotline calls and callbacks started in it."""
    agent_list = list(agents)
    with sessions() as session:
        # Plain column tuples, not ORM objects: a month of a busy hotline is ~10^5 rows.
        q_rows = session.execute(select(*_QUEUE_LOG_COLUMNS)
                                 .where(QueueLogRow.time >= int(period.start) - SPILL_SECONDS,
                                        QueueLogRow.time < period.end + SPILL_SECONDS)
                                 .order_by(QueueLogRow.time, QueueLogRow.id))
        entries = [QueueLogEntry(t, callid, queue, agent, event, tuple(data.split("|")) if data else ())
                   for t, callid, queue, agent, event, data in q_rows]
        c_rows = session.execute(select(*_CDR_COLUMNS).where(CdrRecord.start >= period.start,
                                                             CdrRecord.start < period.end)
                                 .order_by(CdrRecord.start, CdrRecord.id))
        cdrs = [CdrRow(*row) for row in c_rows]
        tracked = _tracked(session, [e.callid for e in entries] + [c.linkedid for c in cdrs])
        if not agent_list:  # without the definition's list: every member name the queues logged
            agent_list = sorted({e.agent for e in entries if e.agent and e.agent != "NONE"})
        attempts = [a for a in queue_attempts(entries, tracked, agent_list)
                    if period.start <= a.entered_at < period.end]
        calls = hotline_calls(cdrs, attempts, tracked)
        backs = callbacks(cdrs, agent_list, tracked)
        regions = caller_regions(session, [c.caller_num for c in calls if c.caller_num], default_region)
    surveys, praise, notes = load_surveys(engine, period)
    runs, run_notes = load_test_runs(engine, period)
    reviews, qa_notes = load_qa_reviews(engine, period)
    if not entries and not cdrs:
        notes.insert(0, "no queue_log or CDR rows imported for this period (run `hotline report import`)")
    return ReportData(period, attempts, calls, backs, regions, surveys, praise, runs, reviews,
                      notes + run_notes + qa_notes)


__all__ = ["Period", "PeriodError", "ReportData", "caller_regions", "date_period", "load", "month_period",
           "parse_day"]
