"""`hotline report ...` and the dataset reader on the recorded real-call fixtures, plus the
survey/praise/test-call tables read by reflection ("no data yet" when they are absent)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, insert

from cti.customers.models import Customer, PhoneNumber
from cti.db import Base, CallRecord, make_engine, session_factory
from cti.reports.importer import import_cdr, import_queue_log
from cti.reports.models import CdrRecord, QueueLogRow
from cti.reports.rules import PieceRateRules, ReportRules
from cti.reports.service import ReportService
from hotline.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "reports"
DAY = "2026-11-29"  # the fixture calls were placed at 07:05 Asia/Shanghai on this day


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOTLINE_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("HOTLINE_DEFINITION", str(FIXTURES / "hotline-reports.yaml"))
    return tmp_path


def test_cli_import_reports_and_statement(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["report", "import", "--queue-log", str(FIXTURES / "queue_log"), "--cdr", str(FIXTURES / "hotline-cdr.csv")]
    assert main(args) == 0
    assert "16 added, 0 already imported, 0 rejected" in capsys.readouterr().out
    assert main(args) == 0
    assert "0 added, 16 already imported" in capsys.readouterr().out

    rules = env / "rules.yaml"
    rules.write_text("reports: {service_level_seconds: 3, short_abandon_seconds: 3}\n"
                     "piece_rate: {min_talk_seconds: 2.5}\n")
    assert main(["report", "queues", "--from", DAY, "--csv", "--rules", str(rules)]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[0].startswith("queue,entered,short_abandons,offered,answered,answered_in_service_level,abandoned")
    # nobody: 3 entered, 1 short abandon, 2 offered, 1 abandon, 1 timeout;
    # fast: wait 0 -> in SL, talk 5 s, wrap-up 3 s from the definition -> AHT 8
    nobody = next(r for r in rows if r.startswith("nobody,")).split(",")
    assert nobody[1:9] == ["3", "1", "2", "0", "0", "1", "1", "0"]
    fast = next(r for r in rows if r.startswith("fast,")).split(",")
    assert fast[10:15] == ["1.0", "0.0", "0.0", "5.0", "8.0"]

    assert main(["report", "summary", "--from", DAY, "--rules", str(rules)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["hotline"]["calls"] == 7 and summary["hotline"]["ivr_hangups"] == 1

    assert main(["report", "statement", "1001", "--month", "2026-11", "--rules", str(rules)]) == 0
    st = json.loads(capsys.readouterr().out)
    assert [(line["counted"], line["talk_seconds"]) for line in st["lines"]] == [(True, 5.0)]
    assert st["total_points"] == 101.0

    assert main(["report", "statement", "1001", "--month", "2026-13"]) == 2
    assert "month must be YYYY-MM" in capsys.readouterr().err
    assert main(["report", "volume", "--from", "2026-11-30", "--to", "2026-11-01"]) == 2


def test_cli_import_reports_bad_lines(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = env / "queue_log"
    bad.write_bytes((FIXTURES / "queue_log").read_bytes() + b"not a queue_log line\n")
    assert main(["report", "import", "--queue-log", str(bad)]) == 1
    out = capsys.readouterr()
    assert "16 added" in out.out and "line 17: fewer than 5" in out.err
    assert main(["report", "import", "--queue-log", str(env / "missing")]) == 2


def _engine_with_report_tables() -> tuple[ReportService, Any]:
    engine = make_engine("sqlite://")
    tables: list[Any] = [t.__table__ for t in (CallRecord, Customer, PhoneNumber, QueueLogRow, CdrRecord)]
    Base.metadata.create_all(engine, tables=tables)
    sessions = session_factory(engine)
    import_queue_log(sessions, (FIXTURES / "queue_log").read_bytes())
    import_cdr(sessions, (FIXTURES / "hotline-cdr.csv").read_bytes())
    service = ReportService(engine, sessions, ReportRules(service_level_seconds=3, short_abandon_seconds=3),
                            PieceRateRules(min_talk_seconds=2.5), ("1001", "1002", "1003", "1004"))
    return service, engine


def test_no_survey_or_test_call_tables_means_no_data_yet() -> None:
    service, _ = _engine_with_report_tables()
    body = service.report("summary", service.period(None, DAY))
    assert body["satisfaction"] is None and body["praise"] is None and body["test_calls"] is None
    assert any("no survey tables" in n for n in body["notes"])
    assert any("no test-call results table" in n for n in body["notes"])
    empty = service.report("queues", service.period("2026-01"))
    assert empty["queues"][-1]["entered"] == 0
    assert any("no queue_log or CDR rows" in n for n in empty["notes"])


def test_survey_praise_test_calls_and_tracked_test_flag() -> None:
    service, engine = _engine_with_report_tables()
    at = datetime(2026, 11, 29, 0, 0, tzinfo=UTC)
    meta = MetaData()
    jobs = Table("survey_jobs", meta, Column("id", Integer, primary_key=True), Column("agent", String),
                 Column("technician", String), Column("queue", String))
    answers = Table("survey_answers", meta, Column("id", Integer, primary_key=True), Column("job_id", Integer),
                    Column("score", Integer), Column("at", DateTime))
    praise = Table("survey_agent_praise", meta, Column("id", Integer, primary_key=True), Column("agent", String),
                   Column("at", DateTime))
    runs = Table("testcall_results", meta, Column("run_id", String, primary_key=True), Column("scenario", String),
                 Column("status", String), Column("started_at", DateTime), Column("ended_at", DateTime))
    reviews = Table("testcall_reviews", meta, Column("id", Integer, primary_key=True), Column("linkedid", String),
                    Column("total", Integer), Column("scores_json", String), Column("created_at", DateTime))
    meta.create_all(engine)
    naive = at.replace(tzinfo=None)
    with engine.begin() as conn:
        conn.execute(insert(jobs), [{"id": 1, "agent": "1001", "technician": "王师傅", "queue": "fast"},
                                    {"id": 2, "agent": "1001", "technician": "", "queue": "fast"}])
        # job 1: scores 5 and 3 -> 4.0; job 2: 2 -> 2.0; 1001 mean 3.0
        conn.execute(insert(answers), [{"job_id": 1, "score": 5, "at": naive}, {"job_id": 1, "score": 3, "at": naive},
                                       {"job_id": 2, "score": 2, "at": naive}, {"job_id": 2, "score": None,
                                                                                 "at": naive}])
        conn.execute(insert(praise), [{"agent": "1001", "at": naive}, {"agent": "1001", "at": naive}])
        conn.execute(insert(runs), [
            {"run_id": "r1", "scenario": "menu", "status": "passed", "started_at": naive, "ended_at": naive},
            {"run_id": "r2", "scenario": "menu", "status": "failed", "started_at": naive, "ended_at": naive},
            {"run_id": "r3", "scenario": "agent", "status": "error", "started_at": naive, "ended_at": naive},
            {"run_id": "r4", "scenario": "menu", "status": "running", "started_at": naive, "ended_at": None}])
        # QA review of the fast call (agent 1001): 6 criteria, 24 of 30 points -> 80 %
        scores = json.dumps(dict.fromkeys(("greeting", "identification", "understanding", "solution", "courtesy",
                                           "closing"), 4))
        conn.execute(insert(reviews), [{"linkedid": "1795907138.5", "total": 24, "scores_json": scores,
                                        "created_at": naive}])
    with service.sessions.begin() as s:
        s.add(CallRecord(linkedid="1795907138.4", started_at=at, is_test_call=True, test_tag="qa"))

    body = service.report("agents", service.period(None, DAY))
    agents = {a["agent"]: a for a in body["agents"]}
    assert agents["1004"]["handled"] == 0 and agents["1004"]["test_calls_excluded"] == 1
    assert body["satisfaction"]["agent"] == [{"agent": "1001", "responses": 2, "mean_score": 3.0}]
    assert body["satisfaction"]["technician"] == [{"technician": "王师傅", "responses": 1, "mean_score": 4.0}]
    assert body["praise"] == [{"agent": "1001", "praise": 2}]
    summary = service.report("summary", service.period(None, DAY))
    assert summary["test_calls"] == [{"scenario": "agent", "runs": 1, "passed": 0, "pass_rate": 0.0},
                                     {"scenario": "menu", "runs": 2, "passed": 1, "pass_rate": 0.5},
                                     {"scenario": "(all)", "runs": 3, "passed": 1, "pass_rate": round(1 / 3, 4)}]
    assert body["qa_scores"] == {"1001": 80.0}
    assert summary["hotline"]["test_calls"] == 1 and summary["hotline"]["calls"] == 6

    st = service.statement("1001", "2026-11")
    # base 100 + 1 counted call + composite 10 x 3.0 + 5 x 2 praise + 0.2 x 80 QA = 157
    assert st["composite"]["survey_mean_score"] == 3.0 and st["composite"]["praise"] == 2
    assert st["composite"]["qa_score"] == 80.0
    assert st["composite"]["parts"] == {"survey": 30.0, "praise": 10.0, "qa": 16.0}
    assert st["total_points"] == 157.0
    st_tester = service.statement("1004", "2026-11")
    assert [line["reason"] for line in st_tester["lines"]] == ["test call"]
    assert st_tester["composite"]["qa_score"] is None


def test_qa_form_maximum_matches_the_test_call_reviews() -> None:
    from cti.reports.dataset import QA_CRITERION_MAX
    from ivr.testcall.store import MAX_SCORE

    assert QA_CRITERION_MAX == MAX_SCORE


def test_reads_the_survey_and_test_call_features_own_tables() -> None:
    """The reflection reader against the real models of ivr.survey and ivr.testcall (column drift shows here)."""
    from ivr.survey.models import AgentPraise, SurveyAnswer, SurveyAttempt, SurveyCampaign, SurveyJob
    from ivr.testcall.store import TestCallResult, TestCallReview

    service, engine = _engine_with_report_tables()
    tables: list[Any] = [t.__table__ for t in (SurveyCampaign, SurveyJob, SurveyAttempt, SurveyAnswer, AgentPraise,
                                               TestCallResult, TestCallReview)]
    Base.metadata.create_all(engine, tables=tables)
    at = datetime(2026, 11, 29, 1, 0, tzinfo=UTC)
    with service.sessions.begin() as s:
        s.add(SurveyCampaign(id=1, name="after-call"))
        s.flush()
        s.add(SurveyJob(id=1, campaign_id=1, number="+8613811110001", source_ref="call:1795907138.5", agent="1001",
                        technician="王师傅", queue="fast", next_attempt_at=at, created_at=at))
        s.flush()
        s.add(SurveyAttempt(id=1, job_id=1, attempt_no=1, uniqueid="u-1", started_at=at))
        s.flush()
        s.add_all([SurveyAnswer(job_id=1, attempt_id=1, question="q1", value="5", score=5, at=at),
                   SurveyAnswer(job_id=1, attempt_id=1, question="q2", value="4", score=4, at=at),
                   AgentPraise(agent="1001", job_id=1, question="praise", at=at),
                   TestCallResult(run_id="run-1", scenario="menu", started_at=at, ended_at=at, status="passed",
                                  linkedid="1795907138.5")])
        s.flush()
        s.add(TestCallReview(run_id="run-1", linkedid="1795907138.5", reviewer="qa",
                             scores_json=json.dumps({"greeting": 5, "closing": 4}), total=9, created_at=at))
    body = service.report("agents", service.period(None, DAY))
    assert body["satisfaction"]["agent"] == [{"agent": "1001", "responses": 1, "mean_score": 4.5}]
    assert body["satisfaction"]["technician"] == [{"technician": "王师傅", "responses": 1, "mean_score": 4.5}]
    assert body["praise"] == [{"agent": "1001", "praise": 1}]
    assert body["qa_scores"] == {"1001": 90.0}  # 9 of 2 x 5
    summary = service.report("summary", service.period(None, DAY))
    assert summary["test_calls"][-1] == {"scenario": "(all)", "runs": 1, "passed": 1, "pass_rate": 1.0}
