"""Call state derived from AMI events: a pure reducer behind one event table.

`CallTracker.feed(event)` updates calls (by Linkedid), channels, queue entries, queue
members / agents and transfers, and returns high-level call events (call started,
IVR decided, queue joined / abandoned / timed out, agent ringing / no answer /
answered, transferred, originate result, agent state, call ended ...). The same
code runs on the live AMI stream and on recorded fixtures; it never guesses: a fact
comes from an event or from a resync list, and events for channels it never saw are
tolerated (a replay may start mid-call, a reconnect may lose events). A channel that
hung up stays gone: Asterisk may deliver an event about it after its Hangup (app_queue
sends AgentComplete from its own thread, racing the channel's hangup), and such a late
event must not bring the channel back and keep its call live forever.

Times come from the events' `Timestamp` header (manager.conf timestampevents), so
a replay computes the same durations as the live run.

Agent states, per queue member and per agent: "available" (logged in, idle),
"paused", "ringing", "in_call", "wrap_up" (after a queue call, for the queue's
wrap-up time: Asterisk sends no event when it ends, so it is computed from the
time), "unavailable" (device not registered) and "logged_out" (member removed).
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cti import channel_vars as cv
from cti.ami.events import ChannelInfo, Event, QueueMemberEvent

# AST_DEVICE_* as QueueMemberStatus `Status` reports them.
DEVICE_IN_USE = frozenset({2, 3, 7, 8})  # INUSE, BUSY, RINGINUSE, ONHOLD
DEVICE_RINGING = 6
DEVICE_UNAVAILABLE = frozenset({4, 5})  # INVALID, UNAVAILABLE
GONE_KEPT = 10_000  # hung-up channels remembered, so late events about them are recognised

AGENT_STATES = ("available", "paused", "ringing", "in_call", "wrap_up", "unavailable", "logged_out")

# OriginateResponse `Reason` (the last AST_CONTROL_* of the outbound leg) -> outcome.
ORIGINATE_REASONS: Mapping[int, str] = {0: "failed", 1: "no_answer", 3: "no_answer", 4: "answered",
                                        5: "busy", 8: "congestion"}
# DialEnd `DialStatus` of the outbound leg -> outcome.
DIAL_STATUSES: Mapping[str, str] = {"BUSY": "busy", "NOANSWER": "no_answer", "CANCEL": "no_answer",
                                    "CONGESTION": "congestion", "CHANUNAVAIL": "failed"}
# Q.850 cause of an outbound leg that never answered -> outcome (same names as above).
UNANSWERED_CAUSES: Mapping[int, str] = {17: "busy", 18: "no_answer", 19: "no_answer", 16: "no_answer",
                                        21: "failed", 34: "congestion", 38: "congestion", 41: "congestion",
                                        42: "congestion"}


def originate_outcome(success: bool, reason: int | None, dial_status: str | None = None,
                      cause: int | None = None) -> str:
    """What became of an Originate: answered, busy, no_answer, congestion or failed.

    `Reason` alone is not enough: Asterisk 22 reports a SIP 486 as Reason 0 (its dial
    cause is read before the busy cause is set), while the outbound leg's DialEnd says
    BUSY and its HangupRequest carries cause 17. The most specific fact wins.
    """
    if success:
        return "answered"
    if dial_status and dial_status.upper() in DIAL_STATUSES:
        return DIAL_STATUSES[dial_status.upper()]
    if cause is not None and cause in UNANSWERED_CAUSES:
        return UNANSWERED_CAUSES[cause]
    outcome = ORIGINATE_REASONS.get(reason if reason is not None else 0, "failed")
    # Failure with Reason 4: the far end answered but the call could not go on.
    return "failed" if outcome == "answered" else outcome

_ENDPOINT = re.compile(r"^[A-Za-z]+/(.+?)(?:-[0-9a-f]+)?(?:;\d)?$")


@dataclass
class Channel:
    uniqueid: str
    linkedid: str
    name: str
    state: str = ""
    caller_num: str = ""
    caller_name: str = ""
    created_at: float = 0.0
    hangup_requested: bool = False
    dial_status: str | None = None  # DialEnd status when this channel was the one dialled
    cause: int | None = None  # from HangupRequest, then Hangup
    seen_from: int = 0  # the tracker's event count when it learnt of this channel (see resync)


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
    queue_original_position: int | None = None
    queue_result: str | None = None  # answered | abandoned | timeout
    abandoned: bool = False
    ringing: dict[str, str] = field(default_factory=dict)  # member name -> interface
    agent: str | None = None
    agent_interface: str | None = None
    agent_connected_at: float | None = None
    wait_seconds: float | None = None
    talk_seconds: float | None = None
    no_answer_agents: list[str] = field(default_factory=list)
    transfers: list[dict[str, str]] = field(default_factory=list)
    transferred_to: str | None = None
    consultation_for: str | None = None  # linkedid of the call an attended transfer moved
    recording: str | None = None
    recording_uniqueid: str | None = None
    test_tag: str | None = None
    agi_failed: bool = False
    origin: str | None = None  # HOTLINE_ORIGIN of an outbound call (e.g. "survey")
    originate: dict[str, Any] | None = None  # the OriginateResponse: outcome, reason, channel
    up_at: float | None = None  # the first channel answered (IVR Answer, or the callee of an Originate)
    ended_at: float | None = None
    hangup_cause: int | None = None
    hangup_cause_txt: str = ""
    hangup_by: str | None = None  # caller | customer (outbound) | agent | other | system: who ended it
    hangups: list[dict[str, Any]] = field(default_factory=list)  # per channel: channel, cause, cause_txt
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
            "queue_original_position": self.queue_original_position,
            "queue_joined_at": self.queue_joined_at,
            "queue_left_at": self.queue_left_at,
            "queue_result": self.queue_result,
            "abandoned": self.abandoned,
            "agent": self.agent,
            "agent_interface": self.agent_interface,
            "agent_connected_at": self.agent_connected_at,
            "wait_seconds": self.wait_seconds,
            "talk_seconds": self.talk_seconds,
            "no_answer_agents": list(self.no_answer_agents),
            "transfers": [dict(t) for t in self.transfers],
            "transferred_to": self.transferred_to,
            "consultation_for": self.consultation_for,
            "recording": self.recording,
            "test_tag": self.test_tag,
            "agi_failed": self.agi_failed,
            "origin": self.origin,
            "originate": dict(self.originate) if self.originate is not None else None,
            "ended_at": self.ended_at,
            "duration_seconds": self.duration_seconds,
            "hangup_cause": self.hangup_cause,
            "hangup_cause_txt": self.hangup_cause_txt,
            "hangup_by": self.hangup_by,
            "hangups": [dict(h) for h in self.hangups],
            "outcome": self.outcome,
            "live": self.ended_at is None,
        }


@dataclass
class QueueMember:
    """One agent in one queue. `state` is the agent state now; `state_at(t)` at time t."""

    queue: str
    name: str
    interface: str
    status: int = 0
    paused: bool = False
    in_call: bool = False
    calls_taken: int = 0
    paused_reason: str = ""
    wrapup_seconds: int = 0  # the member's own Wrapuptime, else the queue's (tracker config)
    wrapup_until: float | None = None
    ringing_for: str | None = None  # linkedid of the queue call ringing this member
    talking_to: str | None = None  # linkedid of the queue call this member answered
    last_call: int = 0
    login_time: int | None = None
    last_state: str = ""  # as last computed by the tracker (skips unchanged updates)

    def state_at(self, now: float) -> str:
        if self.in_call or self.talking_to is not None or self.status in DEVICE_IN_USE:
            return "in_call"
        if self.ringing_for is not None or self.status == DEVICE_RINGING:
            return "ringing"
        if self.status in DEVICE_UNAVAILABLE:
            return "unavailable"
        if self.wrapup_until is not None and now < self.wrapup_until:
            return "wrap_up"
        if self.paused:
            return "paused"
        return "available"

    @property
    def state(self) -> str:
        return self.state_at(time.time())


def agent_state(members: Iterable[QueueMember], now: float) -> str:
    """One agent's state over the queues they serve (device states are shared; pause is per queue)."""
    states = [m.state_at(now) for m in members]
    if not states:
        return "logged_out"
    for busy in ("in_call", "ringing", "wrap_up"):
        if busy in states:
            return busy
    if all(s == "unavailable" for s in states):
        return "unavailable"
    if "available" not in states:
        return "paused"
    return "available"


