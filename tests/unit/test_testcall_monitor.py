"""Live-monitoring helpers (cti.monitor): ChanSpy options per mode and the spy target."""

from __future__ import annotations

import pytest

from cti.monitor import MonitorError, chanspy_options, pick_agent_channel
from cti.tracker import Call, CallTracker, Channel


@pytest.mark.parametrize("mode, options", [("listen", "qES"), ("whisper", "qESw"), ("barge", "qESB")])
def test_chanspy_options(mode: str, options: str) -> None:
    assert chanspy_options(mode) == options


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(MonitorError) as info:
        chanspy_options("snoop")
    assert info.value.status == 400 and info.value.error_id == "invalid-mode"


def _tracker(agent: str | None) -> CallTracker:
    tracker = CallTracker(clock=lambda: 0.0)
    call = Call("L1", 0.0, channels={"L1", "U2", "U3"})
    tracker.channels["L1"] = Channel("L1", "L1", "PJSIP/carrier-00000001")
    tracker.channels["U2"] = Channel("U2", "L1", "PJSIP/1001-00000002")
    tracker.channels["U3"] = Channel("U3", "L1", "PJSIP/10010-00000003")  # another agent, same prefix digits
    if agent:
        call.agent, call.agent_interface = agent, f"PJSIP/{agent}"
    tracker.calls["L1"] = call
    return tracker


def test_the_agents_own_channel_is_the_target() -> None:
    assert pick_agent_channel(_tracker("1001"), "L1") == ("PJSIP/1001-00000002", "1001")


@pytest.mark.parametrize("agent, linkedid, status, error_id", [
    ("1001", "nope", 404, "call-not-found"),
    (None, "L1", 409, "no-agent-on-call"),
    ("1002", "L1", 409, "agent-channel-gone"),
])
def test_no_target(agent: str | None, linkedid: str, status: int, error_id: str) -> None:
    with pytest.raises(MonitorError) as info:
        pick_agent_channel(_tracker(agent), linkedid)
    assert (info.value.status, info.value.error_id) == (status, error_id)
