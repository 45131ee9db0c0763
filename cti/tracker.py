"""Call state derived from AMI events: a pure reducer behind one event table.

`CallTracker.feed(event)` updates calls (by Linkedid), channels, queue entries and
queue members, and returns high-level call events (call started, IVR decided,
queue joined, agent ringing/answered, call ended ...). The same code runs on the
live AMI stream and on recorded fixtures; it never guesses: a fact comes from an
event or from a resync list, and events for channels it never saw are tolerated
(a replay may start mid-call, a reconnect may lose events).

Times come from the events' `Timestamp` header (manager.conf timestampevents), so
a replay computes the same durations as the live run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cti import channel_vars as cv
from cti.ami.events import ChannelInfo, Event


@dataclass
class Channel:
    uniqueid: str
    linkedid: str
    name: str
    state: str = ""
    caller_num: str = ""
    caller_name: str = ""
    created_at: float = 0.0


@dataclass
class Call:
    """One call as the hotline sees it: every channel sharing a Linkedid."""

    linkedid: str
    started_at: float
    caller_num: str = ""
    caller_name: str = ""
    dialed: str = ""
    channels: set[str] = field(default_factory=set)
    menu_choice: str | None = None
    route_reason: str | None = None
    ivr_action: str | None = None
    ivr_target: str | None = None
    queue: str | None = None
    queue_joined_at: float | None = None
    queue_left_at: float | None = None
    queue_position: int | None = None
    abandoned: bool = False
    ringing: dict[str, str] = field(default_factory=dict)  # member name -> interface
    agent: str | None = None
    agent_interface: str | None = None
    agent_connected_at: float | None = None
    wait_seconds: float | None = None
    talk_seconds: float | None = None
    no_answer_agents: list[str] = field(default_factory=list)
    transfers: list[dict[str, str]] = field(default_factory=list)
    recording: str | None = None
    recording_uniqueid: str | None = None
    test_tag: str | None = None
    agi_failed: bool = False
    ended_at: float | None = None
    hangup_cause: int | None = None
    hangup_cause_txt: str = ""
    outcome: str | None = None

    @property
    def duration_seconds(self) -> float | None:
        return None if self.ended_at is None else round(self.ended_at - self.started_at, 3)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (REST, websocket, storage)."""
        return {
            "linkedid": self.linkedid,
            "caller_num": self.caller_num,
            "caller_name": self.caller_name,
            "dialed": self.dialed,
            "started_at": self.started_at,
            "menu_choice": self.menu_choice,
            "route_reason": self.route_reason,
            "queue": self.queue,
            "queue_position": self.queue_position,
            "queue_joined_at": self.queue_joined_at,
            "agent": self.agent,
            "agent_interface": self.agent_interface,
            "agent_connected_at": self.agent_connected_at,
            "wait_seconds": self.wait_seconds,
            "talk_seconds": self.talk_seconds,
            "no_answer_agents": list(self.no_answer_agents),
            "transfers": list(self.transfers),
            "recording": self.recording,
            "test_tag": self.test_tag,
            "agi_failed": self.agi_failed,
            "ended_at": self.ended_at,
            "duration_seconds": self.duration_seconds,
            "hangup_cause": self.hangup_cause,
            "hangup_cause_txt": self.hangup_cause_txt,
            "outcome": self.outcome,
            "live": self.ended_at is None,
        }


@dataclass
class QueueMember:
    queue: str
    name: str
    interface: str
    status: int = 0
    paused: bool = False
    in_call: bool = False
    calls_taken: int = 0


@dataclass(frozen=True, slots=True)
class CallEvent:
    """A high-level fact about a call, for subscribers (websocket, storage, reports)."""

    kind: str  # call_started | ivr_decided | queue_joined | agent_ringing | agent_no_answer |
    #            agent_answered | queue_abandoned | transferred | recording_started | call_ended
    linkedid: str
    at: float
    call: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)


