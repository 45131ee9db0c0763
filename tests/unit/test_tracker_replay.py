"""The call tracker on recorded real traffic: others' Asterisk 13 captures and ours."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cti.ami.events import Event, parse_event
from cti.ami.protocol import AMIParser, Message
from cti.tracker import CallTracker

CACOFONISK = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "ami" / "cacofonisk"
OURS = Path(__file__).resolve().parents[1] / "fixtures" / "ami"
FIXTURES = sorted(CACOFONISK.glob("*/*.json"))


def load_json_fixture(path: Path) -> list[Event]:
    return [parse_event(Message(tuple((k, str(v)) for k, v in e.items() if k != "content")))
            for e in json.loads(path.read_text())]


def load_capture(path: Path) -> list[Event]:
    """A raw AMI byte capture from the sandbox (greeting included)."""
    parser = AMIParser()
    return [parse_event(m) for m in parser.feed(path.read_bytes()) if m.kind == "event"]


def test_fixtures_present() -> None:
    assert len(FIXTURES) >= 40


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_full_replay_ends_every_call(path: Path) -> None:
    events = load_json_fixture(path)
    tracker = CallTracker(clock=lambda: 0.0)
    out = tracker.feed_all(events)
    started = {e.linkedid for e in out if e.kind == "call_started"}
    ended = {e.linkedid for e in out if e.kind == "call_ended"}
    assert started, "every scenario has at least one call"
    # Every channel Asterisk created was hung up in these scenarios: nothing stays live.
    assert ended == started
    assert not tracker.calls and not tracker.channels


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_replay_with_first_k_events_dropped(path: Path) -> None:
    """A tracker that joins mid-stream (reconnect, restart) never crashes."""
    events = load_json_fixture(path)
    for k in range(len(events) + 1):
        tracker = CallTracker(clock=lambda: 0.0)
        tracker.feed_all(events[k:])
        assert not tracker.channels or all(ch.linkedid for ch in tracker.channels.values())


def test_unknown_uniqueids_are_tolerated() -> None:
    events = load_json_fixture(CACOFONISK / "simple" / "ab_a_cancel.json")
    hangups = [e for e in events if e.name == "Hangup"]
    tracker = CallTracker(clock=lambda: 0.0)
    assert tracker.feed_all(hangups) == []


def test_resync_ends_calls_that_vanished() -> None:
    events = load_json_fixture(CACOFONISK / "queue" / "queue_simple.json")
    first_hangup = next(i for i, e in enumerate(events) if e.name == "Hangup")
    tracker = CallTracker(clock=lambda: 100.0)
    tracker.feed_all(events[:first_hangup])
    assert tracker.calls
    out = tracker.resync([])  # Asterisk restarted: it has no channels
    assert {e.kind for e in out} == {"call_ended"}
    assert all(e.call["outcome"] == "lost" for e in out)
    assert not tracker.calls and not tracker.needs_resync


CAPTURE = OURS / "hotline_answered.ami"


def _feed_three_ways(data: bytes) -> dict[str, list[Event]]:
    ways: dict[str, list[Event]] = {}
    parser = AMIParser()
    ways["whole"] = [parse_event(m) for m in parser.feed(data) if m.kind == "event"]
    parser = AMIParser()
    ways["bytewise"] = [parse_event(m) for i in range(len(data)) for m in parser.feed(data[i:i + 1])
                        if m.kind == "event"]
    parser = AMIParser()
    cut = data.rfind(b"Event:")  # the last message arrives only in part
    ways["trailing"] = [parse_event(m) for m in parser.feed(data[:cut + 10]) if m.kind == "event"]
    return ways


def test_sandbox_capture_parses_the_same_three_ways() -> None:
    ways = _feed_three_ways(CAPTURE.read_bytes())
    assert [e.raw for e in ways["whole"]] == [e.raw for e in ways["bytewise"]]
    assert [e.raw for e in ways["trailing"]] == [e.raw for e in ways["whole"][:-1]]


def test_sandbox_capture_answered_call_story() -> None:
    """Recorded from a real Asterisk 22 sandbox call: caller presses 1, agent answers."""
    events = load_capture(CAPTURE)
    tracker = CallTracker(clock=lambda: 0.0)
    out = tracker.feed_all(events)
    linkedids = {e.linkedid for e in out if e.kind != "agent_state"}
    assert len(linkedids) == 1
    kinds = [e.kind for e in out if e.kind != "agent_state"]
    assert kinds == ["call_started", "recording_started", "ivr_decided", "queue_joined", "agent_ringing",
                     "agent_answered", "call_ended"]
    call = next(e for e in out if e.kind == "call_ended").call
    assert call["caller_num"] == "13800138000"
    assert call["menu_choice"] == "1" and call["queue"] == "repair"
    assert call["agent"] in ("1001", "1002")
    assert call["outcome"] == "answered"
    # hotline/YYYY/MM/DD/<linkedid>-<uniqueid>: unique per leg owner, stable across transfers
    assert re.fullmatch(rf"hotline/\d{{4}}/\d{{2}}/\d{{2}}/{re.escape(call['linkedid'])}-[0-9.]+", call["recording"])
    assert call["talk_seconds"] > 1 and 0 <= call["wait_seconds"] < 20
    assert call["duration_seconds"] > call["talk_seconds"]


def test_sandbox_capture_partial_replays() -> None:
    events = load_capture(CAPTURE)
    for k in range(len(events) + 1):
        CallTracker(clock=lambda: 0.0).feed_all(events[k:])
