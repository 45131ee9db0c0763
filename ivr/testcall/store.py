"""Test-call results, QA reviews and schedules, on the service's shared metadata.

A result keeps the full JSON report and the path of the recording of what the test
caller heard; a review scores the agent's handling of that call on a fixed form.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from cti.db import Base, UTCDateTime

#: The QA form: each criterion scored 0..MAX_SCORE.
CRITERIA = ("greeting", "identification", "understanding", "solution", "courtesy", "closing")
MAX_SCORE = 5


class ReviewError(ValueError):
    """A review form with unknown criteria or scores out of range (all problems listed)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class TestCallResult(Base):
    __test__ = False  # not a pytest test class, despite the name
    __tablename__ = "testcall_results"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    scenario: Mapped[str] = mapped_column(String(64), index=True)
    scenario_yaml: Mapped[str] = mapped_column(Text, default="")
    trigger: Mapped[str] = mapped_column(String(64), default="")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: running | passed | failed | error
    status: Mapped[str] = mapped_column(String(16), default="running")
    linkedid: Mapped[str | None] = mapped_column(String(64), index=True)
    heard_path: Mapped[str | None] = mapped_column(String(1024))
    result_json: Mapped[str] = mapped_column(Text, default="{}")

    def view(self) -> dict[str, Any]:
        result = json.loads(self.result_json or "{}")
        return {"run_id": self.run_id, "scenario": self.scenario, "trigger": self.trigger, "status": self.status,
                "started_at": self.started_at.timestamp(), "linkedid": self.linkedid,
                "ended_at": self.ended_at.timestamp() if self.ended_at else None,
                "passed": self.status == "passed", "failures": result.get("failures", []), "result": result}


class TestCallReview(Base):
    __test__ = False  # not a pytest test class, despite the name
    __tablename__ = "testcall_reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("testcall_results.run_id"), index=True)
    linkedid: Mapped[str | None] = mapped_column(String(64), index=True)
    reviewer: Mapped[str] = mapped_column(String(128))
    scores_json: Mapped[str] = mapped_column(Text)
    total: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "run_id": self.run_id, "linkedid": self.linkedid, "reviewer": self.reviewer,
                "scores": json.loads(self.scores_json), "total": self.total,
                "max_total": MAX_SCORE * len(json.loads(self.scores_json)), "comment": self.comment,
                "created_at": self.created_at.timestamp()}


class TestCallSchedule(Base):
    __test__ = False  # not a pytest test class, despite the name
    __tablename__ = "testcall_schedules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    scenario_yaml: Mapped[str] = mapped_column(Text)
    interval_seconds: Mapped[int] = mapped_column(Integer)
    webhook_url: Mapped[str | None] = mapped_column(String(1024))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_run_id: Mapped[str | None] = mapped_column(String(64))
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status: Mapped[str | None] = mapped_column(String(16))

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "interval_seconds": self.interval_seconds,
                "webhook_url": self.webhook_url, "enabled": self.enabled, "created_by": self.created_by,
                "last_run_id": self.last_run_id, "last_status": self.last_status,
                "last_run_at": self.last_run_at.timestamp() if self.last_run_at else None}


def check_scores(scores: Any) -> dict[str, int]:
    """The QA form's scores, validated: known criteria, integers 0..MAX_SCORE, at least one."""
    if not isinstance(scores, dict) or not scores:
        raise ReviewError([f"scores must be an object of criterion -> 0..{MAX_SCORE} ({', '.join(CRITERIA)})"])
    problems = []
    for key, value in scores.items():
        if key not in CRITERIA:
            problems.append(f"unknown criterion {key!r} (known: {', '.join(CRITERIA)})")
        elif isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SCORE:
            problems.append(f"{key}: score must be an integer 0..{MAX_SCORE}, not {value!r}")
    if problems:
        raise ReviewError(problems)
    return {k: int(v) for k, v in scores.items()}


