"""Per-call talk analysis from the per-party legs: talk time, silence, dead air, overtalk, hold.

The caller's channel carries MixMonitor, so its ``rx`` leg is the caller's voice and
its ``tx`` leg is everything the caller heard: IVR prompts and queue music before an
agent answered, then the agent (or, after a transfer, the next agent). Speech on
``tx`` only counts as agent talk inside a *conversation window* (the caller's
channel bridged with another party, from AMI BridgeEnter/BridgeLeave), and time on
hold (AMI Hold/Unhold) is taken out of the windows, because music on hold is not
anyone talking and waiting on hold is not dead air.

When an agent's own leg was recorded (MixMonitor on the agent's channel), that
agent's speech comes from it instead of ``tx``, shifted onto the caller's time axis:
it holds only that agent's voice and keeps working when Asterisk 22.10 stops filling
the caller's ``tx`` after a blind transfer (asterisk/asterisk#507).

Everything here is pure (intervals in seconds from the start of the recording);
`analyze_call` is the picklable entry point a process pool runs after the call.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from recordings.vad import analyze_wav

Span = tuple[float, float]


def merge(spans: Iterable[Span]) -> list[Span]:
    """Sorted union of intervals; empty and inverted ones are dropped."""
    out: list[Span] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def intersect(a: Sequence[Span], b: Sequence[Span]) -> list[Span]:
    """Intersection of two merged interval lists (two-pointer sweep)."""
    out: list[Span] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if end > start:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def subtract(a: Sequence[Span], b: Sequence[Span]) -> list[Span]:
    """Parts of merged list `a` not covered by merged list `b`."""
    out: list[Span] = []
    j = 0
    for start, end in a:
        cursor = start
        while j < len(b) and b[j][1] <= cursor:
            j += 1
        k = j
        while k < len(b) and b[k][0] < end:
            if b[k][0] > cursor:
                out.append((cursor, b[k][0]))
            cursor = max(cursor, b[k][1])
            k += 1
        if cursor < end:
            out.append((cursor, end))
    return out


def total(spans: Iterable[Span]) -> float:
    return sum(end - start for start, end in spans)


@dataclass(frozen=True, slots=True)
class Window:
    """The recorded channel bridged with another party (`party`: agent name or channel)."""

    start: float
    end: float
    party: str | None = None


@dataclass(frozen=True, slots=True)
class Timeline:
    """What AMI said about the recorded channel, in seconds from the recording's start."""

    duration: float
    windows: tuple[Window, ...] = ()
    holds: tuple[Span, ...] = ()


@dataclass(frozen=True, slots=True)
class CallMetrics:
    """The stored analysis of one call (seconds unless named otherwise)."""

    recording_seconds: float
    conversation_seconds: float
    caller_talk_seconds: float
    agent_talk_seconds: float
    agent_talk_by_party: dict[str, float]
    silence_seconds: float
    longest_dead_air_seconds: float
    overtalk_seconds: float
    #: Agent's share of all talk (0..1); None when nobody talked.
    agent_talk_ratio: float | None
    hold_seconds: float
    #: Share of the conversation spent on hold (0..1); None without a conversation.
    hold_share: float | None
    #: Caller speech anywhere in the recording (IVR and queue included).
    caller_talk_total_seconds: float
    flags: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "recording_seconds": self.recording_seconds,
            "conversation_seconds": self.conversation_seconds,
            "caller_talk_seconds": self.caller_talk_seconds,
            "agent_talk_seconds": self.agent_talk_seconds,
            "agent_talk_by_party": dict(self.agent_talk_by_party),
            "silence_seconds": self.silence_seconds,
            "longest_dead_air_seconds": self.longest_dead_air_seconds,
            "overtalk_seconds": self.overtalk_seconds,
            "agent_talk_ratio": self.agent_talk_ratio,
            "hold_seconds": self.hold_seconds,
            "hold_share": self.hold_share,
            "caller_talk_total_seconds": self.caller_talk_total_seconds,
            "flags": list(self.flags),
        }


