"""Survey state in the database: campaigns, jobs, attempts, answers, follow-ups, praise.

Blocking (SQLAlchemy); async callers run it in a worker thread. Each method is one
transaction, so a crash between two calls leaves a consistent picture:

* `claim_next` writes the attempt row (with the Uniqueid the channel will get) and
  moves the job to "dialing" *before* any Originate is sent;
* `save_answer` commits each answer (plus its follow-up / praise row) on its own;
* an attempt is settled (outcome, retry or close) once both the Originate result /
  hangup and the end of the survey are known, whichever comes last.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from cti.customers.phone import InvalidPhoneNumber, normalize
from cti.db import CallRecord
from cti.suppression import InvalidSuppressionNumber, SuppressedNumber, SuppressionList
from ivr.survey.models import (
    AgentPraise,
    SurveyAnswer,
    SurveyAttempt,
    SurveyCampaign,
    SurveyFollowUp,
    SurveyJob,
)
from ivr.survey.rules import CampaignRules, RulesError, calling_window, retry_at, sampled, zone

TRIGGERS = ("order_closed", "call_ended", "manual")


class Clock(Protocol):
    def now(self) -> datetime: ...


class SurveyError(ValueError):
    """Bad input for a survey operation; the message says what (nothing was written)."""


@dataclass(frozen=True, slots=True)
class DialTicket:
    """A claimed job: what the dialer needs to place exactly one call."""

    job_id: int
    attempt_id: int
    attempt_no: int
    campaign_id: int
    number: str
    uniqueid: str
    rule: str
    channel: str


@dataclass(frozen=True, slots=True)
class SurveyContext:
    """What the survey flow needs about the call it runs on."""

    job_id: int
    attempt_id: int
    survey: str
    agent: str
    technician: str
    number: str


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    job_id: int | None
    status: str  # queued | duplicate | recently_surveyed | suppressed | not_sampled | invalid
    reason: str = ""


def national_digits(e164: str) -> str:
    """+8613800138000 -> 13800138000 (what a Chinese trunk expects); other zones keep 00 + E.164."""
    return e164[3:] if e164.startswith("+86") else "00" + e164.lstrip("+")


class SurveyStore:
    def __init__(self, sessions: sessionmaker[Session], clock: Clock, default_region: str = "CN") -> None:
        self.sessions = sessions
        self.clock = clock
        self.default_region = default_region
        #: The do-not-call list every outbound call obeys (the Originator checks it too).
        self.suppression = SuppressionList(sessions, default_region)

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self.sessions.begin() as session:
            yield session

    # -- campaigns --------------------------------------------------------------------
    def create_campaign(self, name: str, trigger: str = "manual", survey: str = "default",
                        rules: dict[str, Any] | None = None) -> dict[str, Any]:
        if not name or len(name) > 64:
            raise SurveyError("campaign name must be 1..64 characters")
        if trigger not in TRIGGERS:
            raise SurveyError(f"trigger must be one of {', '.join(TRIGGERS)}")
        try:
            parsed = CampaignRules.from_dict(rules or {})
        except RulesError as exc:
            raise SurveyError(f"rules: {exc}") from None
        try:
            with self._tx() as session:
                row = SurveyCampaign(name=name, trigger=trigger, survey=survey, rules_json=parsed.to_json(),
                                     active=True, created_at=self.clock.now())
                session.add(row)
                session.flush()
                return campaign_view(row)
        except IntegrityError:
            raise SurveyError(f"campaign {name!r} exists already") from None

    def campaigns(self, trigger: str | None = None) -> list[dict[str, Any]]:
        with self.sessions() as session:
            query = select(SurveyCampaign).order_by(SurveyCampaign.id)
            if trigger is not None:
                query = query.where(SurveyCampaign.trigger == trigger, SurveyCampaign.active.is_(True))
            return [campaign_view(c) for c in session.scalars(query)]

    def campaign(self, name: str) -> dict[str, Any]:
        with self.sessions() as session:
            row = session.scalar(select(SurveyCampaign).where(SurveyCampaign.name == name))
            if row is None:
                raise SurveyError(f"no campaign {name!r}")
            return campaign_view(row)

    def set_active(self, name: str, active: bool) -> dict[str, Any]:
        """Pause (no triggers, no dialing) or resume a campaign; jobs are kept."""
        with self._tx() as session:
            row = session.scalar(select(SurveyCampaign).where(SurveyCampaign.name == name))
            if row is None:
                raise SurveyError(f"no campaign {name!r}")
            row.active = active
            return campaign_view(row)

    def update_rules(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change some of a campaign's rules (the rest stay); the dialer applies them on its
        next pass. Invalid changes raise SurveyError and leave the campaign as it was."""
        if not isinstance(changes, dict) or not changes:
            raise SurveyError("rules: give at least one rule to change")
        with self._tx() as session:
            row = session.scalar(select(SurveyCampaign).where(SurveyCampaign.name == name))
            if row is None:
                raise SurveyError(f"no campaign {name!r}")
            try:
                parsed = CampaignRules.from_dict({**json.loads(row.rules_json or "{}"), **changes})
            except (RulesError, TypeError, ValueError, AttributeError) as exc:
                raise SurveyError(f"rules: {exc}") from None
            row.rules_json = parsed.to_json()
            return campaign_view(row)

    def rules(self, campaign_id: int) -> CampaignRules:
        with self.sessions() as session:
            row = session.get(SurveyCampaign, campaign_id)
            if row is None:
                raise SurveyError(f"no campaign {campaign_id}")
            return CampaignRules.from_json(row.rules_json)

    # -- suppression (cti.suppression: shared by every outbound call) --------------------
    def suppress(self, number: str, reason: str = "") -> str:
        try:
            return self.suppression.add(number, reason, now=self.clock.now())
        except InvalidSuppressionNumber as exc:
            raise SurveyError(str(exc)) from None

    def unsuppress(self, number: str) -> bool:
        try:
            return self.suppression.remove(number)
        except InvalidSuppressionNumber as exc:
            raise SurveyError(str(exc)) from None

    def suppressed(self) -> list[dict[str, Any]]:
        """The whole do-not-call list (number, reason, added_at), by number."""
        return self.suppression.entries()

    def is_suppressed(self, number: str) -> bool:
        try:
            return self.suppression.contains(number)
        except InvalidSuppressionNumber as exc:
            raise SurveyError(str(exc)) from None

    def _e164(self, number: str) -> str:
        try:
            return normalize(number, self.default_region)
        except InvalidPhoneNumber as exc:
            raise SurveyError(f"not a phone number: {number!r} ({exc})") from None

    # -- triggers ---------------------------------------------------------------------
    def enqueue(self, campaign: str, number: str, source_ref: str, *, customer_ref: str = "",
                timezone: str = "Asia/Shanghai", service_order: str = "", technician: str = "", agent: str = "",
                queue: str = "", linkedid: str = "", not_before: datetime | None = None) -> EnqueueResult:
        """Create a job unless the number was surveyed within the period (or the event is known)."""
        if not source_ref or len(source_ref) > 128:
            raise SurveyError("source_ref must be 1..128 characters")
        try:
            zone(timezone)
        except RulesError as exc:
            raise SurveyError(str(exc)) from None
        e164 = self._e164(number)
        now = self.clock.now()
        with self._tx() as session:
            camp = session.scalar(select(SurveyCampaign).where(SurveyCampaign.name == campaign))
            if camp is None:
                raise SurveyError(f"no campaign {campaign!r}")
            rules = CampaignRules.from_json(camp.rules_json)
            known = session.scalar(select(SurveyJob.id).where(SurveyJob.campaign_id == camp.id,
                                                              SurveyJob.source_ref == source_ref))
            if known is not None:
                return EnqueueResult(known, "duplicate", f"{source_ref} already has job {known}")
            since = now - timedelta(days=rules.period_days)
            recent = session.scalar(select(SurveyJob.id).where(SurveyJob.number == e164, SurveyJob.created_at >= since)
                                    .order_by(SurveyJob.id.desc()).limit(1))
            if recent is not None:
                return EnqueueResult(None, "recently_surveyed",
                                     f"job {recent} for {e164} within {rules.period_days} days")
            job = SurveyJob(campaign_id=camp.id, number=e164, customer_ref=customer_ref, timezone=timezone,
                            source_ref=source_ref, service_order=service_order, technician=technician, agent=agent,
                            queue=queue, linkedid=linkedid, state="pending", attempts=0,
                            next_attempt_at=not_before or now, created_at=now)
            suppressed = session.get(SuppressedNumber, e164) is not None
            if suppressed:
                job.state, job.closed_reason, job.finished_at = "closed", "suppressed", now
            session.add(job)
            session.flush()
            return EnqueueResult(job.id, "suppressed" if suppressed else "queued")

    def on_call_ended(self, call: dict[str, Any]) -> list[EnqueueResult]:
        """Hotline call finished: survey a sample of answered, non-test calls per queue."""
        if call.get("test_tag") or call.get("outcome") != "answered" or not call.get("caller_num"):
            return []
        if call.get("origin") or not call.get("agent"):
            return []  # outbound calls (surveys themselves) and calls no agent handled are not surveyed
        out = []
        queue = str(call.get("queue") or "")
        for camp in self.campaigns(trigger="call_ended"):
            rules = CampaignRules.from_json(camp["rules_json"])
            if not sampled(str(call["linkedid"]), queue, rules):
                out.append(EnqueueResult(None, "not_sampled", f"queue {queue or '-'}"))
                continue
            try:
                out.append(self.enqueue(camp["name"], str(call["caller_num"]), f"call:{call['linkedid']}",
                                        agent=str(call.get("agent") or ""), queue=queue,
                                        linkedid=str(call["linkedid"])))
            except SurveyError as exc:
                out.append(EnqueueResult(None, "invalid", str(exc)))
        return out

    def on_order_closed(self, campaign: str, order: dict[str, Any]) -> EnqueueResult:
        """A service order was closed (REST or CSV): survey the customer about it."""
        ref = str(order.get("order") or order.get("service_order") or "").strip()
        number = str(order.get("number") or "").strip()
        if not ref or not number:
            raise SurveyError("an order needs 'order' (its reference) and 'number'")
        return self.enqueue(campaign, number, f"order:{ref}", customer_ref=str(order.get("customer") or ""),
                            timezone=str(order.get("timezone") or "Asia/Shanghai"), service_order=ref,
                            technician=str(order.get("technician") or ""), agent=str(order.get("agent") or ""))

    def import_orders_csv(self, campaign: str, text: str) -> dict[str, Any]:
        """CSV with header order,number[,customer,technician,agent,timezone]: all rows checked first."""
        reader = csv.DictReader(io.StringIO(text))
        fields = set(reader.fieldnames or ())
        if not {"order", "number"} <= fields:
            raise SurveyError("CSV header must contain 'order' and 'number'")
        rows = list(reader)
        errors = []
        for n, row in enumerate(rows, start=2):
            if not (row.get("order") or "").strip():
                errors.append(f"row {n}, column order: empty")
            try:
                self._e164(row.get("number") or "")
            except SurveyError as exc:
                errors.append(f"row {n}, column number: {exc}")
            try:
                zone((row.get("timezone") or "").strip() or "Asia/Shanghai")
            except RulesError as exc:
                errors.append(f"row {n}, column timezone: {exc}")
        if errors:
            raise SurveyError("; ".join(errors))
        counts: dict[str, int] = {}
        for row in rows:
            result = self.on_order_closed(campaign, {k: (v or "").strip() for k, v in row.items() if k})
            counts[result.status] = counts.get(result.status, 0) + 1
        return {"rows": len(rows), **counts}

    # -- dialing ----------------------------------------------------------------------
    def in_flight(self, campaign_id: int) -> int:
        with self.sessions() as session:
            return session.scalar(select(func.count()).select_from(SurveyAttempt).join(SurveyJob)
                                  .where(SurveyJob.campaign_id == campaign_id,
                                         SurveyAttempt.status == "in_flight")) or 0

    def next_due(self, campaign_id: int) -> datetime | None:
        with self.sessions() as session:
            return session.scalar(select(func.min(SurveyJob.next_attempt_at)).where(
                SurveyJob.campaign_id == campaign_id, SurveyJob.state == "pending"))

    def claim_next(self, campaign_id: int) -> DialTicket | None:
        """The next due job that the rules allow, with its attempt row written; None if none now.

        Jobs found outside their calling window are moved to the window's next opening;
        suppressed numbers are closed. Both are written, so the audit shows why.
        """
        now = self.clock.now()
        with self._tx() as session:
            camp = session.get(SurveyCampaign, campaign_id)
            if camp is None or not camp.active:
                return None
            rules = CampaignRules.from_json(camp.rules_json)
            for _ in range(1000):
                job = session.scalar(
                    select(SurveyJob).where(SurveyJob.campaign_id == campaign_id, SurveyJob.state == "pending",
                                            SurveyJob.next_attempt_at <= now)
                    .order_by(SurveyJob.next_attempt_at, SurveyJob.id).limit(1).with_for_update(skip_locked=True))
                if job is None:
                    return None
                if session.get(SuppressedNumber, job.number) is not None:
                    job.state, job.closed_reason, job.finished_at = "closed", "suppressed", now
                    continue
                window = calling_window(now, job.timezone, rules)
                if not window.allowed:
                    job.next_attempt_at = window.next_open
                    continue
                job.attempts += 1
                job.state = "dialing"
                # Numbered past every earlier row: a not_dialed attempt gave its rule attempt back.
                attempt_no = (session.scalar(select(func.max(SurveyAttempt.attempt_no))
                                             .where(SurveyAttempt.job_id == job.id)) or 0) + 1
                uniqueid = f"survey-{job.id}-{attempt_no}-{secrets.token_hex(3)}"
                rule = (f"{window.rule}; attempt {job.attempts}/{rules.max_attempts}; not suppressed; "
                        f"max {rules.max_concurrent} concurrent, {rules.pace_per_second:g}/s")
                attempt = SurveyAttempt(job_id=job.id, attempt_no=attempt_no, uniqueid=uniqueid,
                                        channel=rules.dial.format(number=national_digits(job.number), e164=job.number),
                                        started_at=now, rule=rule, status="in_flight")
                session.add(attempt)
                session.flush()
                return DialTicket(job.id, attempt.id, attempt.attempt_no, campaign_id, job.number, uniqueid, rule,
                                  attempt.channel)
        return None

    def originate_sending(self, attempt_id: int) -> None:
        """Committed just before the Originate is written: from now on the call may reach the
        customer, so a restart that finds no other trace must not take it for never dialled."""
        with self._tx() as session:
            attempt = self._attempt(session, attempt_id)
            if attempt is not None and attempt.status == "in_flight" and attempt.originate_outcome is None:
                attempt.originate_outcome = "sent"

    def originate_result(self, attempt_id: int, outcome: str, reason: int | None, channel: str, note: str = "") -> None:
        """The OriginateResponse (or its absence). Answered calls settle at hangup + survey end."""
        now = self.clock.now()
        with self._tx() as session:
            attempt = self._attempt(session, attempt_id)
            if attempt is None or attempt.status != "in_flight":
                return
            attempt.originate_outcome = outcome
            attempt.originate_reason = reason
            if channel:
                attempt.channel = channel[:255]
            if note:
                attempt.note = note[:1000]
            if outcome == "answered":
                attempt.answered_at = attempt.answered_at or now
                self._maybe_settle(session, attempt, now)
            elif outcome == "not_sent":
                self._settle(session, attempt, "not_dialed", now)
            elif outcome == "suppressed":
                # The Originator refused it (added to the list after the claim): nothing rang.
                attempt.status, attempt.outcome, attempt.ended_at = "done", "suppressed", now
                job = session.get(SurveyJob, attempt.job_id, with_for_update=True)
                if job is not None:
                    job.attempts = max(0, job.attempts - 1)
                    job.state, job.closed_reason, job.finished_at = "closed", "suppressed", now
            elif outcome != "unknown":  # unknown: left in flight for reconciliation
                self._settle(session, attempt, _refine(outcome, attempt.hangup_cause), now)

    def hangup(self, uniqueid: str, cause: int | None) -> None:
        now = self.clock.now()
        with self._tx() as session:
            attempt = session.scalar(select(SurveyAttempt).where(SurveyAttempt.uniqueid == uniqueid)
                                     .with_for_update())
            if attempt is None or attempt.hangup_at is not None:
                return
            attempt.hangup_at = now
            attempt.hangup_cause = cause
            if attempt.status == "done" and attempt.outcome == "failed" and _refine("failed", cause) != "failed":
                job = session.get(SurveyJob, attempt.job_id)
                if job is not None and job.state in ("pending", "closed") and job.attempts == attempt.attempt_no:
                    self._settle(session, attempt, _refine("failed", cause), now, force=True)
                return
            self._maybe_settle(session, attempt, now)

    # -- the survey flow's writes -------------------------------------------------------
    def survey_started(self, attempt_id: int) -> SurveyContext:
        now = self.clock.now()
        with self._tx() as session:
            attempt = self._attempt(session, attempt_id)
            if attempt is None:
                raise SurveyError(f"no survey attempt {attempt_id}")
            job = session.get(SurveyJob, attempt.job_id)
            camp = session.get(SurveyCampaign, job.campaign_id) if job else None
            if job is None or camp is None:
                raise SurveyError(f"survey attempt {attempt_id} has no job")
            attempt.survey_started_at = now
            attempt.answered_at = attempt.answered_at or now
            return SurveyContext(job.id, attempt.id, camp.survey, job.agent, job.technician, job.number)

    def save_answer(self, ctx: SurveyContext, question: str, value: str, *, score: int | None = None,
                    low_score: bool = False, praise: bool = False, callback: bool = False,
                    recording: str | None = None, seconds: float | None = None) -> None:
        """One answer, committed now, with its follow-up / praise rows in the same transaction."""
        now = self.clock.now()
        with self._tx() as session:
            existing = session.scalar(select(SurveyAnswer).where(SurveyAnswer.job_id == ctx.job_id,
                                                                 SurveyAnswer.question == question))
            if existing is None:
                session.add(SurveyAnswer(job_id=ctx.job_id, attempt_id=ctx.attempt_id, question=question, value=value,
                                         score=score, recording=recording, seconds=seconds, at=now))
            else:  # a second attempt re-asked it: the latest answer counts
                existing.value, existing.score, existing.at = value, score, now
            if low_score or callback:
                follow = session.scalar(select(SurveyFollowUp).where(SurveyFollowUp.job_id == ctx.job_id))
                reason = f"{question}={value}" + (" (callback requested)" if callback else " (low score)")
                if follow is None:
                    session.add(SurveyFollowUp(job_id=ctx.job_id, reason=reason, callback_requested=callback,
                                               status="open", created_at=now))
                else:
                    follow.reason = f"{follow.reason}; {reason}"
                    follow.callback_requested = follow.callback_requested or callback
            if praise and ctx.agent:
                if session.scalar(select(AgentPraise.id).where(AgentPraise.job_id == ctx.job_id,
                                                                AgentPraise.question == question)) is None:
                    session.add(AgentPraise(agent=ctx.agent, job_id=ctx.job_id, question=question, at=now))

    def survey_ended(self, attempt_id: int, result: str) -> None:
        """The flow finished (closing reached: completed) or was cut short (partial / no_input)."""
        now = self.clock.now()
        with self._tx() as session:
            attempt = self._attempt(session, attempt_id)
            if attempt is None:
                return
            attempt.survey_ended_at = now
            attempt.note = (attempt.note + f" survey:{result}").strip()[:1000]
            if attempt.status == "in_flight":
                self._maybe_settle(session, attempt, now)
            elif attempt.outcome == "no_input" and result != "no_input":
                # Settled on a hangup that overtook the flow's last write: correct it.
                self._settle(session, attempt, result, now, force=True)

    # -- settling ----------------------------------------------------------------------
    @staticmethod
    def _attempt(session: Session, attempt_id: int) -> SurveyAttempt | None:
        return session.scalar(select(SurveyAttempt).where(SurveyAttempt.id == attempt_id).with_for_update())

    def _maybe_settle(self, session: Session, attempt: SurveyAttempt, now: datetime) -> None:
        if attempt.status != "in_flight" or attempt.hangup_at is None:
            return
        if attempt.originate_outcome in (None, "sent", "unknown") and attempt.survey_started_at is None \
                and not attempt.reconciled:
            return  # the OriginateResponse (more precise than the hangup cause) is still to come
        if attempt.survey_started_at is not None and attempt.survey_ended_at is None:
            return  # the flow is still writing its last answer
        self._settle(session, attempt, self._answered_outcome(session, attempt), now)

    @staticmethod
    def _answered_outcome(session: Session, attempt: SurveyAttempt) -> str:
        if attempt.survey_started_at is None:
            return "no_input" if attempt.originate_outcome == "answered" else _cause_outcome(attempt.hangup_cause)
        if "survey:completed" in attempt.note:
            return "completed"
        answers = session.scalar(select(func.count()).select_from(SurveyAnswer)
                                 .where(SurveyAnswer.attempt_id == attempt.id)) or 0
        return "partial" if answers else "no_input"

    def _settle(self, session: Session, attempt: SurveyAttempt, outcome: str, now: datetime,
                force: bool = False) -> None:
        if attempt.status != "in_flight" and not force:
            return
        attempt.status = "done"
        attempt.outcome = outcome
        attempt.ended_at = now
        job = session.get(SurveyJob, attempt.job_id, with_for_update=True)
        if job is None:
            return
        camp = session.get(SurveyCampaign, job.campaign_id)
        rules = CampaignRules.from_json(camp.rules_json if camp else "{}")
        if outcome == "not_dialed":
            job.attempts = max(0, job.attempts - 1)
        when, why = retry_at(outcome, job.attempts, now, rules)
        if outcome == "completed":
            job.state, job.closed_reason, job.finished_at = "completed", "completed", now
        elif when is None:
            job.state, job.closed_reason, job.finished_at = "closed", why[:64], now
        else:
            job.state, job.next_attempt_at = "pending", when

    # -- reconciliation after a restart --------------------------------------------------
    def unsettled(self) -> list[dict[str, Any]]:
        with self.sessions() as session:
            rows = session.scalars(select(SurveyAttempt).where(SurveyAttempt.status == "in_flight"))
            return [attempt_view(a) for a in rows]

    def reconcile(self, attempt_id: int, *, live: bool, patient: bool = False) -> str:
        """Decide an in-flight attempt after a restart from what is known; never redial blindly.

        `live`: its channel (by Uniqueid) is up in Asterisk now: keep watching. Else the
        survey rows, then the calls table (the service's tracker stores every channel's
        call with its hangup cause) tell what happened. Nothing anywhere: the Originate
        never reached Asterisk ("not_dialed", dialled again). `patient` (the caller's first
        look, before its grace period is over) answers "wait" instead of concluding while
        a flow may still be writing its last answer or the tracker its call row.
        """
        now = self.clock.now()
        with self._tx() as session:
            attempt = self._attempt(session, attempt_id)
            if attempt is None or attempt.status != "in_flight":
                return "settled"
            if live:
                attempt.reconciled = True  # its hangup settles it, even without an OriginateResponse
                return "live"
            record = session.get(CallRecord, attempt.uniqueid)
            flow_running = attempt.survey_started_at is not None and attempt.survey_ended_at is None
            if patient and (flow_running or (record is None and attempt.survey_started_at is None)):
                return "wait"
            attempt.reconciled = True
            if attempt.hangup_at is None:
                attempt.hangup_at = now
                attempt.hangup_cause = record.hangup_cause if record is not None else None
            if attempt.survey_started_at is not None:
                if attempt.survey_ended_at is None:
                    attempt.survey_ended_at = now  # the flow's process died with the call
                self._settle(session, attempt, self._answered_outcome(session, attempt), now)
                return "answered"
            if record is not None:
                outcome = _cause_outcome(record.hangup_cause)
                self._settle(session, attempt, outcome, now)
                return outcome
            if attempt.originate_outcome not in (None, "sent", "unknown"):
                self._settle(session, attempt, attempt.originate_outcome or "failed", now)
                return attempt.originate_outcome or "failed"
            if attempt.originate_outcome is not None:
                # Sent, and every trace lost (e.g. the customer answered while the service was
                # down): it may have rung. Retried only if the rules name "unknown"; else closed.
                self._settle(session, attempt, "unknown", now)
                return "unknown"
            self._settle(session, attempt, "not_dialed", now)
            return "not_dialed"

    # -- reads ------------------------------------------------------------------------
    def status(self, campaign: str) -> dict[str, Any]:
        camp = self.campaign(campaign)
        with self.sessions() as session:
            states = dict(session.execute(select(SurveyJob.state, func.count()).where(
                SurveyJob.campaign_id == camp["id"]).group_by(SurveyJob.state)).all())
            closed = dict(session.execute(select(SurveyJob.closed_reason, func.count()).where(
                SurveyJob.campaign_id == camp["id"], SurveyJob.state == "closed")
                .group_by(SurveyJob.closed_reason)).all())
            outcomes = dict(session.execute(select(SurveyAttempt.outcome, func.count()).join(SurveyJob).where(
                SurveyJob.campaign_id == camp["id"]).group_by(SurveyAttempt.outcome)).all())
        return {"campaign": camp["name"], "jobs": {str(k): v for k, v in states.items()},
                "closed": {str(k): v for k, v in closed.items()},
                "attempts": {str(k or "in_flight"): v for k, v in outcomes.items()}}

    def jobs(self, campaign: str) -> list[dict[str, Any]]:
        camp = self.campaign(campaign)
        with self.sessions() as session:
            jobs = session.scalars(select(SurveyJob).where(SurveyJob.campaign_id == camp["id"]).order_by(SurveyJob.id))
            out = []
            for job in jobs:
                attempts = session.scalars(select(SurveyAttempt).where(SurveyAttempt.job_id == job.id)
                                           .order_by(SurveyAttempt.attempt_no))
                answers = session.scalars(select(SurveyAnswer).where(SurveyAnswer.job_id == job.id)
                                          .order_by(SurveyAnswer.id)).all()
                follow = session.scalar(select(SurveyFollowUp).where(SurveyFollowUp.job_id == job.id))
                out.append({**job_view(job), "attempt_log": [attempt_view(a) for a in attempts],
                            "answers": {a.question: a.value for a in answers},
                            "recordings": {a.question: a.recording for a in answers if a.recording},
                            "follow_up": None if follow is None else {
                                "reason": follow.reason, "callback_requested": follow.callback_requested,
                                "status": follow.status}})
            return out

    def results(self, campaign: str) -> list[dict[str, Any]]:
        """One row per answer, with the order, technician and agent it is about."""
        camp = self.campaign(campaign)
        with self.sessions() as session:
            rows = session.execute(select(SurveyAnswer, SurveyJob).join(SurveyJob).where(
                SurveyJob.campaign_id == camp["id"]).order_by(SurveyAnswer.job_id, SurveyAnswer.id)).all()
            return [{"job": job.id, "number": job.number, "service_order": job.service_order,
                     "technician": job.technician, "agent": job.agent, "queue": job.queue, "linkedid": job.linkedid,
                     "question": ans.question, "value": ans.value, "score": ans.score, "recording": ans.recording,
                     "at": ans.at.isoformat()} for ans, job in rows]

    def results_csv(self, campaign: str) -> str:
        rows = self.results(campaign)
        out = io.StringIO()
        columns = ["job", "number", "service_order", "technician", "agent", "queue", "linkedid", "question", "value",
                   "score", "recording", "at"]
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()

    def followups(self) -> list[dict[str, Any]]:
        with self.sessions() as session:
            rows = session.execute(select(SurveyFollowUp, SurveyJob).join(SurveyJob).order_by(SurveyFollowUp.id)).all()
            return [{"id": f.id, "job": j.id, "number": j.number, "service_order": j.service_order,
                     "technician": j.technician, "agent": j.agent, "reason": f.reason,
                     "callback_requested": f.callback_requested, "status": f.status,
                     "created_at": f.created_at.isoformat()} for f, j in rows]

    def praise_totals(self) -> dict[str, int]:
        with self.sessions() as session:
            return {agent: n for agent, n in session.execute(
                select(AgentPraise.agent, func.count()).group_by(AgentPraise.agent)).all()}