class CallTracker:
    """Pure reducer: events in, state and CallEvents out. No I/O, no clock unless asked."""

    def __init__(self, clock: Callable[[], float] = time.time, keep_finished: int = 1000) -> None:
        self.clock = clock
        self.keep_finished = keep_finished
        self.calls: dict[str, Call] = {}
        self.finished: dict[str, Call] = {}
        self.channels: dict[str, Channel] = {}
        self.members: dict[tuple[str, str], QueueMember] = {}
        self.events_seen = 0
        self.needs_resync = True
        self._handlers: dict[str, Callable[[Event, float], list[CallEvent]]] = {
            "FullyBooted": self._on_fully_booted,
            "Newchannel": self._on_newchannel,
            "Newstate": self._on_newstate,
            "NewCallerid": self._on_newcallerid,
            "VarSet": self._on_varset,
            "QueueCallerJoin": self._on_queue_join,
            "QueueCallerLeave": self._on_queue_leave,
            "QueueCallerAbandon": self._on_queue_abandon,
            "AgentCalled": self._on_agent_called,
            "AgentRingNoAnswer": self._on_agent_no_answer,
            "AgentConnect": self._on_agent_connect,
            "AgentComplete": self._on_agent_complete,
            "BlindTransfer": self._on_blind_transfer,
            "AttendedTransfer": self._on_attended_transfer,
            "QueueMemberAdded": self._on_member,
            "QueueMemberStatus": self._on_member,
            "QueueMemberPause": self._on_member,
            "QueueMember": self._on_member,
            "QueueMemberRemoved": self._on_member_removed,
            "Hangup": self._on_hangup,
        }

    # -- entry points --------------------------------------------------------------
    def feed(self, event: Event) -> list[CallEvent]:
        self.events_seen += 1
        handler = self._handlers.get(event.name)
        if handler is None:
            return []
        return handler(event, self._time(event))

    def feed_all(self, events: Iterable[Event]) -> list[CallEvent]:
        out: list[CallEvent] = []
        for event in events:
            out.extend(self.feed(event))
        return out

    def resync(self, live_channels: Iterable[ChannelInfo], at: float | None = None) -> list[CallEvent]:
        """Reconcile with Asterisk's channel list (CoreShowChannels) after a (re)connect.

        Channels we track that Asterisk no longer has ended while we were not
        listening: their calls end with outcome "lost" unless a later fact says more.
        Channels Asterisk has that we never saw are adopted.
        """
        now = self.clock() if at is None else at
        live = {c.uniqueid: c for c in live_channels}
        out: list[CallEvent] = []
        for uniqueid in [u for u in self.channels if u not in live]:
            out.extend(self._remove_channel(uniqueid, now, cause=None, cause_txt="ended while AMI was away"))
        for info in live.values():
            if info.uniqueid not in self.channels:
                out.extend(self._adopt(info, now))
        self.needs_resync = False
        return out

    def call(self, linkedid: str) -> Call | None:
        return self.calls.get(linkedid) or self.finished.get(linkedid)

    # -- helpers -------------------------------------------------------------------
    def _time(self, event: Event) -> float:
        stamp = event.raw.get("Timestamp")
        if stamp:
            try:
                return float(stamp)
            except ValueError:
                pass
        return self.clock()

    def _emit(self, kind: str, call: Call, at: float, **data: Any) -> list[CallEvent]:
        return [CallEvent(kind, call.linkedid, at, call.to_dict(), data)]

    def _adopt(self, info: ChannelInfo, at: float) -> list[CallEvent]:
        """Start tracking a channel (and its call) we learn about late."""
        linkedid = info.linkedid or info.uniqueid
        self.channels[info.uniqueid] = Channel(
            info.uniqueid, linkedid, info.channel, info.channel_state_desc,
            info.caller_id_num, info.caller_id_name, at,
        )
        out: list[CallEvent] = []
        call = self.calls.get(linkedid)
        if call is None:
            call = Call(linkedid, at, caller_num=_clean(info.caller_id_num), caller_name=_clean(info.caller_id_name))
            self.calls[linkedid] = call
            out += self._emit("call_started", call, at)
        call.channels.add(info.uniqueid)
        return out

    def _call_of(self, info: ChannelInfo | None, at: float) -> Call | None:
        if info is None or not info.uniqueid:
            return None
        if info.uniqueid not in self.channels:
            self._adopt(info, at)
        linkedid = self.channels[info.uniqueid].linkedid
        return self.calls.get(linkedid)

    # -- handlers (the event table above) -------------------------------------------
    def _on_fully_booted(self, event: Event, at: float) -> list[CallEvent]:
        # Sent on every login and after an Asterisk restart: our view may be stale
        # until the owner resyncs from CoreShowChannels.
        self.needs_resync = True
        return []

    def _on_newchannel(self, event: Event, at: float) -> list[CallEvent]:
        info: ChannelInfo | None = getattr(event, "channel", None)
        if info is None or info.uniqueid in self.channels:
            return []
        out = self._adopt(info, at)
        call = self.calls[self.channels[info.uniqueid].linkedid]
        if info.uniqueid == call.linkedid and not call.dialed:
            call.dialed = info.exten
        return out

    def _on_newstate(self, event: Event, at: float) -> list[CallEvent]:
        info: ChannelInfo | None = getattr(event, "channel", None)
        if info is not None and info.uniqueid in self.channels:
            self.channels[info.uniqueid].state = info.channel_state_desc
        return []

    def _on_newcallerid(self, event: Event, at: float) -> list[CallEvent]:
        info: ChannelInfo | None = getattr(event, "channel", None)
        call = self._call_of(info, at)
        if call is not None and info is not None and info.uniqueid == call.linkedid:
            call.caller_num = _clean(info.caller_id_num)
            call.caller_name = _clean(info.caller_id_name)
        return []

    def _on_varset(self, event: Event, at: float) -> list[CallEvent]:
        # Set(__NAME=...) (inherited to child channels) is reported as "__NAME".
        name: str = (getattr(event, "variable", "") or "").lstrip("_")
        if not name.startswith(cv.PREFIX):
            return []
        value: str = getattr(event, "value", "") or ""
        info: ChannelInfo | None = getattr(event, "channel", None)
        call = self._call_of(info, at)
        if call is None or info is None:
            return []
        if name == cv.CHOICE:
            call.menu_choice = value or None
        elif name == cv.ROUTE_REASON:
            call.route_reason = value or None
        elif name == cv.TARGET:
            call.ivr_target = value or None
        elif name == cv.ACTION:
            call.ivr_action = value or None
            return self._emit("ivr_decided", call, at, action=value, target=call.ivr_target)
        elif name == cv.RECORDING and value and call.recording is None:
            call.recording = value
            call.recording_uniqueid = info.uniqueid
            return self._emit("recording_started", call, at, base=value, uniqueid=info.uniqueid)
        elif name == cv.TEST_TAG:
            call.test_tag = value or None
        elif name == cv.DIALED and info.uniqueid == call.linkedid:
            call.dialed = value
        elif name == cv.AGI_FAILED:
            call.agi_failed = value == "1"
        return []

    def _on_queue_join(self, event: Event, at: float) -> list[CallEvent]:
        call = self._call_of(getattr(event, "channel", None), at)
        if call is None:
            return []
        call.queue = getattr(event, "queue", None) or call.queue
        call.queue_joined_at = at
        call.queue_position = _int(getattr(event, "position", None))
        return self._emit("queue_joined", call, at, queue=call.queue, position=call.queue_position)

    def _on_queue_leave(self, event: Event, at: float) -> list[CallEvent]:
        call = self._call_of(getattr(event, "channel", None), at)
        if call is not None:
            call.queue_left_at = at
        return []

    def _on_queue_abandon(self, event: Event, at: float) -> list[CallEvent]:
        call = self._call_of(getattr(event, "channel", None), at)
        if call is None:
            return []
        call.abandoned = True
        call.wait_seconds = _float(getattr(event, "hold_time", None))
        return self._emit("queue_abandoned", call, at, queue=call.queue, wait_seconds=call.wait_seconds)

    def _member_name(self, event: Event) -> str:
        return str(getattr(event, "member_name", "") or getattr(event, "interface", "") or "")

    def _on_agent_called(self, event: Event, at: float) -> list[CallEvent]:
        call = self._call_of(getattr(event, "channel", None), at)
        if call is None:
            return []
        member = self._member_name(event)
        interface = str(getattr(event, "interface", "") or "")
        call.ringing[member] = interface
        dest: ChannelInfo | None = getattr(event, "dest", None)
        return self._emit("agent_ringing", call, at, agent=member, interface=interface,
                          queue=getattr(event, "queue", None), agent_channel=dest.channel if dest else None)

    def _on_agent_no_answer(self, event: Event, at: float) -> list[CallEvent]:
        call = self._call_of(getattr(event, "channel", None), at)
        if call is None:
            return []
        member = self._member_name(event)
        call.ringing.pop(member, None)
        call.no_answer_agents.append(member)
        return self._emit("agent_no_answer", call, at, agent=member)

    def _on_agent_connect(self, event: Event, at: float) -> list[CallEvent]:
        call = self._call_of(getattr(event, "channel", None), at)
        if call is None:
            return []
        member = self._member_name(event)
        others = [m for m in call.ringing if m != member]
        call.ringing.clear()
        call.agent = member
        call.agent_interface = str(getattr(event, "interface", "") or "") or None
        call.agent_connected_at = at
        call.wait_seconds = _float(getattr(event, "hold_time", None))
        return self._emit("agent_answered", call, at, agent=member, queue=getattr(event, "queue", None),
                          stopped_ringing=others)

    def _on_agent_complete(self, event: Event, at: float) -> list[CallEvent]:
        call = self._call_of(getattr(event, "channel", None), at)
        if call is not None:
            call.talk_seconds = _float(getattr(event, "talk_time", None))
        return []

    def _on_blind_transfer(self, event: Event, at: float) -> list[CallEvent]:
        info = getattr(event, "transferer", None)
        call = self._call_of(info, at)
        if call is None:
            return []
        transfer = {"transfer_kind": "blind", "to": str(getattr(event, "extension", "") or ""),
                    "result": str(getattr(event, "result", "") or "")}
        call.transfers.append(transfer)
        return self._emit("transferred", call, at, **transfer)

    def _on_attended_transfer(self, event: Event, at: float) -> list[CallEvent]:
        info = getattr(event, "orig_transferer", None) or getattr(event, "transferer", None)
        call = self._call_of(info, at)
        if call is None:
            return []
        transfer = {"transfer_kind": "attended", "result": str(getattr(event, "result", "") or "")}
        call.transfers.append(transfer)
        return self._emit("transferred", call, at, **transfer)

    def _on_member(self, event: Event, at: float) -> list[CallEvent]:
        queue = str(getattr(event, "queue", "") or "")
        name = self._member_name(event)
        if not queue or not name:
            return []
        member = self.members.get((queue, name)) or QueueMember(queue, name, str(getattr(event, "interface", "") or ""))
        status = getattr(event, "status", None)
        if status is not None:
            member.status = _int(status) or 0
        paused = getattr(event, "paused", None)
        if paused is not None:
            member.paused = bool(paused) if not isinstance(paused, str) else paused == "1"
        in_call = getattr(event, "in_call", None)
        if in_call is not None:
            member.in_call = str(in_call) in ("1", "True", "true")
        calls_taken = getattr(event, "calls_taken", None)
        if calls_taken is not None:
            member.calls_taken = _int(calls_taken) or 0
        self.members[(queue, name)] = member
        return []

    def _on_member_removed(self, event: Event, at: float) -> list[CallEvent]:
        self.members.pop((str(getattr(event, "queue", "") or ""), self._member_name(event)), None)
        return []

    def _on_hangup(self, event: Event, at: float) -> list[CallEvent]:
        info: ChannelInfo | None = getattr(event, "channel", None)
        if info is None:
            return []
        return self._remove_channel(info.uniqueid, at, _int(getattr(event, "cause", None)),
                                    str(getattr(event, "cause_txt", "") or ""))

    def _remove_channel(self, uniqueid: str, at: float, cause: int | None, cause_txt: str) -> list[CallEvent]:
        channel = self.channels.pop(uniqueid, None)
        if channel is None:
            return []
        call = self.calls.get(channel.linkedid)
        if call is None:
            return []
        call.channels.discard(uniqueid)
        if uniqueid == call.linkedid or call.hangup_cause is None:
            call.hangup_cause = cause
            call.hangup_cause_txt = cause_txt
        if call.channels:
            return []
        call.ended_at = at
        call.outcome = self._outcome(call, lost=cause is None)
        if call.agent_connected_at is not None and call.talk_seconds is None:
            call.talk_seconds = round(at - call.agent_connected_at, 3)
        if call.queue_joined_at is not None and call.wait_seconds is None:
            end = call.agent_connected_at or call.queue_left_at or at
            call.wait_seconds = round(end - call.queue_joined_at, 3)
        del self.calls[call.linkedid]
        self.finished[call.linkedid] = call
        while len(self.finished) > self.keep_finished:
            self.finished.pop(next(iter(self.finished)))
        return self._emit("call_ended", call, at, outcome=call.outcome)

    @staticmethod
    def _outcome(call: Call, lost: bool) -> str:
        if call.agent is not None:
            return "answered"
        if call.abandoned:
            return "abandoned"
        if call.queue is not None:
            return "lost" if lost else "queue_timeout"
        if lost:
            return "lost"
        return "ivr_hangup" if call.ivr_action is None else "ended_after_ivr"


def _clean(text: str) -> str:
    """Asterisk shows an absent caller ID as '<unknown>'."""
    return "" if text in ("<unknown>", "") else text


def _int(value: object) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def _float(value: object) -> float | None:
    try:
        return float(str(value))
    except (TypeError, ValueError):
        return None


__all__ = ["Call", "CallEvent", "CallTracker", "Channel", "QueueMember"]
