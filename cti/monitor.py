"""Live monitoring: a supervisor listens to, whispers to or barges into an agent's call.

The supervisor's own phone rings (AMI Originate of the supervisor's endpoint into
ChanSpy on the agent's channel of that call). ChanSpy options (Asterisk 22):
  q  no beep and no channel-name announcement (the agent and caller must not notice)
  E  leave when the spied-on channel hangs up (the supervisor's phone is released)
  S  leave when there is nothing left to spy on
  w  whisper: the supervisor's audio reaches the spied channel (the agent) only
  B  barge: the supervisor's audio reaches both parties of the bridge
Listening spies on the agent's channel, so the supervisor hears both directions.

Every request is audited (who, when, mode, the call, the agent channel, the outcome)
and, when ChanSpy actually starts (ChanSpyStart), marked on the call's recording
timeline as an offset from the recording's start. Pure helpers (`chanspy_options`,
`pick_agent_channel`) are separate from the one class that does I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from sqlalchemy import Float, Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from cti import channel_vars as cv
from cti.ami.client import AMIClient, Subscription
from cti.ami.events import ChanSpyStart, ChanSpyStop, Event
from cti.db import Base, UTCDateTime
from cti.originate import OriginateRequest, OriginateResult, Originator
from cti.tracker import CallEvent, CallTracker
from cti.web import APIError, principal_of, requires

log = logging.getLogger(__name__)

MODES = ("listen", "whisper", "barge")
_MODE_FLAGS = {"listen": "", "whisper": "w", "barge": "B"}
ENDPOINT = re.compile(r"^[0-9]{2,15}$")
#: Channel variable on the supervisor's leg: which audit row it belongs to.
MONITOR_VAR = f"{cv.PREFIX}MONITOR"
RING_TIMEOUT = 30.0


class MonitorError(Exception):
    """A monitoring request that cannot be carried out; `error_id` for the API."""

    def __init__(self, status: int, error_id: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_id = error_id


class MonitorSession(Base):
    """Audit row: one supervisor monitoring request and what became of it."""

    __tablename__ = "monitor_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user: Mapped[str] = mapped_column(String(128), index=True)
    role: Mapped[str] = mapped_column(String(16))
    mode: Mapped[str] = mapped_column(String(16))
    linkedid: Mapped[str] = mapped_column(String(64), index=True)
    agent: Mapped[str | None] = mapped_column(String(64))
    agent_channel: Mapped[str] = mapped_column(String(128))
    supervisor_endpoint: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    #: ringing | answered | no_answer | busy | congestion | failed | unknown | not_sent
    outcome: Mapped[str] = mapped_column(String(16), default="ringing")
    spy_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    spy_stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Where the monitoring starts on the call's recording (seconds from its start).
    recording_offset_seconds: Mapped[float | None] = mapped_column(Float)
    recording: Mapped[str | None] = mapped_column(String(512))

    def view(self) -> dict[str, Any]:
        def ts(v: datetime | None) -> float | None:
            return None if v is None else v.timestamp()

        return {"id": self.id, "user": self.user, "role": self.role, "mode": self.mode, "linkedid": self.linkedid,
                "agent": self.agent, "agent_channel": self.agent_channel,
                "supervisor_endpoint": self.supervisor_endpoint, "requested_at": ts(self.requested_at),
                "outcome": self.outcome, "spy_started_at": ts(self.spy_started_at),
                "spy_stopped_at": ts(self.spy_stopped_at), "recording": self.recording,
                "recording_offset_seconds": self.recording_offset_seconds}


def chanspy_options(mode: str) -> str:
    """ChanSpy options for a monitoring mode (see the module docstring)."""
    if mode not in MODES:
        raise MonitorError(400, "invalid-mode", f"mode must be one of {', '.join(MODES)}")
    return "qES" + _MODE_FLAGS[mode]


def pick_agent_channel(tracker: CallTracker, linkedid: str) -> tuple[str, str | None]:
    """The live channel of the agent on the call (ChanSpy target) and the agent's name."""
    call = tracker.calls.get(linkedid)
    if call is None:
        raise MonitorError(404, "call-not-found", f"no live call with linkedid {linkedid}")
    if call.agent is None or not call.agent_interface:
        raise MonitorError(409, "no-agent-on-call", "the call is not connected to an agent yet")
    prefix = f"{call.agent_interface}-"
    names = sorted(tracker.channels[u].name for u in call.channels
                   if u in tracker.channels and tracker.channels[u].name.startswith(prefix))
    if not names:
        raise MonitorError(409, "agent-channel-gone", f"no live channel of {call.agent_interface} on the call")
    return names[-1], call.agent


@dataclass
class _Pending:
    session_id: int
    linkedid: str
    started: asyncio.Future[float]