def call_metrics(caller: Sequence[Span], heard: Sequence[Span], timeline: Timeline,
                 *, dead_air_threshold: float, agent_speech: Mapping[str, Sequence[Span]] | None = None
                 ) -> CallMetrics:
    """Combine the caller's speech (rx) and what the caller heard (tx) with the AMI timeline.

    `agent_speech`: per agent, speech on that agent's own leg (on the caller's time
    axis); in that agent's windows it replaces ``tx`` as the agent's talk.

    Dead air is a stretch inside a conversation window, off hold, where neither
    party speaks; a call whose longest dead air reaches `dead_air_threshold` gets
    the flag ``dead_air`` (QA review).
    """
    clip = [(0.0, timeline.duration)]
    rx = intersect(merge(caller), clip)
    tx = intersect(merge(heard), clip)
    windows = intersect(merge((w.start, w.end) for w in timeline.windows), clip)
    holds = intersect(merge(timeline.holds), windows)
    active = subtract(windows, holds)
    rx_active = intersect(rx, active)
    own = {party: merge(spans) for party, spans in (agent_speech or {}).items()}

    def agent_talk_in(w: Window) -> list[Span]:
        source = own.get(w.party, tx) if w.party is not None else tx
        return intersect(intersect(source, [(w.start, w.end)]), active)

    tx_active = merge(span for w in timeline.windows for span in agent_talk_in(w))
    anyone = merge([*rx_active, *tx_active])
    dead = subtract(active, anyone)
    by_party: dict[str, float] = {}
    for w in timeline.windows:
        part = agent_talk_in(w)
        key = w.party or "unknown"
        by_party[key] = round(by_party.get(key, 0.0) + total(part), 3)
    caller_talk, agent_talk = total(rx_active), total(tx_active)
    conversation = total(windows)
    longest_dead = max((e - s for s, e in dead), default=0.0)
    flags = ("dead_air",) if windows and longest_dead >= dead_air_threshold else ()
    talk = caller_talk + agent_talk
    return CallMetrics(
        recording_seconds=round(timeline.duration, 3),
        conversation_seconds=round(conversation, 3),
        caller_talk_seconds=round(caller_talk, 3),
        agent_talk_seconds=round(agent_talk, 3),
        agent_talk_by_party=by_party,
        silence_seconds=round(total(dead), 3),
        longest_dead_air_seconds=round(longest_dead, 3),
        overtalk_seconds=round(total(intersect(rx_active, tx_active)), 3),
        agent_talk_ratio=round(agent_talk / talk, 3) if talk > 0 else None,
        hold_seconds=round(total(holds), 3),
        hold_share=round(total(holds) / conversation, 3) if conversation > 0 else None,
        caller_talk_total_seconds=round(total(rx), 3),
        flags=flags,
    )


@dataclass(frozen=True, slots=True)
class AgentLegJob:
    """One agent's own leg: row, file, whose voice, and where its second 0 is on the caller's axis."""

    row_id: int
    path: str
    party: str
    #: Seconds from the caller's recording start to this leg's start; None if unknown
    #: (then the leg is analysed for speech but not used in the call metrics).
    offset: float | None


@dataclass(frozen=True, slots=True)
class AnalysisJob:
    """Everything a worker process needs: absolute leg files, the timeline, the threshold."""

    linkedid: str
    legs: dict[str, tuple[int, str]]  # leg -> (recording row id, absolute path)
    timeline: Timeline
    dead_air_threshold: float
    aggressiveness: int = 2
    agent_legs: tuple[AgentLegJob, ...] = ()


def analyze_call(job: AnalysisJob) -> dict[str, Any]:
    """Run webrtcvad on every leg and combine rx/tx into call metrics (runs in a worker process).

    Returns plain data: ``legs`` (row id -> speech facts or error) and ``metrics``
    (None when the rx or tx leg could not be analysed).
    """
    legs: dict[int, dict[str, Any]] = {}
    spans: dict[str, list[Span]] = {}
    durations: dict[str, float] = {}
    for leg, (row_id, path) in job.legs.items():
        try:
            result = analyze_wav(Path(path), aggressiveness=job.aggressiveness)
        except (ValueError, OSError) as exc:
            legs[row_id] = {"leg": leg, "error": str(exc)}
            continue
        legs[row_id] = {"leg": leg, "has_speech": result.has_speech, "speech_seconds": result.speech_seconds,
                        "duration": result.duration}
        spans[leg] = [(s.start, s.end) for s in result.segments]
        durations[leg] = result.duration
    agent_speech: dict[str, list[Span]] = {}
    for agent_leg in job.agent_legs:
        try:
            result = analyze_wav(Path(agent_leg.path), aggressiveness=job.aggressiveness)
        except (ValueError, OSError) as exc:
            legs[agent_leg.row_id] = {"leg": "agent", "agent": agent_leg.party, "error": str(exc)}
            continue
        legs[agent_leg.row_id] = {"leg": "agent", "agent": agent_leg.party, "has_speech": result.has_speech,
                                  "speech_seconds": result.speech_seconds, "duration": result.duration}
        if agent_leg.offset is not None:
            shift = agent_leg.offset
            agent_speech.setdefault(agent_leg.party, []).extend(
                (s.start + shift, s.end + shift) for s in result.segments)
    metrics = None
    if "rx" in spans and "tx" in spans:
        # The audio is the truth for the length; AMI times only place the windows in it.
        timeline = replace(job.timeline, duration=durations["rx"])
        metrics = call_metrics(spans["rx"], spans["tx"], timeline, dead_air_threshold=job.dead_air_threshold,
                               agent_speech=agent_speech).to_dict()
        # Whose talk came from their own leg rather than the caller's tx.
        metrics["agent_legs"] = sorted(agent_speech)
        # Where the conversation and the holds were, so a reviewer can jump to them.
        metrics["windows"] = [{"start": w.start, "end": w.end, "party": w.party} for w in timeline.windows]
        metrics["holds"] = [{"start": s, "end": e} for s, e in timeline.holds]
    return {"linkedid": job.linkedid, "legs": legs, "metrics": metrics, "worker_pid": os.getpid()}
