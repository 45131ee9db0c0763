"""Talk analysis (interval arithmetic, per-party metrics) and the recording lifecycle reducer,
the latter replayed on real Asterisk 22 captures (a queue call; a call held, then blind
transferred to a second agent)."""

from __future__ import annotations

import os
import random
import wave
from pathlib import Path

import pytest

from cti.ami.events import Event, parse_event
from cti.ami.protocol import AMIParser
from recordings.analysis import (
    AgentLegJob,
    AnalysisJob,
    Span,
    Timeline,
    Window,
    analyze_call,
    call_metrics,
    intersect,
    merge,
    subtract,
    total,
)
from recordings.lifecycle import AGENT_RECORDING, RecordingTracker, party_of

CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ami"
GRID = 0.01


def _cells(spans: list[Span]) -> set[int]:
    """Brute force: the 10 ms grid cells covered by `spans`."""
    return {c for s, e in spans for c in range(round(s / GRID), round(e / GRID))}


def _random_spans(rng: random.Random) -> list[Span]:
    spans = []
    for _ in range(rng.randint(0, 8)):
        start = rng.randint(0, 200) * GRID
        spans.append((start, start + rng.randint(0, 60) * GRID))
    return spans


def test_interval_operations_match_brute_force() -> None:
    rng = random.Random(5)
    for _ in range(500):
        a, b = merge(_random_spans(rng)), merge(_random_spans(rng))
        assert merge(a) == a  # idempotent
        assert all(a[i][1] < a[i + 1][0] for i in range(len(a) - 1)), a  # merged: disjoint, sorted
        assert _cells(intersect(a, b)) == _cells(a) & _cells(b)
        assert _cells(subtract(a, b)) == _cells(a) - _cells(b)
        assert abs(total(a) - len(_cells(a)) * GRID) < 1e-6


def test_metrics_per_party_with_dead_air_overtalk_and_hold() -> None:
    # 0-10 s IVR prompts and queue music (tx speech, not agent talk); agent bridged 10-40 s,
    # on hold 25-30 s (music on tx), caller's rx speech and agent's tx speech known.
    caller = [(2.0, 3.0), (12.0, 15.0), (17.0, 19.5), (31.0, 33.0)]
    heard = [(0.5, 9.0), (15.5, 18.0), (25.0, 30.0), (34.0, 36.0)]
    timeline = Timeline(duration=40.0, windows=(Window(10.0, 40.0, "1001"),), holds=((25.0, 30.0),))
    m = call_metrics(caller, heard, timeline, dead_air_threshold=5.0)
    assert m.conversation_seconds == 30.0
    assert m.caller_talk_seconds == pytest.approx(3.0 + 2.5 + 2.0)
    assert m.caller_talk_total_seconds == pytest.approx(1.0 + 7.5)
    assert m.agent_talk_seconds == pytest.approx(2.5 + 2.0)  # the hold music does not count
    assert m.agent_talk_by_party == {"1001": pytest.approx(4.5)}
    assert m.overtalk_seconds == pytest.approx(1.0)  # 17.0-18.0
    # Nobody talks 10-12, 15-15.5, 19.5-25 (5.5 s: the longest), 30-31, 33-34, 36-40;
    # the hold (25-30) is not dead air.
    assert m.longest_dead_air_seconds == pytest.approx(5.5)
    assert m.silence_seconds == pytest.approx(2.0 + 0.5 + 5.5 + 1.0 + 1.0 + 4.0)
    assert m.hold_seconds == 5.0 and m.hold_share == pytest.approx(5.0 / 30.0, abs=1e-3)
    assert m.agent_talk_ratio == pytest.approx(4.5 / (4.5 + 7.5), abs=1e-3)
    assert m.flags == ("dead_air",)
    assert call_metrics(caller, heard, timeline, dead_air_threshold=5.6).flags == ()