class TestCallStore:
    """Blocking SQLAlchemy access (call from a worker thread in async code)."""
    __test__ = False  # not a pytest test class, despite the name


    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def start(self, run_id: str, scenario: str, scenario_yaml: str, trigger: str) -> None:
        with self.sessions.begin() as s:
            s.add(TestCallResult(run_id=run_id, scenario=scenario, scenario_yaml=scenario_yaml, trigger=trigger,
                                 started_at=datetime.now(UTC), status="running"))

    def finish(self, run_id: str, result: dict[str, Any], status: str | None = None) -> None:
        with self.sessions.begin() as s:
            row = s.get(TestCallResult, run_id)
            if row is None:
                return
            row.status = status or ("passed" if result.get("passed") else "failed")
            row.ended_at = datetime.now(UTC)
            row.linkedid = result.get("linkedid")
            row.heard_path = result.get("heard_audio")
            row.result_json = json.dumps(result, ensure_ascii=False)

    def get(self, run_id: str) -> dict[str, Any] | None:
        with self.sessions() as s:
            row = s.get(TestCallResult, run_id)
            return None if row is None else {**row.view(), "heard_path": row.heard_path}

    def results(self, limit: int = 100, scenario: str | None = None) -> list[dict[str, Any]]:
        with self.sessions() as s:
            q = select(TestCallResult).order_by(TestCallResult.started_at.desc()).limit(limit)
            if scenario:
                q = q.where(TestCallResult.scenario == scenario)
            return [{k: v for k, v in r.view().items() if k != "result"} for r in s.scalars(q)]

    def add_review(self, run_id: str, reviewer: str, scores: Any, comment: str) -> dict[str, Any] | None:
        checked = check_scores(scores)
        with self.sessions.begin() as s:
            result = s.get(TestCallResult, run_id)
            if result is None:
                return None
            review = TestCallReview(run_id=run_id, linkedid=result.linkedid, reviewer=reviewer,
                                    scores_json=json.dumps(checked), total=sum(checked.values()),
                                    comment=comment[:4000], created_at=datetime.now(UTC))
            s.add(review)
            s.flush()
            return review.view()

    def reviews(self, run_id: str) -> list[dict[str, Any]]:
        with self.sessions() as s:
            rows = s.scalars(select(TestCallReview).where(TestCallReview.run_id == run_id)
                             .order_by(TestCallReview.id))
            return [r.view() for r in rows]

    def add_schedule(self, name: str, scenario_yaml: str, interval: int, webhook: str | None,
                     created_by: str) -> dict[str, Any]:
        with self.sessions.begin() as s:
            row = TestCallSchedule(name=name, scenario_yaml=scenario_yaml, interval_seconds=interval,
                                   webhook_url=webhook, enabled=True, created_by=created_by,
                                   created_at=datetime.now(UTC))
            s.add(row)
            s.flush()
            return row.view()

    def schedules(self, enabled_only: bool = False) -> list[TestCallSchedule]:
        with self.sessions() as s:
            q = select(TestCallSchedule).order_by(TestCallSchedule.id)
            if enabled_only:
                q = q.where(TestCallSchedule.enabled.is_(True))
            return list(s.scalars(q))

    def disable_schedule(self, schedule_id: int) -> bool:
        with self.sessions.begin() as s:
            row = s.get(TestCallSchedule, schedule_id)
            if row is None:
                return False
            row.enabled = False
            return True

    def schedule_enabled(self, schedule_id: int) -> bool:
        with self.sessions() as s:
            row = s.get(TestCallSchedule, schedule_id)
            return row is not None and row.enabled

    def schedule_ran(self, schedule_id: int, run_id: str, status: str) -> None:
        with self.sessions.begin() as s:
            row = s.get(TestCallSchedule, schedule_id)
            if row is not None:
                row.last_run_id, row.last_status, row.last_run_at = run_id, status, datetime.now(UTC)
