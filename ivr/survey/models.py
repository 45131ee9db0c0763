"""Survey tables on the service's one metadata (cti.db.Base): SQLite and PostgreSQL alike.

The job row is the unit of work; an attempt row is written *before* each Originate
(with the Uniqueid the channel will get), so after a crash the dialer can find out
what became of every call it may have placed instead of dialling again. Answers are
one row per question, written as they are entered.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from cti.db import Base, UTCDateTime
from cti.suppression import SuppressedNumber  # noqa: F401 - the shared do-not-call list (moved to cti)

#: Job states. pending: waiting for its next attempt; dialing: an attempt is in flight;
#: completed / closed are final (closed says why in `closed_reason`).
JOB_STATES = ("pending", "dialing", "completed", "closed")


def _now() -> datetime:
    return datetime.now(UTC)


class SurveyCampaign(Base):
    """A survey definition plus the dialing rules it runs under (JSON, see rules.CampaignRules)."""

    __tablename__ = "survey_campaigns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    #: Trigger this campaign listens to: order_closed | call_ended | manual.
    trigger: Mapped[str] = mapped_column(String(32), default="manual")
    survey: Mapped[str] = mapped_column(String(64), default="default")
    rules_json: Mapped[str] = mapped_column(Text, default="{}")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)


class SurveyJob(Base):
    """One customer to survey about one service order or hotline call."""

    __tablename__ = "survey_jobs"
    __table_args__ = (
        Index("ix_survey_jobs_due", "state", "next_attempt_at"),
        Index("ix_survey_jobs_number_created", "number", "created_at"),
        # One job per trigger event (re-importing the same closed order adds nothing).
        UniqueConstraint("campaign_id", "source_ref", name="uq_survey_jobs_campaign_source"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("survey_campaigns.id", ondelete="CASCADE"))
    #: E.164 number of the customer (the suppression list and one-per-period key).
    number: Mapped[str] = mapped_column(String(32))
    customer_ref: Mapped[str] = mapped_column(String(64), default="")
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Shanghai")
    #: What triggered it: "order:<ref>" or "call:<linkedid>" (unique per campaign).
    source_ref: Mapped[str] = mapped_column(String(128))
    service_order: Mapped[str] = mapped_column(String(64), default="")
    technician: Mapped[str] = mapped_column(String(64), default="")
    agent: Mapped[str] = mapped_column(String(64), default="")
    queue: Mapped[str] = mapped_column(String(64), default="")
    linkedid: Mapped[str] = mapped_column(String(64), default="")
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_reason: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SurveyAttempt(Base):
    """The audit row of one dial attempt: written before the Originate, completed after."""

    __tablename__ = "survey_attempts"
    __table_args__ = (UniqueConstraint("job_id", "attempt_no", name="uq_survey_attempts_job_no"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("survey_jobs.id", ondelete="CASCADE"), index=True)
    attempt_no: Mapped[int] = mapped_column(Integer)
    #: The Uniqueid (AMI ChannelId) the outbound channel gets: the reconciliation key.
    uniqueid: Mapped[str] = mapped_column(String(64), unique=True)
    channel: Mapped[str] = mapped_column(String(255), default="")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: Which rule allowed the call, e.g. "window 09:00-20:00 Asia/Shanghai; attempt 2/3".
    rule: Mapped[str] = mapped_column(Text, default="")
    #: in_flight until settled; then done.
    status: Mapped[str] = mapped_column(String(16), default="in_flight")
    #: sent (written just before the Originate left) | answered | no_answer | busy | congestion |
    #: failed | unknown | not_sent | not_dialed
    originate_outcome: Mapped[str | None] = mapped_column(String(16))
    originate_reason: Mapped[int | None] = mapped_column(Integer)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    survey_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    survey_ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    hangup_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    hangup_cause: Mapped[int | None] = mapped_column(Integer)
    #: Final outcome for the retry rules: completed | partial | no_input | no_answer | busy |
    #: congestion | failed | not_dialed | unknown (sent, every trace lost in a crash).
    outcome: Mapped[str | None] = mapped_column(String(16))
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reconciled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    note: Mapped[str] = mapped_column(Text, default="")


class SurveyAnswer(Base):
    """One answer (digit), stored the moment the customer pressed it."""

    __tablename__ = "survey_answers"
    __table_args__ = (UniqueConstraint("job_id", "question", name="uq_survey_answers_job_question"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("survey_jobs.id", ondelete="CASCADE"), index=True)
    attempt_id: Mapped[int] = mapped_column(ForeignKey("survey_attempts.id", ondelete="CASCADE"))
    question: Mapped[str] = mapped_column(String(64))
    value: Mapped[str] = mapped_column(String(16))
    score: Mapped[int | None] = mapped_column(Integer)
    #: Path of a recorded voice comment (relative to the recordings root), for `record` steps.
    recording: Mapped[str | None] = mapped_column(String(255))
    seconds: Mapped[float | None] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class SurveyFollowUp(Base):
    """A task for a supervisor: a low score, or the customer asked to be called back."""

    __tablename__ = "survey_followups"
    __table_args__ = (UniqueConstraint("job_id", name="uq_survey_followups_job"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("survey_jobs.id", ondelete="CASCADE"))
    reason: Mapped[str] = mapped_column(Text)
    callback_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AgentPraise(Base):
    """A "praise" answer counted for a hotline agent (reports read the totals by agent)."""

    __tablename__ = "survey_agent_praise"
    __table_args__ = (UniqueConstraint("job_id", "question", name="uq_survey_agent_praise_job_question"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agent: Mapped[str] = mapped_column(String(64), index=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("survey_jobs.id", ondelete="CASCADE"))
    question: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