@dataclass(frozen=True, slots=True)
class CallEvent:
    """A high-level fact about a call, for subscribers (websocket, storage, reports)."""

    kind: str  # call_started | ivr_decided | queue_joined | agent_ringing | agent_no_answer |
    #            agent_answered | queue_abandoned | queue_timeout | transferred | recording_started |
    #            originate_result | agent_state | call_ended
    linkedid: str  # "" for agent_state without a call, and for an Originate that made no channel
    at: float
    call: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)


class CallTracker:
    """Pure reducer: events in, state and CallEvents out. No I/O, no clock unless asked.

    `queue_wrapup` gives each queue's wrap-up seconds (queues.conf `wrapuptime`), which
    AMI does not report; a member's own non-zero Wrapuptime wins.

    `hangup_requests` says whether the stream carries HangupRequest events (our
    manager.conf filter includes them). Only with them can a queue timeout be told
    from an abandon: app_queue sends QueueCallerAbandon for both (Asterisk 22), and
    only an abandoning caller's channel got a HangupRequest (the SIP BYE) first.
    None: assume so once one has been seen.
    """

    def __init__(self, clock: Callable[[], float] = time.time, keep_finished: int = 1000,
                 queue_wrapup: Mapping[str, int] | None = None, hangup_requests: bool | None = None) -> None:
        self.clock = clock
        self.keep_finished = keep_finished
        self.queue_wrapup = dict(queue_wrapup or {})
        self.calls: dict[str, Call] = {}
        self.finished: dict[str, Call] = {}
        self.channels: dict[str, Channel] = {}
        self.gone: OrderedDict[str, str] = OrderedDict()  # hung-up channel uniqueid -> its linkedid
        self.members: dict[tuple[str, str], QueueMember] = {}
        self.agent_states: dict[str, str] = {}
        self._agent_members: dict[str, dict[str, QueueMember]] = {}  # agent -> queue -> member
        self.events_seen = 0
        self.needs_resync = True
        # Set once the stream is known to carry HangupRequest (manager.conf filter):
        # only then can a queue timeout be told from an abandon.
        self._hangup_requests_seen = bool(hangup_requests)
        self._hangup_requests_known = hangup_requests is not None
        self._handlers: dict[str, Callable[[Event, float], list[CallEvent]]] = {
            "FullyBooted": self._on_fully_booted,
            "Newchannel": self._on_newchannel,
            "Newstate": self._on_newstate,
            "NewCallerid": self._on_newcallerid,
            "VarSet": self._on_varset,
            "DialEnd": self._on_dial_end,
            "QueueCallerJoin": self._on_queue_join,
            "QueueCallerLeave": self._on_queue_leave,
            "QueueCallerAbandon": self._on_queue_abandon,
            "QueueEntry": self._on_queue_entry,
            "AgentCalled": self._on_agent_called,
            "AgentRingNoAnswer": self._on_agent_no_answer,
            "AgentConnect": self._on_agent_connect,
            "AgentComplete": self._on_agent_complete,
            "AgentDump": self._on_agent_dump,
            "BlindTransfer": self._on_blind_transfer,
            "AttendedTransfer": self._on_attended_transfer,
            "QueueMemberAdded": self._on_member,
            "QueueMemberStatus": self._on_member,
            "QueueMemberPause": self._on_member,
            "QueueMemberPenalty": self._on_member,
            "QueueMemberRinginuse": self._on_member,
            "QueueMember": self._on_member,
            "QueueMemberRemoved": self._on_member_removed,
            "OriginateResponse": self._on_originate_response,
            "HangupRequest": self._on_hangup_request,
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

    def resync(self, live_channels: Iterable[ChannelInfo], at: float | None = None,
               since: int | None = None) -> list[CallEvent]:
        """Reconcile with Asterisk's channel list (CoreShowChannels) after a (re)connect.

        Channels we track that Asterisk no longer has ended while we were not
        listening: their calls end with outcome "lost" unless a later fact says more.
        Channels Asterisk has that we never saw are adopted.

        Events keep flowing while the list is collected, so the list may be older than
        what we fed meanwhile. `since` is `events_seen` when the list was asked for:
        a channel we learnt of after that is newer than the list and stays, and a
        channel whose Hangup we fed is not adopted back from it.
        """
        now = self.clock() if at is None else at
        live = {c.uniqueid: c for c in live_channels}
        out: list[CallEvent] = []
        vanished = [u for u, ch in self.channels.items()
                    if u not in live and (since is None or ch.seen_from <= since)]
        for uniqueid in vanished:
            out.extend(self._remove_channel(uniqueid, now, cause=None, cause_txt="ended while AMI was away"))
        for info in live.values():
            if info.uniqueid not in self.channels and info.uniqueid not in self.gone:
                out.extend(self._adopt(info, now))
        self.needs_resync = False
        return out

    def call(self, linkedid: str) -> Call | None:
        return self.calls.get(linkedid) or self.finished.get(linkedid)

    def expire(self, now: float | None = None) -> list[CallEvent]:
        """agent_state events for states that changed with time alone (a wrap-up ended:
        Asterisk sends nothing then). Call it at `next_expiry()`."""
        at = self.clock() if now is None else now
        return self._agent_changes([n for n, state in self.agent_states.items() if state == "wrap_up"], at)

    def next_expiry(self, now: float | None = None) -> float | None:
        """When the next wrap-up ends (after `now`), or None."""
        at = self.clock() if now is None else now
        ends = [m.wrapup_until for m in self.members.values() if m.wrapup_until is not None and m.wrapup_until > at]
        return min(ends) if ends else None

    def agents(self, now: float | None = None) -> dict[str, str]:
        """Agent name -> state, over every queue they are a member of."""
        at = self.clock() if now is None else now
        return {name: agent_state(members.values(), at) for name, members in self._agent_members.items()}

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
            info.caller_id_num, info.caller_id_name, at, seen_from=self.events_seen,
        )
        out: list[CallEvent] = []
        call = self.calls.get(linkedid)
        if call is None:
            call = Call(linkedid, at, caller_num=_clean(info.caller_id_num), caller_name=_clean(info.caller_id_name))
            self.calls[linkedid] = call
            out += self._emit("call_started", call, at)
        call.channels.add(info.uniqueid)
        if info.channel_state_desc == "Up" and call.up_at is None:
            call.up_at = at
        return out

    def _call_of(self, info: ChannelInfo | None, at: float) -> Call | None:
        """The live call of the channel an event is about (adopting a channel never seen)."""
        if info is None or not info.uniqueid:
            return None
        if info.uniqueid not in self.channels:
            gone = self.gone.get(info.uniqueid)
            if gone is not None:  # a late event about a hung-up channel: its call, if still live
                return self.calls.get(gone)
            self._adopt(info, at)
        linkedid = self.channels[info.uniqueid].linkedid
        return self.calls.get(linkedid)

    def _members_of(self, name: str) -> list[QueueMember]:
        members = self._agent_members.get(name)
        return list(members.values()) if members else []

    def _agent_changes(self, names: Iterable[str], at: float, call: Call | None = None) -> list[CallEvent]:
        """agent_state events for agents whose overall state changed."""
        out: list[CallEvent] = []
        for name in names:
            members = self._members_of(name)
            state = agent_state(members, at)
            previous = self.agent_states.get(name)
            if state == previous:
                continue
            if members:
                self.agent_states[name] = state
            else:
                self.agent_states.pop(name, None)
            data = {"agent": name, "state": state, "previous": previous,
                    "queues": {m.queue: m.state_at(at) for m in members},
                    "paused_reason": next((m.paused_reason for m in members if m.paused), "")}
            out.append(CallEvent("agent_state", call.linkedid if call else "", at,
                                 call.to_dict() if call else {}, data))
        return out

    def _member_entry(self, event: Event) -> QueueMember | None:
        queue = str(getattr(event, "queue", "") or "")
        name = self._member_name(event)
        if not queue or not name:
            return None
        return self.members.get((queue, name))

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
            call = self.calls.get(self.channels[info.uniqueid].linkedid)
            if call is not None and info.channel_state_desc == "Up" and call.up_at is None:
                call.up_at = at
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
        elif name == cv.ORIGIN:
            call.origin = value or None
        return []

    def _on_dial_end(self, event: Event, at: float) -> list[CallEvent]:
        # Only keeps the dialled channel's state current; queue facts come from Agent*.
        dest: ChannelInfo | None = getattr(event, "dest", None)
        if dest is not None and dest.uniqueid in self.channels:
            channel = self.channels[dest.uniqueid]
            channel.state = dest.channel_state_desc
            channel.dial_status = str(getattr(event, "dial_status", "") or "") or None
        return []

    # queue entries ------------------------------------------------------------------
    def _waiting_in(self, queue: str) -> list[Call]:
        return [c for c in self.calls.values()
                if c.queue == queue and c.queue_left_at is None and c.queue_joined_at is not None]

    def _on_queue_join(self, event: Event, at: float) -> list[CallEvent]:
        call = self._call_of(getattr(event, "channel", None), at)
        if call is None:
            return []
        call.queue = getattr(event, "queue", None) or call.queue
        call.queue_joined_at = at
        call.queue_left_at = None
        call.queue_result = None
        call.queue_position = _int(getattr(event, "position", None))
        call.queue_original_position = call.queue_position
        return self._emit("queue_joined", call, at, queue=call.queue, position=call.queue_position,
                          count=_int(getattr(event, "count", None)))

    def _on_queue_entry(self, event: Event, at: float) -> list[CallEvent]:
        """A QueueStatus list entry (resync): a caller already waiting."""
        call = self._call_of(getattr(event, "channel", None), at)
        if call is None:
            return []
        call.queue = str(getattr(event, "queue", "") or "") or call.queue
        if call.queue_joined_at is None:
            wait = _float(getattr(event, "wait", None)) or 0.0
            call.queue_joined_at = at - wait
        call.queue_left_at = None
        call.queue_position = _int(getattr(event, "position", None))
        return []

    def _leave(self, call: Call, at: float, position: int | None) -> None:
        """The caller left the queue: everyone behind moves up one place."""
        if call.queue_left_at is None:
            call.queue_left_at = at
            if call.queue is not None and position is not None:
                for other in self._waiting_in(call.queue):
                    if other is not call and other.queue_position is not None and other.queue_position > position:
                        other.queue_position -= 1

    def _on_queue_leave(self, event: Event, at: float) -> list[CallEvent]:
        call = self._call_of(getattr(event, "channel", None), at)
        if call is not None:
            self._leave(call, at, _int(getattr(event, "position", None)))
        return []

    def _on_queue_abandon(self, event: Event, at: float) -> list[CallEvent]:
        info: ChannelInfo | None = getattr(event, "channel", None)
        call = self._call_of(info, at)
        if call is None or info is None:
            return []
        position = _int(getattr(event, "position", None))
        hold = _float(getattr(event, "hold_time", None))
        call.wait_seconds = hold
        call.queue_position = position
        original = _int(getattr(event, "original_position", None))
        if original is not None:
            call.queue_original_position = original
        self._leave(call, at, position)
        channel = self.channels.get(info.uniqueid)
        queue = call.queue or getattr(event, "queue", None)
        out = self._release_ringing(call, at)
        # app_queue reports a queue timeout as QueueCallerAbandon too (Asterisk 22,
        # queue_exec -> record_abandoned). Only a caller who hung up abandoned: their
        # channel got a HangupRequest (the SIP BYE) before this event.
        if channel is not None and not channel.hangup_requested and self._hangup_requests_seen:
            call.queue_result = "timeout"
            return out + self._emit("queue_timeout", call, at, queue=queue, position=position,
                                    wait_seconds=hold)
        call.abandoned = True
        call.queue_result = "abandoned"
        return out + self._emit("queue_abandoned", call, at, queue=queue, position=position,
                                original_position=call.queue_original_position, wait_seconds=hold)

    # agents --------------------------------------------------------------------------
    def _member_name(self, event: Event) -> str:
        return str(getattr(event, "member_name", "") or getattr(event, "interface", "") or "")

    def _release_ringing(self, call: Call, at: float) -> list[CallEvent]:
        names = []
        for member in self.members.values():
            if member.ringing_for == call.linkedid:
                member.ringing_for = None
                names.append(member.name)
        return self._agent_changes(names, at, call)

    def _on_agent_called(self, event: Event, at: float) -> list[CallEvent]:
        call = self._call_of(getattr(event, "channel", None), at)
        if call is None:
            return []
        member = self._member_name(event)
        interface = str(getattr(event, "interface", "") or "")
        call.ringing[member] = interface
        entry = self._member_entry(event)
        if entry is not None:
            entry.ringing_for = call.linkedid
        dest: ChannelInfo | None = getattr(event, "dest", None)
        out = self._emit("agent_ringing", call, at, agent=member, interface=interface,
                         queue=getattr(event, "queue", None), agent_channel=dest.channel if dest else None)
        return out + self._agent_changes([member], at, call)

    def _on_agent_no_answer(self, event: Event, at: float) -> list[CallEvent]:
        call = self._call_of(getattr(event, "channel", None), at)
        if call is None:
            return []
        member = self._member_name(event)
        call.ringing.pop(member, None)
        call.no_answer_agents.append(member)
        entry = self._member_entry(event)
        if entry is not None and entry.ringing_for == call.linkedid:
            entry.ringing_for = None
        out = self._emit("agent_no_answer", call, at, agent=member, queue=getattr(event, "queue", None),
                         ring_time=_int(getattr(event, "ring_time", None)))
        return out + self._agent_changes([member], at, call)

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
        call.queue_result = "answered"
        self._leave(call, at, call.queue_position)
        for rung in self.members.values():
            if rung.ringing_for == call.linkedid:
                rung.ringing_for = None
        answering = self._member_entry(event)
        if answering is not None:
            answering.talking_to = call.linkedid
        out = self._emit("agent_answered", call, at, agent=member, queue=getattr(event, "queue", None),
                         stopped_ringing=others, wait_seconds=call.wait_seconds)
        return out + self._agent_changes([member, *others], at, call)

    def _on_agent_complete(self, event: Event, at: float) -> list[CallEvent]:
        call = self._call_of(getattr(event, "channel", None), at)
        member = self._member_name(event)
        if call is not None:
            call.talk_seconds = _float(getattr(event, "talk_time", None))
            reason = str(getattr(event, "reason", "") or "")
            if call.hangup_by is None and reason in ("caller", "agent"):
                call.hangup_by = reason
        # Wrap-up starts now in every queue of this agent (queues.conf shared_lastcall).
        for entry in self._members_of(member):
            if call is None or entry.talking_to in (None, call.linkedid):
                entry.talking_to = None
            seconds = entry.wrapup_seconds or self.queue_wrapup.get(entry.queue, 0)
            entry.wrapup_until = at + seconds if seconds > 0 else None
        return self._agent_changes([member], at, call)

    def _on_agent_dump(self, event: Event, at: float) -> list[CallEvent]:
        # The agent hung up while the caller heard the announcement: no talk.
        entry = self._member_entry(event)
        if entry is None:
            return []
        entry.talking_to = None
        entry.ringing_for = None
        return self._agent_changes([entry.name], at)

    def _on_member(self, event: Event, at: float) -> list[CallEvent]:
        queue = str(getattr(event, "queue", "") or "")
        name = self._member_name(event)
        if not queue or not name:
            return []
        found = self.members.get((queue, name))
        if found is None:
            member = QueueMember(queue, name, str(getattr(event, "interface", "") or ""))
            self.members[(queue, name)] = member
            self._agent_members.setdefault(name, {})[queue] = member
        else:
            member = found
        if isinstance(event, QueueMemberEvent):
            # Typed (the usual case, and the most frequent event of a call center): no conversions.
            member.status = event.status
            member.paused = event.paused
            member.in_call = event.in_call
            member.calls_taken = event.calls_taken
            member.wrapup_seconds = event.wrapuptime or 0
            member.last_call = event.last_call
            member.login_time = event.login_time
            member.paused_reason = event.paused_reason if event.paused else ""
        else:
            self._member_fields(member, event)
        if member.ringing_for is not None and member.status != DEVICE_RINGING \
                and member.status not in DEVICE_IN_USE:
            # The device stopped ringing (caller gone, rung elsewhere): no longer ringing.
            member.ringing_for = None
        state = member.state_at(at)
        previous, member.last_state = member.last_state, state
        current = self.agent_states.get(name)
        if current is not None and (state == previous or state == current):
            # The usual case: one device change is reported once per queue; the first
            # report moved the agent's state, the others cannot move it further.
            return []
        return self._agent_changes([name], at)

    @staticmethod
    def _member_fields(member: QueueMember, event: Event) -> None:
        """Member facts from an untyped (or partial) event: whatever it carries."""
        status = getattr(event, "status", None)
        if status is not None:
            member.status = _int(status) or 0
        paused = getattr(event, "paused", None)
        if paused is not None:
            member.paused = bool(paused) if not isinstance(paused, str) else paused == "1"
        member.paused_reason = str(getattr(event, "paused_reason", "") or "") if member.paused else ""
        in_call = getattr(event, "in_call", None)
        if in_call is not None:
            member.in_call = in_call is True or str(in_call) in ("1", "True", "true")
        calls_taken = getattr(event, "calls_taken", None)
        if calls_taken is not None:
            member.calls_taken = _int(calls_taken) or 0

    def _on_member_removed(self, event: Event, at: float) -> list[CallEvent]:
        queue = str(getattr(event, "queue", "") or "")
        name = self._member_name(event)
        self.members.pop((queue, name), None)
        queues = self._agent_members.get(name)
        if queues is not None:
            queues.pop(queue, None)
            if not queues:
                del self._agent_members[name]
        return self._agent_changes([name], at)

    # transfers ---------------------------------------------------------------------
    def _on_blind_transfer(self, event: Event, at: float) -> list[CallEvent]:
        info = getattr(event, "transferer", None)
        call = self._call_of(info, at)
        if call is None:
            return []
        result = str(getattr(event, "result", "") or "")
        to = str(getattr(event, "extension", "") or "")
        transfer = {"transfer_kind": "blind", "to": to, "context": str(getattr(event, "context", "") or ""),
                    "result": result, "by": _endpoint(info.channel) if info else ""}
        call.transfers.append(transfer)
        if result == "Success":
            call.transferred_to = to
        return self._emit("transferred", call, at, **transfer)

    def _on_attended_transfer(self, event: Event, at: float) -> list[CallEvent]:
        orig: ChannelInfo | None = getattr(event, "orig_transferer", None)
        second: ChannelInfo | None = getattr(event, "second_transferer", None)
        transferee: ChannelInfo | None = getattr(event, "transferee", None)
        target: ChannelInfo | None = getattr(event, "transfer_target", None)
        # Which leg Asterisk calls "Orig" and which party "Transferee" depends on which
        # bridge survives the merge, and the Linkedid headers may already show the merged
        # value: decide from the calls we tracked. The transferred call is the older one
        # (the customer's); the other is the agent's consultation call.
        involved: dict[str, Call] = {}
        for info in (orig, second, transferee, target):
            call = self._call_of(info, at)
            if call is not None:
                involved[call.linkedid] = call
        if not involved:
            return []
        moved = min(involved.values(), key=lambda c: c.started_at)
        consult = next((c for c in involved.values() if c is not moved), None)
        parties = [p for p in (target, transferee) if p is not None]
        # The party the customer now talks to was on the consultation call.
        landed = next((p for p in parties if consult is not None and p.uniqueid in consult.channels), None)
        if landed is None:
            landed = next((p for p in parties if p.uniqueid not in moved.channels), target)
        transferer = next((c for c in (orig, second) if c is not None and c.uniqueid in moved.channels), orig)
        result = str(getattr(event, "result", "") or "")
        to = _endpoint(landed.channel) if landed is not None else ""
        transfer = {"transfer_kind": "attended", "to": to, "result": result,
                    "dest_type": str(getattr(event, "dest_type", "") or ""),
                    "by": _endpoint(transferer.channel) if transferer else "",
                    "consult_linkedid": consult.linkedid if consult is not None else ""}
        moved.transfers.append(transfer)
        if result == "Success" and to:
            moved.transferred_to = to
        if consult is not None:
            consult.consultation_for = moved.linkedid
        return self._emit("transferred", moved, at, **transfer)

    # originate ---------------------------------------------------------------------
    def _on_originate_response(self, event: Event, at: float) -> list[CallEvent]:
        uniqueid = str(getattr(event, "uniqueid", "") or "")
        if uniqueid == "<null>":
            uniqueid = ""
        reason = _int(getattr(event, "reason", None))
        success = str(getattr(event, "response", "")).lower() == "success"
        channel = self.channels.get(uniqueid)
        call = self.call(channel.linkedid if channel else uniqueid) if uniqueid else None
        dial_status = channel.dial_status if channel else None
        cause = channel.cause if channel else None
        if call is not None and channel is None:  # the leg is gone already: its hangup says why
            cause = next((h["cause"] for h in call.hangups if h["uniqueid"] == uniqueid), None)
            dial_status = next((h.get("dial_status") for h in call.hangups if h["uniqueid"] == uniqueid), None)
        outcome = originate_outcome(success, reason, dial_status, cause)
        result = {"outcome": outcome, "reason": reason, "channel": str(getattr(event, "channel", "") or ""),
                  "action_id": event.action_id or ""}
        if call is None:
            return [CallEvent("originate_result", uniqueid, at, {}, {**result, "origin": None})]
        call.originate = result
        if call.ended_at is not None and call.queue is None and call.agent is None:
            call.outcome = outcome  # the call ended before Asterisk reported why
        return self._emit("originate_result", call, at, **result, origin=call.origin)

    # hangups -----------------------------------------------------------------------
    def _on_hangup_request(self, event: Event, at: float) -> list[CallEvent]:
        # HangupRequest is queued by the channel driver when the far end hangs up
        # (SIP BYE/CANCEL): it says who ended the call. (SoftHangupRequest is ours.)
        if not self._hangup_requests_known:
            self._hangup_requests_seen = True
        info: ChannelInfo | None = getattr(event, "channel", None)
        if info is None or info.uniqueid not in self.channels:
            return []
        channel = self.channels[info.uniqueid]
        channel.hangup_requested = True
        channel.cause = _int(getattr(event, "cause", None))
        call = self.calls.get(channel.linkedid)
        if call is not None and call.hangup_by is None:
            call.hangup_by = self._side(call, channel)
        return []

    def _side(self, call: Call, channel: Channel) -> str:
        if channel.uniqueid == call.linkedid:
            return "customer" if call.origin is not None or call.originate is not None else "caller"
        if call.agent_interface and channel.name.startswith(f"{call.agent_interface}-"):
            return "agent"
        return "other"

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
        self.gone[uniqueid] = channel.linkedid
        if len(self.gone) > GONE_KEPT:
            self.gone.popitem(last=False)
        call = self.calls.get(channel.linkedid)
        if call is None:
            return []
        call.channels.discard(uniqueid)
        call.hangups.append({"channel": channel.name, "uniqueid": uniqueid, "cause": cause, "cause_txt": cause_txt,
                             "dial_status": channel.dial_status})
        if uniqueid == call.linkedid or call.hangup_cause is None:
            call.hangup_cause = cause
            call.hangup_cause_txt = cause_txt
        if call.channels:
            return []
        call.ended_at = at
        call.outcome = self._outcome(call, lost=cause is None)
        if call.hangup_by is None and self._hangup_requests_seen and cause is not None:
            call.hangup_by = "system"  # no party hung up: the dialplan or an application ended it
        if call.agent_connected_at is not None and call.talk_seconds is None:
            call.talk_seconds = round(at - call.agent_connected_at, 3)
        if call.queue_joined_at is not None and call.wait_seconds is None:
            end = call.agent_connected_at or call.queue_left_at or at
            call.wait_seconds = round(end - call.queue_joined_at, 3)
        if call.queue_left_at is None and call.queue_joined_at is not None:
            self._leave(call, at, call.queue_position)
        del self.calls[call.linkedid]
        self.finished[call.linkedid] = call
        while len(self.finished) > self.keep_finished:
            self.finished.pop(next(iter(self.finished)))
        out = self._release_ringing(call, at)
        talking = [m.name for m in self.members.values() if m.talking_to == call.linkedid]
        for member in self.members.values():
            if member.talking_to == call.linkedid:
                member.talking_to = None
        out += self._agent_changes(talking, at, call)
        return out + self._emit("call_ended", call, at, outcome=call.outcome)

    @staticmethod
    def _outcome(call: Call, lost: bool) -> str:
        if call.agent is not None:
            return "answered"
        if call.abandoned:
            return "abandoned"
        if call.queue_result == "timeout":
            return "queue_timeout"
        if call.queue is not None:
            return "lost" if lost else "queue_timeout"
        if lost:
            return "lost"
        if call.origin is not None or call.originate is not None:
            if call.originate is not None and call.originate["outcome"] == "answered":
                return "answered"
            if call.originate is None and call.up_at is not None:
                return "answered"
            # The OriginateResponse may come before the leg's DialEnd and hangup (Asterisk
            # 22 sends them in either order): decide with every fact known now.
            first = next((h for h in call.hangups if h["uniqueid"] == call.linkedid), None)
            reason = call.originate["reason"] if call.originate is not None else None
            outcome = originate_outcome(False, reason, first.get("dial_status") if first else None,
                                        call.hangup_cause)
            if call.originate is not None:
                call.originate["outcome"] = outcome
            return outcome
        if call.consultation_for is not None:
            return "consultation"
        return "ivr_hangup" if call.ivr_action is None else "ended_after_ivr"


def _endpoint(channel: str) -> str:
    """PJSIP/1003-0000000a -> 1003 (the endpoint or agent behind a channel name)."""
    match = _ENDPOINT.match(channel)
    return match.group(1) if match else channel


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


__all__ = ["AGENT_STATES", "Call", "CallEvent", "CallTracker", "Channel", "QueueMember", "agent_state",
           "originate_outcome"]
