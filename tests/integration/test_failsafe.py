"""No caller is left in silence: IVR failures and a dead service still reach the operator queue."""

from __future__ import annotations

from typing import Any

import pytest

from dialplans.definition import HotlineDefinition
from hotline.sandbox import Sandbox
from hotline.service import HotlineService
from ivr.agi.server import FastAGIServer
from tests.support.calls import PhoneFactory, agent_phone, carrier_headers, hotline_uri, wait_for

pytestmark = pytest.mark.asterisk


def _first(events: list[Any], kind: str, linkedid: str | None = None, caller: str | None = None) -> Any:
    for e in events:
        if e.kind == kind and (linkedid is None or e.linkedid == linkedid) and (
                caller is None or e.call.get("caller_num") == caller):
            return e
    return None


async def _call_until_operator(service: HotlineService, sandbox: Sandbox, definition: HotlineDefinition,
                               phones: PhoneFactory, caller_num: str) -> Any:
    events: list[Any] = []
    unsubscribe = service.subscribe(events.append)
    try:
        agent = await agent_phone(phones, sandbox, definition, "1003", auto_answer=True)
        caller = await phones(f"caller{caller_num}", username=caller_num)
        call = await caller.call(hotline_uri(sandbox), headers=carrier_headers())
        await call.wait_state("CONFIRMED", timeout=10)
        started = await wait_for(lambda: _first(events, "call_started", caller=caller_num), 10, "call_started")
        # The apology plays, then the operator queue rings an operator (1003 is only there).
        agent_call = await agent.wait_incoming(30)
        await agent_call.wait_state("CONFIRMED", timeout=10)
        await call.hangup()
        ended = await wait_for(lambda: _first(events, "call_ended", linkedid=started.linkedid), 15, "call_ended")
    finally:
        unsubscribe()
    return ended.call


async def test_ivr_crash_sends_caller_to_operator(
    sandbox: Sandbox, service: HotlineService, definition: HotlineDefinition, phones: PhoneFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(channel: Any) -> Any:
        raise RuntimeError("simulated bug in the IVR")

    failures = service.agi.failures
    monkeypatch.setattr(service.runner, "run", broken)
    call = await _call_until_operator(service, sandbox, definition, phones, "13500135000")
    assert service.agi.failures == failures + 1
    assert call["agi_failed"] is True
    assert call["queue"] == "operator" and call["agent"] == "1003"
    assert call["route_reason"] == "failsafe"
    assert call["outcome"] == "answered"


async def test_service_down_still_reaches_operator(
    sandbox: Sandbox, service: HotlineService, definition: HotlineDefinition, phones: PhoneFactory,
) -> None:
    """FastAGI unreachable (AGISTATUS=FAILURE): the dialplan alone routes the caller."""
    await service.agi.stop()
    try:
        call = await _call_until_operator(service, sandbox, definition, phones, "13600136000")
    finally:
        service.agi = FastAGIServer(dict(service.agi.handlers), host=service.agi.host, port=service.agi.port)
        await service.agi.start()
    assert call["queue"] == "operator" and call["agent"] == "1003"
    assert call["route_reason"] == "failsafe"
    assert call["menu_choice"] is None
