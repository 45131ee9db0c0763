"""The call-level side of the recording index: one recording set per call, its analysis,
case-library marks, legal holds, purges and the access log.

`recordings.index.Recording` holds one row per leg file; a `RecordingSet` groups the
legs of one call (by Linkedid) and carries what belongs to the call as a whole: who
took it (every agent, so a transferred call is found under both), queue, customer,
outcome, the talk analysis and its QA flags, the case-library mark, the legal hold
and the purge. Everything is blocking database work: call it from worker threads.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Integer, String, Text, false, select
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from cti.db import Base, UTCDateTime
from recordings.index import LEG_AGENT, STATUS_COMPLETE, Recording, RecordingIndex

CASE_KINDS = ("praise", "complaint")
STATUS_PURGED = "purged"


class RecordingSet(Base):
    """Every recorded leg of one call, as one unit for search, QA and retention."""

    __tablename__ = "recording_sets"

    linkedid: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: Uniqueid of the channel MixMonitor runs on (the caller's, kept across transfers).
    uniqueid: Mapped[str] = mapped_column(String(64))
    base: Mapped[str] = mapped_column(String(512))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    queue: Mapped[str | None] = mapped_column(String(64), index=True)
    #: The agent who answered first (the queue's AgentConnect).
    agent: Mapped[str | None] = mapped_column(String(64), index=True)
    #: Every agent the caller talked to, comma-wrapped (",1001,1002,") for LIKE search.
    agents: Mapped[str] = mapped_column(String(512), default=",", server_default=",")
    caller_num: Mapped[str | None] = mapped_column(String(64))
    customer_id: Mapped[str | None] = mapped_column(String(64), index=True)
    outcome: Mapped[str | None] = mapped_column(String(32), index=True)
    transfers: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    analysis: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    analysed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Set when the analysis raised a QA flag (e.g. dead air over the threshold).
    qa_flag: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false(), index=True)
    case_kind: Mapped[str | None] = mapped_column(String(16), index=True)
    case_note: Mapped[str | None] = mapped_column(Text)
    case_by: Mapped[str | None] = mapped_column(String(128))
    case_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    legal_hold: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    legal_hold_reason: Mapped[str | None] = mapped_column(Text)
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RecordingAccess(Base):
    """One row per play or download: who, when, which file, why."""

    __tablename__ = "recording_access"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    recording_id: Mapped[int] = mapped_column(Integer, index=True)
    linkedid: Mapped[str] = mapped_column(String(64), index=True)
    user: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(16))  # play | download
    reason: Mapped[str] = mapped_column(Text)
    byte_range: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


@dataclass(frozen=True, slots=True)
class SetFilter:
    """Search criteria for `RecordingCatalog.search`; None means "any"."""

    agent: str | None = None
    queue: str | None = None
    customer: str | None = None  # customer id or caller number
    since: datetime | None = None
    until: datetime | None = None
    flagged: bool | None = None
    outcome: str | None = None
    case: str | None = None  # praise | complaint | any
    include_purged: bool = False
    limit: int = 100


def set_view(rs: RecordingSet, legs: Sequence[Recording]) -> dict[str, Any]:
    """JSON-ready view of a set and its legs (paths stay server-side: ids only)."""
    def ts(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    return {
        "linkedid": rs.linkedid, "started_at": ts(rs.started_at), "stopped_at": ts(rs.stopped_at),
        "queue": rs.queue, "agent": rs.agent, "agents": [a for a in rs.agents.split(",") if a],
        "caller_num": rs.caller_num, "customer_id": rs.customer_id, "outcome": rs.outcome,
        "transfers": rs.transfers, "analysis": rs.analysis, "analysed_at": ts(rs.analysed_at),
        "qa_flag": rs.qa_flag, "flags": list((rs.analysis or {}).get("flags", [])),
        "case": None if rs.case_kind is None else {"kind": rs.case_kind, "note": rs.case_note, "by": rs.case_by,
                                                     "at": ts(rs.case_at)},
        "legal_hold": rs.legal_hold, "legal_hold_reason": rs.legal_hold_reason, "purged_at": ts(rs.purged_at),
        "legs": [
            {"id": r.id, "leg": r.leg, "status": r.status, "size_bytes": r.size_bytes,
             "duration_seconds": r.duration_seconds, "has_speech": r.has_speech, "speech_seconds": r.speech_seconds,
             "uniqueid": r.uniqueid, "agent": r.agent if r.leg == LEG_AGENT else None}
            for r in legs
        ],
    }


class RecordingCatalog:
    """Recording sets over the leg index; the one API the REST layer and the CLI use."""

    def __init__(self, index: RecordingIndex) -> None:
        self.index = index
        self.sessions: sessionmaker[Session] = index.sessions

    def _session(self) -> Session:
        return self.sessions(expire_on_commit=False)

    # -- lifecycle ---------------------------------------------------------------------
    def open_set(self, *, linkedid: str, uniqueid: str, base: str, started_at: datetime) -> RecordingSet:
        """Create the set when recording starts (idempotent: a replayed start changes nothing)."""
        with self._session() as session, session.begin():
            rs = session.get(RecordingSet, linkedid)
            if rs is None:
                rs = RecordingSet(linkedid=linkedid, uniqueid=uniqueid, base=base, started_at=started_at,
                                  agents=",", transfers=0, qa_flag=False, legal_hold=False)
                session.add(rs)
            return rs

    def close_set(self, linkedid: str, *, stopped_at: datetime, queue: str | None, agent: str | None,
                  agents: Iterable[str], caller_num: str | None, customer_id: str | None, outcome: str | None,
                  transfers: int) -> RecordingSet | None:
        """Finalise the call-level facts at hangup (idempotent; the first stop time is kept)."""
        with self._session() as session, session.begin():
            rs = session.get(RecordingSet, linkedid)
            if rs is None:
                return None
            rs.stopped_at = rs.stopped_at or stopped_at
            rs.queue = queue or rs.queue
            rs.agent = agent or rs.agent
            known = [a for a in rs.agents.split(",") if a]
            for name in ([agent] if agent else []) + list(agents):
                if name and name not in known:
                    known.append(name)
            rs.agents = "," + "".join(f"{a}," for a in known)
            rs.caller_num = caller_num or rs.caller_num
            rs.customer_id = customer_id or rs.customer_id
            rs.outcome = outcome or rs.outcome
            rs.transfers = max(rs.transfers, transfers)
            return rs

    def store_analysis(self, linkedid: str, result: dict[str, Any], analysed_at: datetime) -> None:
        """Per-leg speech facts on the leg rows, call metrics and flags on the set."""
        with self._session() as session, session.begin():
            for row_id, leg in result.get("legs", {}).items():
                row = session.get(Recording, int(row_id))
                if row is not None and "error" not in leg:
                    row.has_speech = bool(leg["has_speech"])
                    row.speech_seconds = float(leg["speech_seconds"])
            rs = session.get(RecordingSet, linkedid)
            if rs is not None and result.get("metrics") is not None:
                rs.analysis = result["metrics"]
                rs.analysed_at = analysed_at
                rs.qa_flag = bool(result["metrics"].get("flags"))

    # -- queries -----------------------------------------------------------------------
    def get(self, linkedid: str) -> tuple[RecordingSet, list[Recording]] | None:
        with self._session() as session:
            rs = session.get(RecordingSet, linkedid)
            if rs is None:
                return None
            return rs, self._legs(session, linkedid)

    def leg(self, recording_id: int) -> Recording | None:
        with self._session() as session:
            return session.get(Recording, recording_id)

    def set_of(self, recording_id: int) -> tuple[RecordingSet, list[Recording]] | None:
        """The set a leg id belongs to (ids, not paths, travel in URLs and commands)."""
        row = self.leg(recording_id)
        return None if row is None else self.get(row.linkedid)

    def search(self, f: SetFilter) -> list[dict[str, Any]]:
        query = select(RecordingSet)
        if f.agent:
            query = query.where(RecordingSet.agents.contains(f",{f.agent},", autoescape=True))
        if f.queue:
            query = query.where(RecordingSet.queue == f.queue)
        if f.customer:
            query = query.where((RecordingSet.customer_id == f.customer) | (RecordingSet.caller_num == f.customer))
        if f.since is not None:
            query = query.where(RecordingSet.started_at >= f.since)
        if f.until is not None:
            query = query.where(RecordingSet.started_at < f.until)
        if f.flagged is not None:
            query = query.where(RecordingSet.qa_flag.is_(f.flagged))
        if f.outcome:
            query = query.where(RecordingSet.outcome == f.outcome)
        if f.case == "any":
            query = query.where(RecordingSet.case_kind.is_not(None))
        elif f.case:
            query = query.where(RecordingSet.case_kind == f.case)
        if not f.include_purged:
            query = query.where(RecordingSet.purged_at.is_(None))
        query = query.order_by(RecordingSet.started_at.desc()).limit(max(1, min(f.limit, 1000)))
        with self._session() as session:
            sets = list(session.scalars(query))
            return [set_view(rs, self._legs(session, rs.linkedid)) for rs in sets]

    @staticmethod
    def _legs(session: Session, linkedid: str) -> list[Recording]:
        return list(session.scalars(select(Recording).where(Recording.linkedid == linkedid).order_by(Recording.id)))

    # -- QA and legal ------------------------------------------------------------------
    def mark_case(self, recording_id: int, kind: str | None, note: str, by: str, at: datetime) -> RecordingSet:
        """Put the call into the case library (praise / complaint), or take it out (kind None)."""
        if kind is not None and kind not in CASE_KINDS:
            raise ValueError(f"case must be one of {CASE_KINDS}, not {kind!r}")
        if kind is not None and not note.strip():
            raise ValueError("a case needs a note saying what to learn from it")
        row = self.leg(recording_id)
        if row is None:
            raise LookupError(f"no recording {recording_id}")
        with self._session() as session, session.begin():
            rs = session.get(RecordingSet, row.linkedid)
            if rs is None:
                raise LookupError(f"recording {recording_id} has no recording set")
            rs.case_kind, rs.case_note = kind, (note.strip() if kind else None)
            rs.case_by, rs.case_at = (by, at) if kind else (None, None)
            return rs

    def set_legal_hold(self, recording_id: int, hold: bool, reason: str) -> RecordingSet:
        """A legal hold keeps the whole call's recordings whatever the retention policy says."""
        if hold and not reason.strip():
            raise ValueError("a legal hold needs a reason")
        row = self.leg(recording_id)
        if row is None:
            raise LookupError(f"no recording {recording_id}")
        with self._session() as session, session.begin():
            rs = session.get(RecordingSet, row.linkedid)
            if rs is None:
                raise LookupError(f"recording {recording_id} has no recording set")
            rs.legal_hold = hold
            rs.legal_hold_reason = reason.strip() if hold else None
            return rs

    def log_access(self, *, recording: Recording, user: str, role: str, action: str, reason: str,
                   byte_range: str | None, at: datetime) -> None:
        with self._session() as session, session.begin():
            session.add(RecordingAccess(recording_id=recording.id, linkedid=recording.linkedid, user=user, role=role,
                                        action=action, reason=reason, byte_range=byte_range, at=at))

    def access_log(self, recording_id: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
        query = select(RecordingAccess).order_by(RecordingAccess.id.desc()).limit(limit)
        if recording_id is not None:
            query = query.where(RecordingAccess.recording_id == recording_id)
        with self._session() as session:
            return [{"id": a.id, "recording_id": a.recording_id, "linkedid": a.linkedid, "user": a.user,
                     "role": a.role, "action": a.action, "reason": a.reason, "byte_range": a.byte_range,
                     "at": a.at.isoformat()} for a in session.scalars(query)]

    def all_sets(self, include_purged: bool = False) -> list[tuple[RecordingSet, list[Recording]]]:
        query = select(RecordingSet).order_by(RecordingSet.started_at)
        if not include_purged:
            query = query.where(RecordingSet.purged_at.is_(None))
        with self._session() as session:
            return [(rs, self._legs(session, rs.linkedid)) for rs in session.scalars(query)]

    def mark_purged(self, linkedid: str, at: datetime) -> None:
        with self._session() as session, session.begin():
            rs = session.get(RecordingSet, linkedid)
            if rs is not None:
                rs.purged_at = at
            for row in self._legs(session, linkedid):
                row.status = STATUS_PURGED
                row.size_bytes = None

    def indexed_paths(self) -> dict[str, Recording]:
        """Every leg path the index knows (purged legs included) -> its row."""
        with self._session() as session:
            return {r.path: r for r in session.scalars(select(Recording))}


__all__ = ["CASE_KINDS", "STATUS_COMPLETE", "STATUS_PURGED", "RecordingAccess", "RecordingCatalog", "RecordingSet",
           "SetFilter", "set_view"]
