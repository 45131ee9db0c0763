"""Survey jobs in a real SQLite database with a controllable clock: triggers, one survey
per period, suppression, calling window, retries, settling, crash reconciliation, the flow."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cti import channel_vars as cv
from cti.db import CallRecord, create_schema, make_engine, session_factory
from ivr.agi.errors import AGIHangup
from ivr.survey import models
from ivr.survey.component import default_surveys
from ivr.survey.flow import SurveyFlow
from ivr.survey.rules import ManualClock
from ivr.survey.store import SurveyError, SurveyStore

# Tuesday 2026-09-29 10:00 in Shanghai.
START = datetime(2026, 9, 29, 2, 0, tzinfo=UTC)
RULES = {"window_start": "09:00", "window_end": "20:00", "max_attempts": 3, "period_days": 30,
         "retry_delays": {"no_answer": 600, "busy": 120, "no_input": 1800}}


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    _ = models.SurveyJob
    engine = make_engine(f"sqlite:///{tmp_path / 'survey.sqlite3'}")
    create_schema(engine)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def store(sessions: sessionmaker[Session], clock: ManualClock) -> SurveyStore:
    s = SurveyStore(sessions, clock)
    s.create_campaign("repairs", "order_closed", rules=RULES)
    return s


def order(ref: str, number: str, **extra: str) -> dict[str, str]:
    return {"order": ref, "number": number, "technician": "Zhang", "agent": "1001", **extra}


def campaign_id(store: SurveyStore) -> int:
    return int(store.campaign("repairs")["id"])


def test_one_survey_per_customer_per_period(store: SurveyStore, clock: ManualClock) -> None:
    assert store.on_order_closed("repairs", order("R1", "13800138000")).status == "queued"
    assert store.on_order_closed("repairs", order("R1", "13800138000")).status == "duplicate"
    # Another order for the same customer (written another way) within 30 days: no second survey.
    second = store.on_order_closed("repairs", order("R2", "+86 138-0013-8000"))
    assert second.status == "recently_surveyed" and second.job_id is None
    clock.advance(timedelta(days=31).total_seconds())
    assert store.on_order_closed("repairs", order("R3", "13800138000")).status == "queued"


def test_suppressed_numbers_are_never_claimed(store: SurveyStore) -> None:
    store.suppress("13900139000", "asked not to be called")
    assert store.on_order_closed("repairs", order("R1", "13900139000")).status == "suppressed"
    queued = store.on_order_closed("repairs", order("R2", "13700137000"))
    store.suppress("+8613700137000")  # added after the job was queued: checked again at dial time
    assert store.claim_next(campaign_id(store)) is None
    jobs = {j["id"]: j for j in store.jobs("repairs")}
    assert jobs[queued.job_id]["state"] == "closed" and jobs[queued.job_id]["closed_reason"] == "suppressed"
    assert all(not j["attempt_log"] for j in jobs.values())


def test_suppressed_between_claim_and_originate_closes_the_job_uncalled(store: SurveyStore) -> None:
    """The Originator refuses the call ("suppressed", nothing sent): the audit row says so."""
    queued = store.on_order_closed("repairs", order("R1", "13600136000"))
    ticket = store.claim_next(campaign_id(store))
    assert ticket is not None and ticket.job_id == queued.job_id
    store.suppress("13600136000", "complaint")
    store.originate_result(ticket.attempt_id, "suppressed", None, "", "on the do-not-call list; nothing was sent")
    job = store.jobs("repairs")[0]
    assert job["state"] == "closed" and job["closed_reason"] == "suppressed" and job["attempts"] == 0
    [attempt] = job["attempt_log"]
    assert (attempt["status"], attempt["outcome"], attempt["originate_outcome"]) == ("done", "suppressed",
                                                                                     "suppressed")
    assert store.claim_next(campaign_id(store)) is None and store.unsettled() == []


def test_outside_the_window_waits_for_the_opening(store: SurveyStore, clock: ManualClock) -> None:
    clock.set(datetime(2026, 9, 29, 13, 0, tzinfo=UTC))  # 21:00 in Shanghai
    store.on_order_closed("repairs", order("R1", "13800138000"))
    assert store.claim_next(campaign_id(store)) is None
    job = store.jobs("repairs")[0]
    assert job["next_attempt_at"] == "2026-09-30T01:00:00+00:00" and not job["attempt_log"]
    clock.set(datetime(2026, 9, 30, 1, 0, tzinfo=UTC))
    ticket = store.claim_next(campaign_id(store))
    assert ticket is not None and "window 09:00-20:00 Asia/Shanghai" in ticket.rule and "attempt 1/3" in ticket.rule


def test_attempt_row_is_written_before_the_call_and_retries_follow_the_rules(
        store: SurveyStore, clock: ManualClock) -> None:
    store.on_order_closed("repairs", order("R1", "13800138000"))
    cid = campaign_id(store)
    ticket = store.claim_next(cid)
    assert ticket is not None
    assert ticket.channel == "PJSIP/13800138000@carrier" and ticket.uniqueid.startswith(f"survey-{ticket.job_id}-1-")
    assert store.in_flight(cid) == 1 and store.unsettled()[0]["uniqueid"] == ticket.uniqueid
    assert store.claim_next(cid) is None  # the job is dialing: never claimed twice
    store.originate_result(ticket.attempt_id, "no_answer", 3, "PJSIP/carrier-0001")
    assert store.in_flight(cid) == 0
    clock.advance(599)
    assert store.claim_next(cid) is None
    clock.advance(1)
    second = store.claim_next(cid)
    assert second is not None and second.attempt_no == 2
    store.originate_result(second.attempt_id, "busy", 5, "")
    clock.advance(120)
    third = store.claim_next(cid)
    assert third is not None and third.attempt_no == 3
    store.originate_result(third.attempt_id, "no_answer", 3, "")
    clock.advance(3600)
    assert store.claim_next(cid) is None
    job = store.jobs("repairs")[0]
    assert job["state"] == "closed" and job["closed_reason"].startswith("max_attempts (3) reached")
    assert [a["outcome"] for a in job["attempt_log"]] == ["no_answer", "busy", "no_answer"]


def test_answered_call_settles_when_both_hangup_and_survey_end_are_known(store: SurveyStore) -> None:
    store.on_order_closed("repairs", order("R1", "13800138000"))
    ticket = store.claim_next(campaign_id(store))
    assert ticket is not None
    store.originate_result(ticket.attempt_id, "answered", 4, "PJSIP/carrier-0002")
    ctx = store.survey_started(ticket.attempt_id)
    assert (ctx.agent, ctx.technician) == ("1001", "Zhang")
    store.save_answer(ctx, "agent", "5", score=5, praise=True)
    store.save_answer(ctx, "overall", "1", score=1, low_score=True)
    store.hangup(ticket.uniqueid, 16)
    assert store.unsettled(), "the flow has not ended yet: not settled on the hangup alone"
    store.survey_ended(ticket.attempt_id, "completed")
    job = store.jobs("repairs")[0]
    assert job["state"] == "completed" and job["answers"] == {"agent": "5", "overall": "1"}
    assert job["follow_up"]["reason"] == "overall=1 (low score)"
    assert store.praise_totals() == {"1001": 1}
    assert [r["technician"] for r in store.results("repairs")] == ["Zhang", "Zhang"]
    assert "service_order,technician,agent" in store.results_csv("repairs").splitlines()[0]


def test_answered_without_any_input_is_retried_with_its_delay(store: SurveyStore, clock: ManualClock) -> None:
    store.on_order_closed("repairs", order("R1", "13800138000"))
    ticket = store.claim_next(campaign_id(store))
    assert ticket is not None
    store.originate_result(ticket.attempt_id, "answered", 4, "")
    store.survey_started(ticket.attempt_id)
    store.survey_ended(ticket.attempt_id, "no_input")
    store.hangup(ticket.uniqueid, 16)
    job = store.jobs("repairs")[0]
    assert job["state"] == "pending" and job["attempt_log"][0]["outcome"] == "no_input"
    assert job["next_attempt_at"] == (clock.now() + timedelta(seconds=1800)).isoformat()


def test_reconcile_after_a_crash_never_redials_blindly(store: SurveyStore, sessions: sessionmaker[Session],
                                                       clock: ManualClock) -> None:
    cid = campaign_id(store)
    for ref, number in (("R1", "13800000001"), ("R2", "13800000002"), ("R3", "13800000003"),
                        ("R4", "13800000004")):
        store.on_order_closed("repairs", order(ref, number))
    tickets = [t for t in (store.claim_next(cid) for _ in range(4)) if t is not None]
    assert len(tickets) == 4
    t_busy, t_live, t_answered, t_nothing = tickets
    # The dialer died: no OriginateResponse was recorded for any of them.
    with sessions.begin() as session:  # the tracker stored the busy call's channel
        session.add(CallRecord(linkedid=t_busy.uniqueid, started_at=clock.now(), hangup_cause=17, outcome="lost"))
    ctx = store.survey_started(t_answered.attempt_id)  # the flow ran in the service process
    store.save_answer(ctx, "agent", "4", score=4)
    assert store.reconcile(t_nothing.attempt_id, live=False, patient=True) == "wait"  # too fresh to conclude
    assert store.reconcile(t_answered.attempt_id, live=False, patient=True) == "wait"  # its flow may be writing
    assert store.reconcile(t_busy.attempt_id, live=False) == "busy"
    assert store.reconcile(t_live.attempt_id, live=True) == "live"
    assert store.reconcile(t_answered.attempt_id, live=False) == "answered"
    assert store.reconcile(t_nothing.attempt_id, live=False) == "not_dialed"
    store.hangup(t_live.uniqueid, 19)  # the live one ends later: settled from its cause
    jobs = {j["id"]: j for j in store.jobs("repairs")}
    assert jobs[t_busy.job_id]["attempt_log"][0]["outcome"] == "busy"
    assert jobs[t_live.job_id]["attempt_log"][0]["outcome"] == "no_answer"
    assert jobs[t_answered.job_id]["state"] == "closed"  # partial: its answer is kept, never called again
    assert jobs[t_answered.job_id]["answers"] == {"agent": "4"}
    assert jobs[t_nothing.job_id]["state"] == "pending" and jobs[t_nothing.job_id]["attempts"] == 0
    assert all(a["reconciled"] for j in jobs.values() for a in j["attempt_log"])
    assert store.unsettled() == []


def test_bad_csv_imports_nothing(store: SurveyStore, sessions: sessionmaker[Session]) -> None:
    with pytest.raises(SurveyError) as err:
        store.import_orders_csv("repairs", "order,number,timezone\nR1,13800138000,Asia/Shanghai\n"
                                           "R2,not-a-number,\nR3,13800138001,Mars/Base\n")
    assert "row 3, column number" in str(err.value) and "row 4, column timezone" in str(err.value)
    with sessions() as session:
        assert session.scalars(select(models.SurveyJob)).all() == []
    assert store.import_orders_csv("repairs", "order,number\nR1,13800138000\nR2,13800138001\n") == {
        "rows": 2, "queued": 2}


def test_call_ended_trigger_samples_answered_calls_only(store: SurveyStore) -> None:
    store.create_campaign("calls", "call_ended", rules={"sample_rates": {"repair": 1.0, "*": 0.0}})
    base = {"linkedid": "1.1", "caller_num": "13800138000", "outcome": "answered", "queue": "repair",
            "agent": "1002", "test_tag": None}
    assert [r.status for r in store.on_call_ended(base)] == ["queued"]
    assert [r.status for r in store.on_call_ended({**base, "linkedid": "1.2", "queue": "complaint"})] == [
        "not_sampled"]
    assert store.on_call_ended({**base, "linkedid": "1.3", "test_tag": "qa"}) == []
    assert store.on_call_ended({**base, "linkedid": "1.4", "outcome": "abandoned"}) == []
    assert store.on_call_ended({**base, "linkedid": "1.5", "origin": "survey"}) == []  # our own survey call
    assert store.on_call_ended({**base, "linkedid": "1.6", "agent": None}) == []
    assert store.jobs("calls")[0]["agent"] == "1002"


# -- the flow, on a scripted channel ----------------------------------------------------------
class ScriptedChannel:
    """Plays nothing; answers each prompt with the next scripted key ('' = silence)."""

    def __init__(self, attempt_id: int, keys: list[str]) -> None:
        self.vars = {cv.SURVEY_ATTEMPT: str(attempt_id), cv.SURVEY_SOUNDS: "/snd/survey",
                     cv.SURVEY_RECDIR: "/rec"}
        self.keys = keys
        self.played: list[str] = []
        self.commands: list[tuple[str, ...]] = []
        self.hung_up = False

    async def get_variable(self, name: str) -> str | None:
        return self.vars.get(name)

    async def stream_file(self, name: str, escape_digits: str = "") -> str | None:
        self.played.append(name.rsplit("/", 1)[1])
        if not escape_digits:
            return None
        if not self.keys:
            raise AGIHangup("script ended")
        return self.keys.pop(0) or None

    async def wait_for_digit(self, timeout_ms: int) -> str | None:
        return None

    async def hangup(self) -> None:
        self.hung_up = True

    async def command(self, *words: str, timeout: float | None = None) -> Any:
        self.commands.append(words)
        return None


async def test_flow_stores_answers_branches_and_records(store: SurveyStore) -> None:
    store.on_order_closed("repairs", order("R1", "13800138000"))
    ticket = store.claim_next(campaign_id(store))
    assert ticket is not None
    store.originate_result(ticket.attempt_id, "answered", 4, "")
    flow = SurveyFlow(default_surveys(), store)
    channel = ScriptedChannel(ticket.attempt_id, ["5", "9", "4", "1", "1"])  # 9: invalid, re-asked
    assert await flow.run(channel) == "completed"
    assert channel.played == ["intro", "agent", "technician", "invalid", "technician", "overall", "callback",
                              "comment", "thanks"]
    assert channel.hung_up and channel.commands[0][:3] == ("RECORD FILE", f"/rec/survey-job{ticket.job_id}-"
                                                                          f"attempt{ticket.attempt_id}-comment", "wav")
    store.hangup(ticket.uniqueid, 16)
    job = store.jobs("repairs")[0]
    assert job["state"] == "completed"
    assert job["answers"] == {"agent": "5", "technician": "4", "overall": "1", "callback": "1", "comment": "recorded"}
    assert job["follow_up"]["callback_requested"] is True
    assert store.praise_totals() == {"1001": 1}


async def test_flow_hangup_keeps_every_answer_already_given(store: SurveyStore) -> None:
    store.on_order_closed("repairs", order("R1", "13800138000"))
    ticket = store.claim_next(campaign_id(store))
    assert ticket is not None
    flow = SurveyFlow(default_surveys(), store)
    with pytest.raises(AGIHangup):
        await flow.run(ScriptedChannel(ticket.attempt_id, ["3"]))  # hangs up at the second question
    store.hangup(ticket.uniqueid, 16)
    job = store.jobs("repairs")[0]
    assert job["answers"] == {"agent": "3"} and job["attempt_log"][0]["outcome"] == "partial"
    assert job["state"] == "closed"


async def test_flow_silence_ends_politely_as_no_input(store: SurveyStore) -> None:
    store.on_order_closed("repairs", order("R1", "13800138000"))
    ticket = store.claim_next(campaign_id(store))
    assert ticket is not None
    store.originate_result(ticket.attempt_id, "answered", 4, "")
    channel = ScriptedChannel(ticket.attempt_id, ["", "", ""])
    assert await SurveyFlow(default_surveys(), store).run(channel) == "no_input"
    assert channel.played == ["intro", "agent", "agent", "agent", "thanks"]
