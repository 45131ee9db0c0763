"""AMI events -> the life of each call's recording: start, stop, bridges, holds (pure reducer).

The dialplan sets ``HOTLINE_REC=hotline/Y/M/D/<linkedid>-<uniqueid>`` on the caller's
channel and starts MixMonitor there. The variable is inherited (``__``) by every
channel the call creates, so the recorded channel is the one whose Uniqueid is the
suffix of the base name. Its VarSet or its ``MixMonitorStart``, whichever comes
first, opens the recording; ``MixMonitorStop`` or its Hangup stops it (Asterisk 22
sends no MixMonitorStop on a plain hangup).

Because MixMonitor sits on the caller's channel, a transfer of the agent's side
(blind or attended) does not touch it: the same three files go on, and the new
agent's voice arrives on the same ``tx`` leg. We keep when the caller's channel was
bridged with someone (conversation windows, with the agent's name) and when anyone
in that bridge was on hold, so the analysis attributes the ``tx`` speech correctly.

Each answering agent also records their own voice: a pre-bridge gosub on the agent's
channel sets ``HOTLINE_REC_AGENT=<base>-agent-<ext>-<agent uniqueid>`` and starts
MixMonitor (``r`` only) there. That VarSet opens an *agent leg* of the caller's
recording; the agent channel's MixMonitorStart places its file on the caller's time
axis and its Hangup stops it. Asterisk 22.10 can stop filling the caller's ``tx`` after
a blind transfer (asterisk/asterisk#507); the agent legs are not affected by that.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cti import channel_vars as cv
from cti.ami.events import Event
from recordings.analysis import Timeline, Window

#: Set by the dialplan's agent-recording gosub (dialplans.compiler.AGENT_REC_VAR).
AGENT_RECORDING = f"{cv.RECORDING}_AGENT"
_PEER = re.compile(r"^(?:[A-Za-z0-9_]+)/(?P<name>[^@;-]+)")


def party_of(channel_name: str) -> str:
    """``PJSIP/1002-0000000a`` -> ``1002``; ``Local/1002@from-phones-00;1`` -> ``1002``."""
    match = _PEER.match(channel_name)
    return match.group("name") if match else channel_name


@dataclass
class AgentLeg:
    """One answering agent's own leg (``<base>-agent-<ext>-<uniqueid>.wav``)."""

    uniqueid: str
    party: str
    base: str
    started_at: float
    mixmonitor_started_at: float | None = None
    stopped_at: float | None = None

    @property
    def origin(self) -> float:
        return self.mixmonitor_started_at if self.mixmonitor_started_at is not None else self.started_at


@dataclass
class RecordedCall:
    """What we know about one recorded channel, with absolute AMI timestamps."""

    linkedid: str
    uniqueid: str
    base: str
    started_at: float
    stopped_at: float | None = None
    mixmonitor_started_at: float | None = None
    bridge: str | None = None
    #: Closed windows (start, end, party) and the open one.
    windows: list[tuple[float, float, str | None]] = field(default_factory=list)
    open_window: tuple[float, str | None] | None = None
    holds: list[tuple[float, float]] = field(default_factory=list)
    open_holds: dict[str, float] = field(default_factory=dict)  # holding channel uniqueid -> since
    parties: list[str] = field(default_factory=list)
    transfers: int = 0
    agent_legs: dict[str, AgentLeg] = field(default_factory=dict)  # by the agent channel's Uniqueid

    @property
    def origin(self) -> float:
        """Time zero of the files: MixMonitor's start when AMI reported it."""
        return self.mixmonitor_started_at if self.mixmonitor_started_at is not None else self.started_at

    def timeline(self, end: float) -> Timeline:
        """Windows and holds relative to the start of the files, closed at `end`."""
        stop = self.stopped_at if self.stopped_at is not None else end
        windows = list(self.windows)
        if self.open_window is not None:
            windows.append((self.open_window[0], stop, self.open_window[1]))
        holds = list(self.holds) + [(since, stop) for since in self.open_holds.values()]
        o = self.origin
        return Timeline(
            duration=max(0.0, stop - o),
            windows=tuple(Window(round(s - o, 3), round(e - o, 3), p) for s, e, p in windows if e > s),
            holds=tuple((round(s - o, 3), round(e - o, 3)) for s, e in holds if e > s),
        )


@dataclass(frozen=True, slots=True)
class RecordingFact:
    """Something the index must store: ``started``, ``stopped`` or ``agent_started``
    (idempotent on replay). For ``agent_started`` `uniqueid` and `base` are the agent's
    channel and leg, `agent` the agent's extension."""

    kind: str
    linkedid: str
    uniqueid: str
    base: str
    at: float
    agent: str | None = None