class Monitor:
    """Starts ChanSpy sessions and keeps their audit trail."""

    def __init__(self, ami: AMIClient, tracker: CallTracker, sessions: sessionmaker[Session], *,
                 on_mark: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.ami = ami
        self.tracker = tracker
        self.sessions = sessions
        self.on_mark = on_mark
        self.originator = Originator(ami, max_concurrent=10)
        self._recording_started: dict[str, float] = {}
        self._by_spyer_uniqueid: dict[str, _Pending] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sub: Subscription | None = None
        self._reader: asyncio.Task[None] | None = None
        self._spy_events: asyncio.Queue[tuple[str, str, str, float, str | None]] = asyncio.Queue()

    async def start(self) -> None:
        self._sub = self.ami.subscribe()
        self._reader = asyncio.create_task(self._read(self._sub), name="monitor-events")
        writer = asyncio.create_task(self._write_spy_events(), name="monitor-writer")
        self._tasks.add(writer)

    async def stop(self) -> None:
        if self._sub is not None:
            self._sub.close()
        for task in [*self._tasks, *([self._reader] if self._reader else [])]:
            task.cancel()
        await asyncio.gather(*self._tasks, *([self._reader] if self._reader else []), return_exceptions=True)
        await self.originator.aclose()

    def on_call_event(self, event: CallEvent) -> None:
        """Tracker subscriber: remember when each call's recording started."""
        if event.kind == "recording_started":
            self._recording_started[event.linkedid] = event.at
        elif event.kind == "call_ended":
            self._recording_started.pop(event.linkedid, None)

    # -- the action ----------------------------------------------------------------------
    async def request(self, *, user: str, role: str, mode: str, linkedid: str, endpoint: str) -> dict[str, Any]:
        """Audit, then ring the supervisor's endpoint into ChanSpy on the agent's channel.
        Returns the audit row at once; the outcome is filled in when the phone answers."""
        options = chanspy_options(mode)
        if not ENDPOINT.match(endpoint):
            raise MonitorError(400, "invalid-endpoint", "endpoint must be the supervisor's extension (digits)")
        agent_channel, agent = pick_agent_channel(self.tracker, linkedid)
        if endpoint == agent:
            raise MonitorError(400, "invalid-endpoint", "the supervisor's endpoint is the agent's own phone")
        row = await asyncio.to_thread(self._audit, user, role, mode, linkedid, agent, agent_channel, endpoint)
        request = OriginateRequest(
            channel=f"PJSIP/{endpoint}", application="ChanSpy", data=f"{agent_channel},{options}",
            caller_id=f'"{mode} {agent or ""}" <{endpoint}>', timeout_s=RING_TIMEOUT,
            # HOTLINE_ORIGIN marks the supervisor's leg as ours, not customer traffic.
            variables={MONITOR_VAR: str(row["id"]), cv.ORIGIN: "monitor"},
        )
        task = asyncio.create_task(self._originate(row["id"], linkedid, request), name=f"monitor-{row['id']}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._mark(linkedid, {"kind": "monitor_requested", **row})
        return row

    async def wait_outcome(self, session_id: int, timeout: float = RING_TIMEOUT + 10) -> dict[str, Any] | None:
        """Until the audit row has its outcome (tests, the API's `wait`)."""
        deadline = time.monotonic() + timeout
        for task in list(self._tasks):
            if task.get_name() == f"monitor-{session_id}":
                with contextlib.suppress(asyncio.TimeoutError, Exception):
                    await asyncio.wait_for(asyncio.shield(task), max(0.0, deadline - time.monotonic()))
        return await asyncio.to_thread(self.get, session_id)

    async def _originate(self, session_id: int, linkedid: str, request: OriginateRequest) -> None:
        result: OriginateResult = await self.originator.originate(request)
        await asyncio.to_thread(self._set_outcome, session_id, result.outcome)
        if result.outcome != "answered":
            log.warning("monitor session %s: supervisor leg %s (%s)", session_id, result.outcome, result.message)

    # -- AMI events: exact spy start/stop --------------------------------------------------
    async def _read(self, sub: Subscription) -> None:
        async for event in sub:
            try:
                self._on_event(event)
            except Exception:  # never stop reading because of one odd event
                log.exception("monitor: event %s", event.name)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, ChanSpyStart | ChanSpyStop) and event.spyee is not None:
            spyee = event.spyee
            call = self.tracker.calls.get(spyee.linkedid) or self.tracker.call(spyee.linkedid)
            if call is None:
                return
            at = _stamp(event)
            kind = "monitor_started" if isinstance(event, ChanSpyStart) and not isinstance(event, ChanSpyStop) \
                else "monitor_stopped"
            # One writer, in event order: a stop is never stored before its start.
            self._spy_events.put_nowait((call.linkedid, spyee.channel, kind, at, call.recording))

    async def _write_spy_events(self) -> None:
        while True:
            item = await self._spy_events.get()
            try:
                await asyncio.to_thread(self._record_spy, *item)
            except Exception:
                log.exception("monitor: storing %s failed", item[2])

    def _record_spy(self, linkedid: str, spyee_channel: str, kind: str, at: float, recording: str | None) -> None:
        """The open audit row for this call and agent channel gets its start/stop time."""
        with self.sessions.begin() as s:
            q = (select(MonitorSession).where(MonitorSession.linkedid == linkedid,
                                              MonitorSession.agent_channel == spyee_channel)
                 .order_by(MonitorSession.id.desc()))
            rows = list(s.scalars(q))
            if kind == "monitor_started":
                row = next((r for r in rows if r.spy_started_at is None), None)
                if row is None:
                    return
                row.spy_started_at = datetime.fromtimestamp(at, UTC)
                rec_start = self._recording_started.get(linkedid)
                row.recording = recording
                if rec_start is not None:
                    row.recording_offset_seconds = round(at - rec_start, 3)
            else:
                row = next((r for r in rows if r.spy_started_at is not None and r.spy_stopped_at is None), None)
                if row is None:
                    return
                row.spy_stopped_at = datetime.fromtimestamp(at, UTC)
            view = row.view()
        if self.on_mark is not None:
            self.on_mark(linkedid, {"kind": kind, **view})

    # -- storage ---------------------------------------------------------------------------
    def _audit(self, user: str, role: str, mode: str, linkedid: str, agent: str | None, channel: str,
               endpoint: str) -> dict[str, Any]:
        with self.sessions.begin() as s:
            row = MonitorSession(user=user, role=role, mode=mode, linkedid=linkedid, agent=agent,
                                 agent_channel=channel, supervisor_endpoint=endpoint,
                                 requested_at=datetime.now(UTC), outcome="ringing")
            s.add(row)
            s.flush()
            return row.view()

    def _set_outcome(self, session_id: int, outcome: str) -> None:
        with self.sessions.begin() as s:
            row = s.get(MonitorSession, session_id)
            if row is not None:
                row.outcome = outcome

    def get(self, session_id: int) -> dict[str, Any] | None:
        with self.sessions() as s:
            row = s.get(MonitorSession, session_id)
            return None if row is None else row.view()

    def for_call(self, linkedid: str) -> list[dict[str, Any]]:
        with self.sessions() as s:
            q = select(MonitorSession).where(MonitorSession.linkedid == linkedid).order_by(MonitorSession.id)
            return [r.view() for r in s.scalars(q)]

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.sessions() as s:
            q = select(MonitorSession).order_by(MonitorSession.id.desc()).limit(limit)
            return [r.view() for r in s.scalars(q)]

    def _mark(self, linkedid: str, data: dict[str, Any]) -> None:
        if self.on_mark is not None:
            self.on_mark(linkedid, data)


def _stamp(event: Event) -> float:
    raw = event.raw.get("Timestamp")
    try:
        return float(raw) if raw else time.time()
    except ValueError:
        return time.time()


# -- REST ---------------------------------------------------------------------------------
MONITOR: web.AppKey[Monitor] = web.AppKey("monitor", Monitor)


@requires("supervisor", "admin")
async def post_monitor(request: web.Request) -> web.Response:
    """POST /monitor {"linkedid", "mode": listen|whisper|barge, "endpoint": supervisor's extension}."""
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise APIError(400, "invalid-json", "the request body must be a JSON object")
    fields = {k: str(body.get(k) or "") for k in ("linkedid", "mode", "endpoint")}
    bad = [k for k in fields if not isinstance(body.get(k), str) or not fields[k]]
    if bad:
        raise APIError(400, "invalid-monitor-request", f"missing or not text: {', '.join(bad)}", {"fields": bad})
    principal = principal_of(request)
    try:
        row = await request.app[MONITOR].request(user=principal.user, role=principal.role, mode=fields["mode"],
                                                 linkedid=fields["linkedid"], endpoint=fields["endpoint"])
    except MonitorError as exc:
        raise APIError(exc.status, exc.error_id, str(exc), {"linkedid": fields["linkedid"]}) from None
    if body.get("wait"):
        row = await request.app[MONITOR].wait_outcome(row["id"]) or row
    return web.json_response(row, status=202)


@requires("supervisor", "admin")
async def list_monitor_sessions(request: web.Request) -> web.Response:
    rows = await asyncio.to_thread(request.app[MONITOR].recent)
    return web.json_response({"sessions": rows})


@requires("supervisor", "qa", "admin")
async def call_monitoring(request: web.Request) -> web.Response:
    """The monitoring marks on one call's recording timeline."""
    linkedid = request.match_info["linkedid"]
    rows = await asyncio.to_thread(request.app[MONITOR].for_call, linkedid)
    return web.json_response({"linkedid": linkedid, "sessions": rows})


def add_routes(app: web.Application, monitor: Monitor) -> None:
    app[MONITOR] = monitor
    app.router.add_post("/monitor", post_monitor)
    app.router.add_get("/monitor/sessions", list_monitor_sessions)
    app.router.add_get("/calls/{linkedid}/monitoring", call_monitoring)
