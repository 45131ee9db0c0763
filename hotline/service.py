"""The running service: the one place that wires cti, ivr, recordings and dialplans.

Data flow: AMI events -> CallTracker (synchronously, in wire order, in the AMI
reader) -> CallEvents -> an ordered writer task (database, recording index, VAD
analysis off the event loop) and the live subscribers. FastAGI runs the hotline
flow for each call; the dialplan then routes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from cti.ami.client import AMIClient, AMIError
from cti.ami.events import Event
from cti.auth import Principal, TokenStore
from cti.customers.store import CustomerStore
from cti.db import CallRecord, create_schema, make_engine, read_session_factory, session_factory, upsert_call
from cti.screenpop import ScreenPop, call_summary
from cti.stream import EventHub
from cti.tracker import Call, CallEvent, CallTracker
from dialplans.compiler import AMI_EVENTS
from hotline.dialplan_versions import DialplanVersion
from hotline.qa import attach_qa
from hotline.settings import Settings
from hotline.smoke import SmokeRegistry
from ivr.agi.server import AGIChannel, FastAGIServer
from ivr.engine import FlowRunner, NodeStats, publish_outcome
from ivr.model import Flow
from ivr.routing import TrackerQueueLoad, store_lookup
from ivr.survey.component import SurveyComponent
from recordings.catalog import RecordingSet
from recordings.index import Recording
from recordings.recorder import Recorder, RecorderConfig

log = logging.getLogger(__name__)

LEGS = ("mix", "rx", "tx")


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


class HotlineService:
    """Owns the background parts; started and stopped by the aiohttp app (cleanup_ctx)."""

    def __init__(self, settings: Settings, flow: Flow) -> None:
        self.settings = settings
        self.flow = flow
        self.node_stats = NodeStats()
        self.runner = FlowRunner(flow, self.node_stats)
        # Our manager.conf filter (dialplans.compiler.AMI_EVENTS) carries HangupRequest,
        # which tells a queue timeout from an abandon from the first call on.
        self.tracker = CallTracker(hangup_requests="HangupRequest" in AMI_EVENTS)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(settings.db_url)
        # Import-for-side-effect: recording tables live on the shared metadata.
        _ = Recording, RecordingSet, DialplanVersion
        create_schema(self.engine)
        self.sessions: sessionmaker[Session] = session_factory(self.engine)
        self.db_write_lock = threading.Lock()  # one database writer thread at a time (SQLite)
        self.recorder = Recorder(
            self.sessions, settings.recordings_dir,
            RecorderConfig(dead_air_seconds=settings.recordings_dead_air_seconds,
                           min_free_mb=settings.recordings_min_free_mb, retention=settings.recordings_retention,
                           analysis_workers=settings.recordings_analysis_workers,
                           disk_check_seconds=settings.recordings_disk_check_seconds),
            lookup_customer=self.customer_id_of,
            on_disk_alert=lambda alert: self.hub.publish("status", {**self.freshness(), **alert}),
            write_lock=self.db_write_lock,
        )
        self.recordings = self.recorder.index
        self.tokens = TokenStore(self.sessions)
        self.customers = CustomerStore(read_session_factory(self.engine), settings.default_region,
                                       write_sessions=self.sessions)
        # The IVR's lookup node and routing rules: the customer store (in a worker thread)
        # and a read-only queue-load view of the tracker. Tests swap `runner.clock`.
        self.runner.lookup = store_lookup(self.customers)
        self.runner.queue_load = TrackerQueueLoad(self.tracker)
        # Draft mode (hotline.dialplan_publish): the draft flow runs for test callers only.
        self.draft_runner: FlowRunner | None = None
        self.draft_callers: frozenset[str] = frozenset()
        self.smoke = SmokeRegistry()
        self.hub = EventHub()
        self.screenpop = ScreenPop(self.hub, self.lookup_caller)
        self.ami = AMIClient(
            settings.ami_host, settings.ami_port, settings.ami_username, settings.ami_secret,
            on_event=self._on_ami_event, on_connected=self._on_ami_connected,
            on_disconnected=self._on_ami_disconnected,
        )
        self.surveys = SurveyComponent(self.sessions, settings.recordings_dir, default_region=settings.default_region)
        self.agi = FastAGIServer({"hotline": self._hotline_call, "survey": self.surveys.agi_handler},
                                 host=settings.agi_host, port=settings.agi_port)
        self._writes: asyncio.Queue[tuple[Callable[..., Any], tuple[Any, ...]]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._subscribers: list[Callable[[CallEvent], None]] = []
        self.started_at = time.time()
        self.resyncs = 0
        self._resync: asyncio.Task[None] | None = None
        self._wrapup_timer: asyncio.TimerHandle | None = None
        # QA test calls and live monitoring (hotline.qa); they subscribe to call events.
        self.testcalls, self.monitor = attach_qa(self)

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name="hotline-writer")
        await self.recorder.start()
        await self.screenpop.start()
        await self.agi.start()
        await self.monitor.start()
        await self.testcalls.start()
        await self.ami.start()
        if self.settings.survey_dialer:
            file = self.settings.survey_routes
            routes = json.loads(await asyncio.to_thread(Path(file).read_text)) if file else None
            self.surveys.start_dialer(self.ami, routes=routes)

    async def stop(self) -> None:
        await self.surveys.stop()
        await self.testcalls.stop()
        await self.monitor.stop()
        if self._resync is not None:
            self._resync.cancel()
            await asyncio.wait({self._resync})
        if self._wrapup_timer is not None:
            self._wrapup_timer.cancel()
        await self.ami.stop()
        await self.agi.stop()
        await self.screenpop.stop()
        await self.flush()
        await self.recorder.stop()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        self.engine.dispose()

    async def flush(self) -> None:
        """Wait until every queued write has been applied (tests, shutdown)."""
        await self._writes.join()
        await self.recorder.flush()  # recording index writes and their analyses

    def subscribe(self, callback: Callable[[CallEvent], None]) -> Callable[[], None]:
        """Live call events; callbacks must be quick and never block (they queue)."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    # -- AMI -----------------------------------------------------------------------------
    def _on_ami_event(self, event: Event) -> None:
        self.recorder.on_ami_event(event)  # first: a call's Hangup stops its recording before call_ended
        for call_event in self.tracker.feed(event):
            self._dispatch(call_event)
        if event.name == "AgentComplete":
            self._schedule_wrapup_end()
        if event.name == "FullyBooted" and self.ami.ready and (self._resync is None or self._resync.done()):
            # We logged in while Asterisk was still booting (a restart): now it has finished,
            # and what we resynced may be incomplete (the tracker marked itself stale).
            self._resync = asyncio.get_running_loop().create_task(self._resync_after_boot(), name="ami-resync")

    def _schedule_wrapup_end(self) -> None:
        """Asterisk sends nothing when a wrap-up ends: report it at its time."""
        until = self.tracker.next_expiry()
        if until is None:
            return
        if self._wrapup_timer is not None:
            self._wrapup_timer.cancel()
        self._wrapup_timer = asyncio.get_running_loop().call_later(max(0.0, until - time.time()), self._wrapup_ended)

    def _wrapup_ended(self) -> None:
        self._wrapup_timer = None
        for call_event in self.tracker.expire():
            self._dispatch(call_event)
        self._schedule_wrapup_end()

    async def _resync_after_boot(self) -> None:
        try:
            await self._on_ami_connected(self.ami)
        except (AMIError, TimeoutError) as exc:  # the next (re)connect resyncs anyway
            log.warning("resync after FullyBooted failed: %s", exc)

    async def _on_ami_connected(self, client: AMIClient) -> None:
        """Resync before reporting ready: events were lost while we were away."""
        asked_at = self.tracker.events_seen  # events fed while the list comes are newer than it
        _, channels = await client.send_list_action("CoreShowChannels")
        infos = [c for c in (getattr(e, "channel", None) for e in channels) if c is not None]
        for call_event in self.tracker.resync(infos, since=asked_at):
            self._dispatch(call_event)
        _, members = await client.send_list_action("QueueStatus")
        for call_event in self.tracker.feed_all(members):  # agent states, callers already waiting
            self._dispatch(call_event)
        self.resyncs += 1
        self.hub.publish("status", self.freshness())

    def _on_ami_disconnected(self) -> None:
        # Clients must know the picture may be stale until the next resync.
        self.tracker.needs_resync = True
        self.hub.publish("status", self.freshness())

    def freshness(self) -> dict[str, Any]:
        return {"ami_connected": self.ami.connected, "fresh": self.ami.connected and not self.tracker.needs_resync,
                "resyncs": self.resyncs}

    def _dispatch(self, event: CallEvent) -> None:
        self.screenpop.on_call_event(event)
        if event.kind == "call_ended":
            self._queue_write(self._store_finished_call, event)
            ended = self.tracker.call(event.linkedid)  # a voicemail message belongs to the IVR's queue
            self.recorder.on_call_ended(event.call, event.at, message_queue=ended.ivr_target if (
                ended is not None and ended.ivr_action == "voicemail") else None)
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:  # a broken subscriber must not stop call tracking
                log.exception("call event subscriber failed")

    # -- ordered writes (sync SQLAlchemy, run in a worker thread) -----------------------
    def _queue_write(self, fn: Callable[..., Any], *args: Any) -> None:
        self._writes.put_nowait((fn, args))

    async def _write_loop(self) -> None:
        while True:
            fn, args = await self._writes.get()
            try:
                await asyncio.to_thread(self._locked_write, fn, *args)
            except Exception:
                log.exception("storing %s failed", getattr(fn, "__name__", fn))
            finally:
                self._writes.task_done()

    def _locked_write(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self.db_write_lock:
            return fn(*args)

    def _store_finished_call(self, event: CallEvent) -> None:
        call = event.call
        with self.sessions.begin() as session:
            upsert_call(session, call_record_fields(call))
        self._note_contact(call)
        self.surveys.on_call_ended(call)  # sampled into call_ended survey campaigns

    def _note_contact(self, call: dict[str, Any]) -> None:
        """The call joins the caller's contact history (one clear owner of the number only)."""
        if call.get("test_tag") or not call.get("caller_num"):
            return
        lookup = self.customers.lookup(str(call["caller_num"]))
        if lookup.status != "match":
            return
        summary = f"hotline {call.get('outcome')}: queue {call.get('queue') or '-'}, agent {call.get('agent') or '-'}"
        self.customers.add_contact(lookup.cards[0].id, "call", _utc(call["ended_at"]) or datetime.now(UTC),
                                   linkedid=call["linkedid"], summary=summary)

    def customer_id_of(self, number: str) -> str | None:
        """Blocking: the one customer owning a number (recordings are searchable by customer)."""
        lookup = self.customers.lookup(number)
        return str(lookup.cards[0].id) if lookup.status == "match" else None

    # -- FastAGI -------------------------------------------------------------------------
    async def _hotline_call(self, channel: AGIChannel) -> None:
        env = channel.env
        # The caller ID is attacker-controlled text; it goes out as one quoted AGI argument.
        await channel.verbose(f"hotline call from {env.caller_id_name} <{env.caller_id_num}>")
        # Chosen once per call: a flow published mid-call never changes this call's flow.
        runner = self.runner_for(env.caller_id_num)
        if self.smoke.pending:
            channel = await self.smoke.attach(channel, runner.flow)
        outcome = await runner.run(channel)
        await publish_outcome(channel, outcome)

    def runner_for(self, caller_num: str) -> FlowRunner:
        """The draft's runner for its test callers while a draft is published, else the live one."""
        draft = self.draft_runner
        if draft is not None and caller_num in self.draft_callers:
            return draft
        return self.runner

    def swap_flow(self, flow: Flow) -> Flow:
        """Make `flow` live for calls that start from now on; returns the previous flow.

        One attribute assignment on the event loop: a call picks its runner once at its
        start, so calls in progress finish on the flow they began with.
        """
        previous = self.flow
        self.runner = self.runner.replaced(flow)
        self.flow = flow
        return previous

    def set_draft(self, flow: Flow | None, callers: frozenset[str] = frozenset()) -> tuple[Flow | None, frozenset[str]]:
        """Publish (or withdraw, with None) a draft flow for `callers`; returns the previous draft."""
        previous = (None if self.draft_runner is None else self.draft_runner.flow, self.draft_callers)
        self.draft_runner = None if flow is None else self.runner.replaced(flow)
        self.draft_callers = frozenset(callers) if flow is not None else frozenset()
        return previous

    # -- customers -----------------------------------------------------------------------
    def lookup_caller(self, number: str) -> dict[str, Any]:
        """Blocking (runs in a worker thread): the caller's customer cards for the screen pop."""
        return self.customers.lookup(number).to_dict()

    # -- queries -------------------------------------------------------------------------
    def visible_calls(self, principal: Principal) -> list[dict[str, Any]]:
        return [call_summary(c.to_dict()) for c in self.tracker.calls.values()
                if principal.sees_agent(c.agent) or (principal.role == "agent" and principal.agent in c.ringing)]

    def snapshot(self, principal: Principal) -> dict[str, Any]:
        """What a (re)connecting websocket client needs before live events."""
        return {"calls": self.visible_calls(principal), "queues": self.queues_view(), **self.freshness()}

    def queues_view(self) -> dict[str, Any]:
        queues: dict[str, Any] = {}
        for call in self.tracker.calls.values():
            if call.queue and call.agent is None and call.queue_joined_at is not None and call.queue_left_at is None:
                q = queues.setdefault(call.queue, {"waiting": 0, "longest_wait_since": None, "members": []})
                q["waiting"] += 1
                since = q["longest_wait_since"]
                q["longest_wait_since"] = call.queue_joined_at if since is None else min(since, call.queue_joined_at)
        for member in self.tracker.members.values():
            q = queues.setdefault(member.queue, {"waiting": 0, "longest_wait_since": None, "members": []})
            q["members"].append(member_view(member))
        return queues

    def agents_view(self) -> dict[str, Any]:
        agents: dict[str, Any] = {}
        for member in self.tracker.members.values():
            entry = agents.setdefault(member.name, {"agent": member.name, "queues": [], **member_view(member)})
            entry["queues"].append(member.queue)
        for name, state in self.tracker.agents().items():  # over all their queues (pause is per queue)
            if name in agents:
                agents[name]["state"] = state
        return agents

    def call_view(self, linkedid: str) -> dict[str, Any] | None:
        """Live or recently finished call from the tracker, else the stored record."""
        call: Call | None = self.tracker.call(linkedid)
        if call is not None:
            return call.to_dict()
        with self.sessions() as session:
            record = session.get(CallRecord, linkedid)
            return None if record is None else stored_call_view(record)

    def recordings_view(self, linkedid: str) -> list[dict[str, Any]]:
        return [
            {"id": r.id, "leg": r.leg, "path": r.path, "status": r.status, "size_bytes": r.size_bytes,
             "duration_seconds": r.duration_seconds, "has_speech": r.has_speech,
             "speech_seconds": r.speech_seconds}
            for r in self.recordings.for_call(linkedid)
        ]

    def status(self) -> dict[str, Any]:
        last = self.ami.last_event_at
        return {
            "ami": {"connected": self.ami.connected, "ready": self.ami.ready,
                    "resynced": not self.tracker.needs_resync, "resyncs": self.resyncs,
                    "last_event_at": self.ami.last_event_at,
                    "lag_seconds": None if last is None else round(time.time() - last, 3)},
            "agi": {"sessions_active": self.agi.sessions_active, "sessions_total": self.agi.sessions_total,
                    "failures": self.agi.failures},
            "calls": {"live": len(self.tracker.calls), "events_seen": self.tracker.events_seen},
            "writer": {"pending": self._writes.qsize()},
            "surveys": self.surveys.status(),
            "recordings": self.recorder.status(),
            "uptime_seconds": round(time.time() - self.started_at, 1),
        }


def member_view(member: Any) -> dict[str, Any]:
    keys = ("name", "interface", "status", "paused", "paused_reason", "in_call", "calls_taken", "state")
    return {k: getattr(member, k) for k in keys if hasattr(member, k)}


def call_record_fields(call: dict[str, Any]) -> dict[str, Any]:
    """Tracker view -> calls table row."""
    return {
        "linkedid": call["linkedid"],
        "caller_num": call["caller_num"],
        "caller_name": call["caller_name"],
        "dnid": call["dialed"],
        "started_at": _utc(call["started_at"]),
        "answered_at": _utc(call["agent_connected_at"]),
        "ended_at": _utc(call["ended_at"]),
        "menu_choice": call["menu_choice"],
        "route_reason": call["route_reason"],
        "queue": call["queue"],
        "agent": call["agent"],
        "agent_interface": call["agent_interface"],
        "queue_joined_at": _utc(call["queue_joined_at"]),
        "agent_connected_at": _utc(call["agent_connected_at"]),
        "wait_seconds": call["wait_seconds"],
        "talk_seconds": call["talk_seconds"],
        "duration_seconds": call["duration_seconds"],
        "outcome": call["outcome"],
        "hangup_cause": call["hangup_cause"],
        "is_test_call": bool(call["test_tag"]),
        "test_tag": call["test_tag"],
    }


def stored_call_view(record: CallRecord) -> dict[str, Any]:
    def ts(value: datetime | None) -> float | None:
        return None if value is None else value.timestamp()

    return {
        "linkedid": record.linkedid, "caller_num": record.caller_num, "caller_name": record.caller_name,
        "dialed": record.dnid, "started_at": ts(record.started_at), "menu_choice": record.menu_choice,
        "route_reason": record.route_reason, "queue": record.queue, "agent": record.agent,
        "agent_interface": record.agent_interface, "queue_joined_at": ts(record.queue_joined_at),
        "agent_connected_at": ts(record.agent_connected_at), "wait_seconds": record.wait_seconds,
        "talk_seconds": record.talk_seconds, "ended_at": ts(record.ended_at),
        "duration_seconds": record.duration_seconds, "hangup_cause": record.hangup_cause,
        "outcome": record.outcome, "test_tag": record.test_tag, "live": False,
    }
