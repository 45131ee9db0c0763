"""The call tracker on raw AMI captures of real sandbox calls, one per call-center scenario.

The captures are recorded by tests/integration/test_call_scenarios.py (see its docstring
to re-record them). Each scenario's high-level story is asserted here; every capture is
also replayed with its first k events dropped, for all k, without an exception.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cti.ami.events import Event, parse_event
from cti.ami.protocol import AMIParser
from cti.tracker import CallEvent, CallTracker

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ami"
SCENARIOS = ("ivr_hangup", "queue_abandoned", "queue_positions", "queue_timeout", "originate_success",
             "originate_failure",
             "answered_by_agent", "agent_no_answer_next", "blind_transfer", "attended_transfer")


def load(name: str) -> list[Event]:
    data = (FIXTURES / f"{name}.ami").read_bytes()
    return [parse_event(m) for m in AMIParser().feed(data) if m.kind == "event"]


def replay(name: str, **options: Any) -> tuple[CallTracker, list[CallEvent]]:
    # Recorded with the hotline's manager.conf filter, which includes HangupRequest.
    tracker = CallTracker(clock=lambda: 0.0, hangup_requests=True, **options)
    return tracker, tracker.feed_all(load(name))


def story(out: list[CallEvent]) -> list[str]:
    return [e.kind for e in out if e.kind != "agent_state"]


def ended(out: list[CallEvent], linkedid: str | None = None) -> dict[str, Any]:
    return next(e.call for e in out if e.kind == "call_ended" and linkedid in (None, e.linkedid))


def agent_story(out: list[CallEvent], agent: str) -> list[str]:
    return [e.data["state"] for e in out if e.kind == "agent_state" and e.data["agent"] == agent]


def test_every_scenario_was_recorded() -> None:
    assert {p.stem for p in FIXTURES.glob("*.ami")} >= set(SCENARIOS)


def test_ivr_hangup() -> None:
    _, out = replay("ivr_hangup")
    assert story(out) == ["call_started", "recording_started", "call_ended"]
    call = ended(out)
    assert call["outcome"] == "ivr_hangup" and call["hangup_by"] == "caller" and call["queue"] is None
    assert call["caller_num"] == "13900139001"


def test_queue_abandoned() -> None:
    tracker, out = replay("queue_abandoned")
    assert story(out) == ["call_started", "recording_started", "ivr_decided", "queue_joined", "queue_abandoned",
                          "call_ended"]
    abandoned = next(e for e in out if e.kind == "queue_abandoned")
    assert abandoned.data["queue"] == "complaint"
    assert abandoned.data["position"] == 1 and abandoned.data["original_position"] == 1
    assert abandoned.data["wait_seconds"] is not None and abandoned.data["wait_seconds"] >= 0
    call = ended(out)
    assert call["outcome"] == "abandoned" and call["queue_result"] == "abandoned" and call["abandoned"]
    assert call["menu_choice"] == "3" and call["hangup_by"] == "caller" and call["agent"] is None
    assert call["queue_left_at"] is not None


def test_queue_positions_move_up_when_a_caller_leaves() -> None:
    tracker, out = replay("queue_positions")
    joins = [e for e in out if e.kind == "queue_joined"]
    assert [(e.data["position"], e.data["count"]) for e in joins] == [(1, 1), (2, 2)]
    first, second = (e.linkedid for e in joins)
    abandons = [e for e in out if e.kind == "queue_abandoned"]
    assert [(e.linkedid, e.data["position"], e.data["original_position"]) for e in abandons] == [
        (first, 1, 1), (second, 1, 2)]
    # Between the two abandons the second caller was first in line.
    assert abandons[0].call["queue_position"] == 1
    assert tracker.call(second) is not None and tracker.call(second).queue_position == 1  # type: ignore[union-attr]
    assert [ended(out, lid)["outcome"] for lid in (first, second)] == ["abandoned", "abandoned"]


def test_queue_timeout_is_not_an_abandon() -> None:
    """app_queue sends QueueCallerAbandon on a timeout too; no HangupRequest came first."""
    _, out = replay("queue_timeout")
    assert story(out) == ["call_started", "originate_result", "queue_joined", "queue_timeout", "call_ended"]
    timeout = next(e for e in out if e.kind == "queue_timeout")
    assert timeout.data["queue"] == "installation" and timeout.data["wait_seconds"] == 3.0  # Queue(...,3)
    call = ended(out)
    assert call["outcome"] == "queue_timeout" and not call["abandoned"] and call["hangup_by"] == "system"
    assert call["origin"] == "queue-test"


def test_queue_timeout_without_hangup_requests_in_the_stream_stays_an_abandon() -> None:
    """Without HangupRequest (an unfiltered or older manager.conf) the two cannot be told apart."""
    tracker = CallTracker(clock=lambda: 0.0, hangup_requests=False)
    out = tracker.feed_all(load("queue_timeout"))
    assert "queue_abandoned" in story(out) and "queue_timeout" not in story(out)


def test_originate_success() -> None:
    _, out = replay("originate_success")
    assert story(out) == ["call_started", "originate_result", "call_ended"]
    result = next(e for e in out if e.kind == "originate_result")
    assert result.data["outcome"] == "answered" and result.data["reason"] == 4
    assert result.data["origin"] == "survey"
    call = ended(out)
    assert call["outcome"] == "answered" and call["origin"] == "survey"
    assert call["linkedid"].startswith("orig-")  # the ChannelId the Originator chose
    assert call["originate"]["outcome"] == "answered"


def test_originate_failure_busy() -> None:
    _, out = replay("originate_failure")
    assert story(out) == ["call_started", "originate_result", "call_ended"]
    result = next(e for e in out if e.kind == "originate_result")
    # Asterisk 22.10 says Reason 0 for a SIP 486; the leg's DialEnd BUSY and cause 17 say busy.
    assert result.data["reason"] == 0 and result.data["outcome"] == "busy"
    call = ended(out)
    assert call["outcome"] == "busy" and call["hangup_cause"] == 17 and call["hangup_by"] == "customer"


def test_originate_busy_when_the_response_comes_first() -> None:
    """Asterisk 22 also sends the OriginateResponse before the leg's HangupRequest and
    DialEnd (seen live): the same recorded events in that order give the same story."""
    events = load("originate_failure")
    response = next(e for e in events if e.name == "OriginateResponse")
    first_leg_event = next(i for i, e in enumerate(events) if e.name == "HangupRequest")
    reordered = [e for e in events if e is not response]
    reordered.insert(first_leg_event, response)
    tracker = CallTracker(clock=lambda: 0.0, hangup_requests=True)
    out = tracker.feed_all(reordered)
    call = ended(out)
    assert call["outcome"] == "busy" and call["originate"]["outcome"] == "busy"


def test_answered_by_agent_with_agent_states() -> None:
    tracker, out = replay("answered_by_agent")
    assert story(out) == ["call_started", "recording_started", "ivr_decided", "queue_joined", "agent_ringing",
                          "agent_answered", "call_ended"]
    call = ended(out)
    assert call["outcome"] == "answered" and call["agent"] == "1001" and call["hangup_by"] == "caller"
    assert call["talk_seconds"] is not None and 0 <= call["talk_seconds"] < 5  # AgentComplete TalkTime
    # Registered, rung, talking, idle again, phone stopped (un-REGISTER): logged out.
    assert agent_story(out, "1001") == ["available", "ringing", "in_call", "available", "unavailable"]
    assert tracker.agents()["1001"] == "unavailable"


def test_wrap_up_follows_a_queue_call_for_the_queue_wrapup_time() -> None:
    tracker, out = replay("answered_by_agent", queue_wrapup={"repair": 30})
    assert agent_story(out, "1001")[:4] == ["available", "ringing", "in_call", "wrap_up"]
    completed = next(e.at for e in out if e.kind == "agent_state" and e.data["state"] == "wrap_up")
    member = tracker.members[("repair", "1001")]
    assert member.state_at(completed + 29) in ("wrap_up", "unavailable")
    member.status = 1  # as if the phone were still registered
    assert member.state_at(completed + 29) == "wrap_up"
    assert member.state_at(completed + 31) == "available"


def test_wrap_up_end_is_reported_by_expire() -> None:
    """Asterisk says nothing when a wrap-up ends; the owner calls expire() at next_expiry()."""
    tracker = CallTracker(clock=lambda: 0.0, hangup_requests=True, queue_wrapup={"repair": 30})
    out: list[CallEvent] = []
    for event in load("answered_by_agent"):
        out += tracker.feed(event)
        if any(e.kind == "call_ended" for e in out):
            break  # before the phone is stopped (unregistered)
    assert tracker.agent_states["1001"] == "wrap_up"
    started = next(e.at for e in out if e.kind == "agent_state" and e.data["state"] == "wrap_up")
    until = tracker.next_expiry(now=started)
    assert until is not None and until == pytest.approx(started + 30)
    assert tracker.expire(now=until - 1) == []
    ended = tracker.expire(now=until)
    assert [(e.data["agent"], e.data["previous"], e.data["state"]) for e in ended] == [
        ("1001", "wrap_up", "available")]
    assert tracker.next_expiry(now=until) is None


def test_agent_no_answer_then_next_agent() -> None:
    _, out = replay("agent_no_answer_next")
    assert story(out) == ["call_started", "recording_started", "ivr_decided", "queue_joined", "agent_ringing",
                          "agent_no_answer", "agent_ringing", "agent_answered", "call_ended"]
    rung = [e.data["agent"] for e in out if e.kind == "agent_ringing"]
    missed = next(e for e in out if e.kind == "agent_no_answer")
    answered = next(e for e in out if e.kind == "agent_answered")
    assert len(set(rung)) == 2 and missed.data["agent"] == rung[0] and answered.data["agent"] == rung[1]
    assert missed.data["ring_time"] >= 14  # ring timeout 15 s (app_queue sends ms here)
    call = ended(out)
    assert call["no_answer_agents"] == [rung[0]] and call["agent"] == rung[1]
    assert call["hangup_by"] == "agent" and call["wait_seconds"] >= 15
    assert agent_story(out, rung[0])[:3] == ["available", "ringing", "available"]


def test_blind_transfer() -> None:
    _, out = replay("blind_transfer")
    assert story(out) == ["call_started", "recording_started", "ivr_decided", "queue_joined", "agent_ringing",
                          "agent_answered", "transferred", "call_ended"]
    transfer = next(e for e in out if e.kind == "transferred").data
    assert transfer == {"transfer_kind": "blind", "to": "1003", "context": "from-phones", "result": "Success",
                        "by": "1001"}
    call = ended(out)
    assert call["agent"] == "1001" and call["transferred_to"] == "1003" and call["outcome"] == "answered"
    assert agent_story(out, "1003")[:4] == ["available", "ringing", "in_call", "available"]


def test_attended_transfer() -> None:
    _, out = replay("attended_transfer")
    caller_call = next(e.linkedid for e in out if e.kind == "queue_joined")
    assert story([e for e in out if e.linkedid == caller_call]) == [
        "call_started", "recording_started", "ivr_decided", "queue_joined", "agent_ringing", "agent_answered",
        "transferred", "call_ended"]
    transfer = next(e for e in out if e.kind == "transferred").data
    assert transfer["transfer_kind"] == "attended" and transfer["to"] == "1003" and transfer["by"] == "1001"
    assert transfer["result"] == "Success" and transfer["consult_linkedid"] not in ("", caller_call)
    consult = ended(out, transfer["consult_linkedid"])
    assert consult["outcome"] == "consultation" and consult["consultation_for"] == caller_call
    call = ended(out, caller_call)
    assert call["agent"] == "1001" and call["transferred_to"] == "1003" and call["hangup_by"] == "caller"


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.ami")), ids=lambda p: p.stem)
def test_every_capture_replays_with_the_first_k_events_dropped(path: Path) -> None:
    events = load(path.stem)
    for k in range(len(events) + 1):
        for hangup_requests in (None, True):
            tracker = CallTracker(clock=lambda: 0.0, hangup_requests=hangup_requests)
            for event in events[k:]:
                tracker.feed(event)
            assert all(ch.linkedid for ch in tracker.channels.values())
            tracker.agents(now=0.0)


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_scenario_ends_every_call(name: str) -> None:
    tracker, out = replay(name)
    started = {e.linkedid for e in out if e.kind == "call_started"}
    assert started and started == {e.linkedid for e in out if e.kind == "call_ended"}
    assert not tracker.calls and not tracker.channels