def _refine(outcome: str, cause: int | None) -> str:
    """A "failed" Originate whose channel hung up with a telling cause is that outcome.

    Asterisk 22 reported Reason 0 (failed) for a 486 Busy Here answer to an Originate with a
    dialplan target while the Hangup event carried cause 17 (busy): retry it as busy.
    """
    if outcome != "failed" or cause is None:
        return outcome
    return _cause_outcome(cause)


def _cause_outcome(cause: int | None) -> str:
    """Q.850 hangup cause of an unanswered outbound leg -> retry outcome."""
    if cause == 17:
        return "busy"
    if cause in (18, 19, 21):  # no user responding, no answer, call rejected
        return "no_answer"
    if cause in (34, 38, 41, 42, 44):
        return "congestion"
    return "failed"


def campaign_view(row: SurveyCampaign) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "trigger": row.trigger, "survey": row.survey,
            "rules": json.loads(row.rules_json),
            "rules_json": row.rules_json, "active": row.active}


def job_view(job: SurveyJob) -> dict[str, Any]:
    return {"id": job.id, "number": job.number, "state": job.state, "attempts": job.attempts,
            "next_attempt_at": job.next_attempt_at.isoformat(), "closed_reason": job.closed_reason,
            "service_order": job.service_order, "technician": job.technician, "agent": job.agent,
            "source_ref": job.source_ref, "timezone": job.timezone}


def attempt_view(a: SurveyAttempt) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    return {"id": a.id, "job": a.job_id, "attempt_no": a.attempt_no, "uniqueid": a.uniqueid, "channel": a.channel,
            "started_at": iso(a.started_at), "rule": a.rule, "status": a.status,
            "originate_outcome": a.originate_outcome, "originate_reason": a.originate_reason,
            "answered_at": iso(a.answered_at), "hangup_cause": a.hangup_cause, "outcome": a.outcome,
            "ended_at": iso(a.ended_at), "reconciled": a.reconciled, "note": a.note}

