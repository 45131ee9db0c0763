"""The call tracker on recorded real traffic: others' Asterisk 13 captures and ours."""

from __future__ import annotations

import json
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