def test_metrics_split_by_agent_after_a_transfer_and_without_an_agent() -> None:
    timeline = Timeline(duration=30.0, windows=(Window(5.0, 15.0, "1001"), Window(17.0, 30.0, "1002")))
    m = call_metrics([(6.0, 8.0)], [(9.0, 12.0), (15.0, 17.0), (20.0, 29.0)], timeline, dead_air_threshold=10)
    assert m.agent_talk_by_party == {"1001": 3.0, "1002": 9.0}  # ringback between windows: nobody's talk
    ivr_only = call_metrics([(1.0, 2.0)], [(0.0, 8.0)], Timeline(duration=10.0), dead_air_threshold=1.0)
    assert ivr_only.conversation_seconds == 0 and ivr_only.agent_talk_seconds == 0
    assert ivr_only.caller_talk_total_seconds == 1.0 and ivr_only.flags == ()  # no conversation: no dead air
    assert ivr_only.agent_talk_ratio is None and ivr_only.hold_share is None


def test_agent_talk_comes_from_the_agents_own_leg_when_tx_lost_the_new_agent() -> None:
    # Asterisk 22.10 (asterisk/asterisk#507): after a blind transfer the caller's tx is silence;
    # 1002's own leg still has the speech. 1001 had no own leg: tx is used in their window.
    timeline = Timeline(duration=30.0, windows=(Window(5.0, 15.0, "1001"), Window(17.0, 30.0, "1002")))
    caller, heard = [(18.0, 21.0)], [(9.0, 12.0)]
    own = {"1002": [(22.0, 26.0), (27.0, 29.0), (1.0, 3.0)]}  # speech before the window is not counted
    m = call_metrics(caller, heard, timeline, dead_air_threshold=10, agent_speech=own)
    assert m.agent_talk_by_party == {"1001": 3.0, "1002": 6.0}
    assert m.agent_talk_seconds == 9.0 and m.caller_talk_seconds == 3.0
    assert m.longest_dead_air_seconds == 4.0  # 5-9, before 1001 speaks
    assert m.overtalk_seconds == 0.0
    # The same call measured on tx alone: 1002 seems silent and the end looks like 9 s of dead air.
    lost = call_metrics(caller, heard, timeline, dead_air_threshold=10)
    assert lost.agent_talk_by_party == {"1001": 3.0, "1002": 0.0} and lost.longest_dead_air_seconds == 9.0


def test_analyze_call_on_real_speech_and_a_broken_leg(tmp_path: Path) -> None:
    from tests.unit.test_vad import speak

    rx = speak(tmp_path / "rx.wav", "Hello my washing machine is leaking")
    tx = speak(tmp_path / "tx.wav", "We will send a technician tomorrow morning")
    bad = tmp_path / "mix.wav"
    bad.write_bytes(b"not a wav")
    job = AnalysisJob("L1", {"rx": (1, str(rx)), "tx": (2, str(tx)), "mix": (3, str(bad))},
                      Timeline(duration=99.0, windows=(Window(0.0, 99.0, "1001"),)), dead_air_threshold=10.0)
    result = analyze_call(job)
    assert result["legs"][1]["has_speech"] and result["legs"][2]["has_speech"]
    assert "not a RIFF" in result["legs"][3]["error"]
    m = result["metrics"]
    assert m["recording_seconds"] == result["legs"][1]["duration"]  # the audio's length, not the timeline's
    assert m["caller_talk_seconds"] == result["legs"][1]["speech_seconds"]
    assert m["overtalk_seconds"] > 0  # both files start speaking at once
    assert result["worker_pid"] == os.getpid()  # here called directly; the service uses a process pool


def test_analyze_call_uses_placed_agent_legs_only(tmp_path: Path) -> None:
    from tests.unit.test_vad import speak

    rx = speak(tmp_path / "rx.wav", "Hello my washing machine is leaking water all over the kitchen floor")
    tx = tmp_path / "tx.wav"
    with wave.open(str(tx), "wb") as w:  # what #507 leaves: the caller's tx is silence
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(2 * 8000 * 3))
    own = speak(tmp_path / "agent-1002.wav", "Thank you")
    unplaced = speak(tmp_path / "agent-1001.wav", "Hello")
    job = AnalysisJob("L1", {"rx": (1, str(rx)), "tx": (2, str(tx))},
                      Timeline(duration=99.0, windows=(Window(0.0, 99.0, "1002"),)), dead_air_threshold=10.0,
                      agent_legs=(AgentLegJob(3, str(own), "1002", 0.0), AgentLegJob(4, str(unplaced), "1001", None)))
    result = analyze_call(job)
    assert result["legs"][2]["has_speech"] is False
    assert result["legs"][3]["agent"] == "1002" and result["legs"][3]["has_speech"]
    assert result["legs"][4]["agent"] == "1001" and result["legs"][4]["has_speech"]  # analysed, not placed
    m = result["metrics"]
    assert m["agent_legs"] == ["1002"]
    assert m["agent_talk_by_party"] == {"1002": result["legs"][3]["speech_seconds"]}
    assert m["overtalk_seconds"] > 0