class RecordingTracker:
    """Pure: `feed(event)` returns facts; `timeline(linkedid)` / `pop(linkedid)` for the analysis."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.calls: dict[str, RecordedCall] = {}  # by recorded channel's Uniqueid
        self.by_linkedid: dict[str, str] = {}
        self.bridges: dict[str, dict[str, str]] = {}  # bridge id -> {uniqueid: channel name}
        self.agent_legs: dict[str, AgentLeg] = {}  # agent channel Uniqueid -> its leg (also on the call)

    def feed(self, event: Event) -> list[RecordingFact]:
        handler = getattr(self, f"_on_{event.name}", None)
        if handler is None:
            return []
        result: list[RecordingFact] = handler(event, _time(event, self.clock))
        return result

    def recorded(self, linkedid: str) -> RecordedCall | None:
        uniqueid = self.by_linkedid.get(linkedid)
        return None if uniqueid is None else self.calls.get(uniqueid)

    def pop(self, linkedid: str) -> RecordedCall | None:
        """Forget a finished call (after its analysis was scheduled)."""
        uniqueid = self.by_linkedid.pop(linkedid, None)
        call = None if uniqueid is None else self.calls.pop(uniqueid, None)
        for leg_id in (call.agent_legs if call is not None else ()):
            self.agent_legs.pop(leg_id, None)
        return call

    # -- handlers -----------------------------------------------------------------------
    def _on_VarSet(self, event: Event, at: float) -> list[RecordingFact]:  # noqa: N802 - AMI event name
        name = (getattr(event, "variable", "") or "").lstrip("_")
        info = getattr(event, "channel", None)
        value = getattr(event, "value", "") or ""
        if name == AGENT_RECORDING and info is not None and value:
            return self._agent_leg(info, value, at)
        if name != cv.RECORDING or info is None or not value:
            return []
        # Inherited copies on the agent's channels name someone else's Uniqueid.
        if not value.endswith(f"-{info.uniqueid}") or info.uniqueid in self.calls:
            return []
        linkedid = info.linkedid or info.uniqueid
        call = RecordedCall(linkedid, info.uniqueid, value, at)
        self.calls[info.uniqueid] = call
        self.by_linkedid[linkedid] = info.uniqueid
        return [RecordingFact("started", linkedid, info.uniqueid, value, at)]

    def _on_MixMonitorStart(self, event: Event, at: float) -> list[RecordingFact]:  # noqa: N802
        info = getattr(event, "channel", None)
        leg = None if info is None else self.agent_legs.get(info.uniqueid)
        if leg is not None:
            if leg.mixmonitor_started_at is None:
                leg.mixmonitor_started_at = at
            return []
        call = self._call(event)
        if call is None:
            return []
        call.mixmonitor_started_at = at
        return [RecordingFact("started", call.linkedid, call.uniqueid, call.base, call.started_at)]

    def _on_MixMonitorStop(self, event: Event, at: float) -> list[RecordingFact]:  # noqa: N802
        call = self._call(event)
        if call is None or call.stopped_at is not None:
            return []
        return self._stop(call, at)

    def _on_Hangup(self, event: Event, at: float) -> list[RecordingFact]:  # noqa: N802
        info = getattr(event, "channel", None)
        if info is None:
            return []
        for members in self.bridges.values():
            members.pop(info.uniqueid, None)
        leg = self.agent_legs.pop(info.uniqueid, None)
        if leg is not None and leg.stopped_at is None:
            leg.stopped_at = at
        call = self.calls.get(info.uniqueid)
        if call is None or call.stopped_at is not None:
            return []
        return self._stop(call, at)

    def _on_BridgeEnter(self, event: Event, at: float) -> list[RecordingFact]:  # noqa: N802
        info = getattr(event, "channel", None)
        bridge = getattr(event, "bridge_uniqueid", "")
        if info is None or not bridge:
            return []
        self.bridges.setdefault(bridge, {})[info.uniqueid] = info.channel
        if info.uniqueid in self.calls:
            self.calls[info.uniqueid].bridge = bridge
        self._update_bridge(bridge, at)
        return []

    def _on_BridgeLeave(self, event: Event, at: float) -> list[RecordingFact]:  # noqa: N802
        info = getattr(event, "channel", None)
        bridge = getattr(event, "bridge_uniqueid", "")
        if info is None or not bridge:
            return []
        self.bridges.get(bridge, {}).pop(info.uniqueid, None)
        call = self.calls.get(info.uniqueid)
        if call is not None and call.bridge == bridge:
            call.bridge = None
            self._close_window(call, at)
            self._close_holds(call, at)
        self._update_bridge(bridge, at)
        return []

    def _on_BridgeDestroy(self, event: Event, at: float) -> list[RecordingFact]:  # noqa: N802
        self.bridges.pop(getattr(event, "bridge_uniqueid", ""), None)
        return []

    def _on_Hold(self, event: Event, at: float) -> list[RecordingFact]:  # noqa: N802
        info = getattr(event, "channel", None)
        if info is None:
            return []
        # By Linkedid first: Hold can arrive before the caller's own BridgeEnter (seen on
        # Asterisk 22.10 when the agent holds right after answering).
        call = (self.recorded(info.linkedid) if info.linkedid else None) or self._call_in_bridge_with(info.uniqueid)
        if call is not None:
            call.open_holds.setdefault(info.uniqueid, at)
        return []

    def _on_Unhold(self, event: Event, at: float) -> list[RecordingFact]:  # noqa: N802
        info = getattr(event, "channel", None)
        if info is None:
            return []
        for call in self.calls.values():
            since = call.open_holds.pop(info.uniqueid, None)
            if since is not None:
                call.holds.append((since, at))
        return []

    def _on_BlindTransfer(self, event: Event, at: float) -> list[RecordingFact]:  # noqa: N802
        return self._transfer(getattr(event, "transferer", None))

    def _on_AttendedTransfer(self, event: Event, at: float) -> list[RecordingFact]:  # noqa: N802
        return self._transfer(getattr(event, "orig_transferer", None) or getattr(event, "transferer", None))

    # -- helpers ------------------------------------------------------------------------
    def _agent_leg(self, info: Any, value: str, at: float) -> list[RecordingFact]:
        """The agent-recording gosub named this agent channel's own leg: index it with the call."""
        call = self.recorded(info.linkedid) if info.linkedid else None
        if call is None or not value.startswith(f"{call.base}-agent-") or not value.endswith(f"-{info.uniqueid}"):
            return []
        if info.uniqueid in call.agent_legs:
            return []
        party = value[len(call.base) + len("-agent-"):-len(info.uniqueid) - 1] or party_of(info.channel)
        leg = AgentLeg(info.uniqueid, party, value, at)
        call.agent_legs[info.uniqueid] = leg
        self.agent_legs[info.uniqueid] = leg
        return [RecordingFact("agent_started", call.linkedid, info.uniqueid, value, at, agent=party)]

    def _transfer(self, info: Any) -> list[RecordingFact]:
        if info is not None:
            call = self.recorded(info.linkedid) if info.linkedid else None
            if call is not None:
                call.transfers += 1
        return []

    def _call(self, event: Event) -> RecordedCall | None:
        info = getattr(event, "channel", None)
        return None if info is None else self.calls.get(info.uniqueid)

    def _call_in_bridge_with(self, uniqueid: str) -> RecordedCall | None:
        if uniqueid in self.calls:
            return self.calls[uniqueid]
        for call in self.calls.values():
            if call.bridge is not None and uniqueid in self.bridges.get(call.bridge, {}):
                return call
        return None

    def _update_bridge(self, bridge: str, at: float) -> None:
        """Open or close the window of a recorded channel in `bridge` as parties come and go."""
        members = self.bridges.get(bridge, {})
        for uniqueid in list(members):
            call = self.calls.get(uniqueid)
            if call is None or call.bridge != bridge:
                continue
            others = [name for u, name in members.items() if u != uniqueid]
            party = party_of(others[0]) if others else None
            if party is None:
                self._close_window(call, at)
                self._close_holds(call, at)
            elif call.open_window is None or call.open_window[1] != party:
                self._close_window(call, at)
                call.open_window = (at, party)
                if party not in call.parties:
                    call.parties.append(party)

    @staticmethod
    def _close_window(call: RecordedCall, at: float) -> None:
        if call.open_window is not None:
            call.windows.append((call.open_window[0], at, call.open_window[1]))
            call.open_window = None

    @staticmethod
    def _close_holds(call: RecordedCall, at: float) -> None:
        for since in call.open_holds.values():
            call.holds.append((since, at))
        call.open_holds.clear()

    def _stop(self, call: RecordedCall, at: float) -> list[RecordingFact]:
        self._close_window(call, at)
        self._close_holds(call, at)
        call.stopped_at = at
        return [RecordingFact("stopped", call.linkedid, call.uniqueid, call.base, at)]


def _time(event: Event, clock: Callable[[], float]) -> float:
    """The event's own Timestamp (timestampevents=yes), so replays compute the same timeline."""
    stamp = event.raw.get("Timestamp")
    try:
        return float(stamp) if stamp else clock()
    except ValueError:
        return clock()


__all__ = ["AGENT_RECORDING", "AgentLeg", "RecordedCall", "RecordingFact", "RecordingTracker", "party_of"]
