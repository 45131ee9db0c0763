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


OUR_CAPTURES = sorted(OURS.glob("*.ami"))


def _late_after_hangup(events: list[Event]) -> list[tuple[str, list[Event]]]:
    """Variants of a capture where one event about a channel arrives after that
    channel's Hangup.

    Asterisk allows this: app_queue publishes AgentComplete from its stasis router
    thread when it sees the HangupRequest, racing the channel thread's own Hangup.
    """
    variants = []
    for i, event in enumerate(events):
        uniqueid = event.raw.get("Uniqueid")
        if not uniqueid or event.name in ("Hangup", "Newchannel"):
            continue
        j = next((k for k in range(i + 1, len(events))
                  if events[k].name == "Hangup" and events[k].raw.get("Uniqueid") == uniqueid), None)
        if j is not None:
            variants.append((f"{i}:{event.name}", events[:i] + events[i + 1:j + 1] + [event] + events[j + 1:]))
    return variants


def _assert_nothing_left_live(tracker: CallTracker, what: str) -> None:
    assert not tracker.calls, f"{what}: calls left live {list(tracker.calls)}"
    assert not tracker.channels, f"{what}: channels left {[c.name for c in tracker.channels.values()]}"
    stuck = [m.name for m in tracker.members.values() if m.talking_to or m.ringing_for]
    assert not stuck, f"{what}: agents still busy with ended calls {stuck}"


def test_agent_complete_after_the_callers_hangup_does_not_resurrect_the_caller() -> None:
    """The CI failure of session 5: the caller hangs up, the late AgentComplete named
    the caller's (gone) channel, and the call stayed live after the agent leg ended."""
    events = load_capture(CAPTURE)
    names = [e.name for e in events]
    complete = names.index("AgentComplete")
    caller = events[complete].raw.get("Uniqueid")
    caller_hangup = next(i for i, e in enumerate(events) if e.name == "Hangup" and e.raw.get("Uniqueid") == caller)
    agent_hangup = next(i for i, e in enumerate(events) if e.name == "Hangup" and e.raw.get("Uniqueid") != caller)
    assert complete < caller_hangup < agent_hangup  # as recorded
    late = events[:complete] + events[complete + 1:caller_hangup + 1] + [events[complete]] + events[caller_hangup + 1:]
    tracker = CallTracker(clock=lambda: 0.0)
    out = tracker.feed_all(late)
    _assert_nothing_left_live(tracker, "AgentComplete after the caller's Hangup")
    ended = [e.call for e in out if e.kind == "call_ended"]
    assert len(ended) == 1 and ended[0]["outcome"] == "answered" and ended[0]["caller_num"] == "13800138000"
    # The late AgentComplete still tells a live call its talk time.
    assert ended[0]["talk_seconds"] is not None and ended[0]["talk_seconds"] > 1


@pytest.mark.parametrize("path", FIXTURES + OUR_CAPTURES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_a_late_event_never_keeps_a_call_live(path: Path) -> None:
    """Every event about a channel, delivered after that channel's Hangup instead of
    before it: the calls still all end and no agent stays busy with them."""
    events = load_json_fixture(path) if path.suffix == ".json" else load_capture(path)
    full = CallTracker(clock=lambda: 0.0)
    full.feed_all(events)
    _assert_nothing_left_live(full, "in recorded order")  # every capture ends all its calls
    variants = _late_after_hangup(events)
    assert variants
    for what, variant in variants:
        tracker = CallTracker(clock=lambda: 0.0)
        tracker.feed_all(variant)
        _assert_nothing_left_live(tracker, what)


def test_resync_with_a_list_older_than_the_events_fed_meanwhile() -> None:
    """CoreShowChannels is answered while events keep coming: the agent leg appears and
    the caller hangs up before the list is complete. The list must not undo either."""
    events = load_capture(CAPTURE)
    new = [i for i, e in enumerate(events) if e.name == "Newchannel"]
    assert len(new) == 2  # the caller, then the agent leg
    caller = events[new[0]].raw.get("Uniqueid")
    agent = events[new[1]].raw.get("Uniqueid")
    caller_hangup = next(i for i, e in enumerate(events) if e.name == "Hangup" and e.raw.get("Uniqueid") == caller)
    tracker = CallTracker(clock=lambda: 0.0)
    tracker.feed_all(events[:new[1]])
    listed = [events[new[0]].channel]  # the list as Asterisk took it: the caller only
    mark = tracker.events_seen
    tracker.feed_all(events[new[1]:caller_hangup + 1])
    assert tracker.resync(listed, since=mark) == []
    assert set(tracker.channels) == {agent}  # the agent leg stays, the caller is not adopted back
    out = tracker.feed_all(events[caller_hangup + 1:])
    ended = [e.call for e in out if e.kind == "call_ended"]
    assert len(ended) == 1 and ended[0]["outcome"] == "answered" and ended[0]["linkedid"] == caller
    _assert_nothing_left_live(tracker, "resync with an old list")