def test_the_dialplan_and_the_lifecycle_name_the_agent_leg_variable_alike() -> None:
    from dialplans.compiler import AGENT_REC_VAR

    assert AGENT_RECORDING == AGENT_REC_VAR


# -- the lifecycle reducer on real captures ----------------------------------------------
def _capture(name: str) -> list[Event]:
    parser = AMIParser()
    return [parse_event(m) for m in parser.feed((CAPTURES / name).read_bytes()) if m.kind == "event"]


def test_party_names_from_channel_names() -> None:
    assert party_of("PJSIP/1002-0000000a") == "1002"
    assert party_of("Local/1003@from-phones-00000001;1") == "1003"
    assert party_of("PJSIP/carrier-00000000") == "carrier"
    assert party_of("weird") == "weird"


def test_queue_call_capture_gives_one_recording_with_one_window() -> None:
    tracker = RecordingTracker()
    facts = [f for e in _capture("hotline_answered.ami") for f in tracker.feed(e)]
    kinds = [f.kind for f in facts]
    assert kinds.count("stopped") == 1 and set(kinds) == {"started", "stopped"}
    assert len({(f.linkedid, f.uniqueid, f.base) for f in facts}) == 1  # inherited VarSets ignored
    started = facts[0]
    assert started.base.endswith(f"-{started.uniqueid}") and started.base.startswith("hotline/")
    call = tracker.recorded(started.linkedid)
    assert call is not None and call.stopped_at is not None
    timeline = call.timeline(call.stopped_at)
    assert len(timeline.windows) == 1 and timeline.windows[0].party in ("1001", "1002")
    assert 0 < timeline.windows[0].start < timeline.windows[0].end <= timeline.duration
    assert timeline.holds == ()


def test_hold_then_blind_transfer_capture_keeps_one_recording() -> None:
    tracker = RecordingTracker()
    facts = [f for e in _capture("hotline_transfer_hold.ami") for f in tracker.feed(e)]
    caller_facts = [f for f in facts if f.kind != "agent_started"]
    assert len({f.base for f in caller_facts}) == 1 and [f.kind for f in facts].count("stopped") == 1
    call = tracker.recorded(facts[0].linkedid)
    assert call is not None and call.stopped_at is not None
    assert call.transfers == 1
    assert len(call.parties) == 2 and set(call.parties) <= {"1001", "1002"}
    # Each agent's own leg: named after the call's base and the agent's channel, on the call.
    agent_facts = [f for f in facts if f.kind == "agent_started"]
    assert [f.agent for f in agent_facts] == call.parties
    for f in agent_facts:
        assert f.linkedid == call.linkedid and f.uniqueid != call.uniqueid
        assert f.base == f"{call.base}-agent-{f.agent}-{f.uniqueid}"
        leg = call.agent_legs[f.uniqueid]
        assert leg.mixmonitor_started_at is not None and leg.stopped_at is not None
        assert call.origin < leg.origin < leg.stopped_at
    first_leg, second_leg = (call.agent_legs[f.uniqueid] for f in agent_facts)
    assert first_leg.stopped_at is not None and first_leg.stopped_at <= second_leg.origin  # gone at the transfer
    timeline = call.timeline(call.stopped_at)
    first, second = timeline.windows
    assert (first.party, second.party) == tuple(call.parties)
    assert first.end <= second.start  # the caller hears ringback between the two agents
    (hold,) = timeline.holds
    assert first.start <= hold[0] < hold[1] <= first.end
    assert hold[1] - hold[0] == pytest.approx(2.0, abs=0.1)  # the test held for 2 s


@pytest.mark.parametrize("name", ["hotline_answered.ami", "hotline_transfer_hold.ami"])
def test_replay_with_first_k_events_dropped(name: str) -> None:
    events = _capture(name)
    for k in range(len(events)):
        tracker = RecordingTracker()
        for event in events[k:]:
            tracker.feed(event)
        for call in tracker.calls.values():
            call.timeline(call.stopped_at or 0.0)  # whatever was seen still gives a timeline
