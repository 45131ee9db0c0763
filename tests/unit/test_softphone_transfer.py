"""Softphone hold and blind transfer (REFER) between pjsua2 phones on 127.0.0.1, no Asterisk.

The attended transfer (REFER with Replaces) is exercised against Asterisk, where the
hotline uses it (tests/integration/test_call_scenarios.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ivr.softphone import Softphone, SoftphoneError
from ivr.softphone.wire import WireError

PhoneMaker = Callable[..., Awaitable[Softphone]]


async def test_hold_and_unhold_renegotiate_media(phones: PhoneMaker) -> None:
    agent = await phones("agent-hold")
    caller = await phones("caller-hold", auto_answer=True)
    out = await agent.call(caller.uri)
    inc = await caller.wait_incoming(5)
    await asyncio.gather(out.wait_media_status("active", 5), inc.wait_media_status("active", 5))
    await out.hold()
    await asyncio.gather(out.wait_media_status("local_hold", 5), inc.wait_media_status("remote_hold", 5))
    assert not out.media_active
    await out.unhold()
    await asyncio.gather(out.wait_media_status("active", 5), inc.wait_media_status("active", 5))
    assert out.media_active and inc.media_active
    await out.send_dtmf("5")  # media flows again after unhold
    assert await inc.wait_dtmf(1, 5) == "5"
    await out.hangup()
    await inc.wait_state("DISCONNECTED", 5)


async def test_blind_transfer_refers_the_far_end(phones: PhoneMaker) -> None:
    agent = await phones("agent-xfer")
    customer = await phones("customer-xfer", auto_answer=True)
    colleague = await phones("colleague-xfer", auto_answer=True)
    out = await agent.call(customer.uri)
    inc = await customer.wait_incoming(5)
    await asyncio.gather(out.wait_state("CONFIRMED", 5), inc.wait_state("CONFIRMED", 5))

    await out.transfer(colleague.uri)
    transferred = await colleague.wait_incoming(5)  # the customer's phone calls the colleague
    assert "customer-xfer" in transferred.remote_uri
    assert await out.wait_transfer(10) == 200
    assert out.transfer_codes[0] in (100, 180, 183, 200) and out.transfer_codes[-1] == 200
    await transferred.wait_state("CONFIRMED", 5)
    await out.hangup()
    await transferred.hangup()
    new_leg = next(c for c in customer.calls if c is not inc)
    await new_leg.wait_state("DISCONNECTED", 5)


async def test_transfer_input_is_checked(phones: PhoneMaker) -> None:
    agent = await phones("agent-bad")
    other = await phones("other-bad", auto_answer=True)
    out = await agent.call(other.uri)
    await out.wait_state("CONFIRMED", 5)
    with pytest.raises(WireError):
        await out.transfer("sip:x@127.0.0.1\r\nX-Injected: 1")
    with pytest.raises(ValueError, match="itself"):
        await out.transfer_to(out)
    inc = await other.wait_incoming(5)
    with pytest.raises(ValueError, match="same phone"):
        await out.transfer_to(inc)
    await out.hangup()
    with pytest.raises(SoftphoneError, match="ended"):
        await out.transfer(other.uri)


async def test_attended_transfer_replaces_the_consultation(phones: PhoneMaker) -> None:
    """REFER with Replaces: the customer's phone calls the colleague with Replaces, the
    colleague's phone swaps its call with the agent for the new one."""
    agent = await phones("agent-att")
    customer = await phones("customer-att", auto_answer=True)
    colleague = await phones("colleague-att", auto_answer=True)
    held = await agent.call(customer.uri)
    customer_leg = await customer.wait_incoming(5)
    await asyncio.gather(held.wait_media_status("active", 5), customer_leg.wait_state("CONFIRMED", 5))
    await held.hold()
    await held.wait_media_status("local_hold", 5)
    consult = await agent.call(colleague.uri)
    colleague_leg = await colleague.wait_incoming(5)
    await asyncio.gather(consult.wait_state("CONFIRMED", 5), colleague_leg.wait_state("CONFIRMED", 5))

    await held.transfer_to(consult)
    assert await held.wait_transfer(10) == 200
    # The colleague's phone now has a second call (from the customer) that replaced the first.
    await colleague_leg.wait_state("DISCONNECTED", 10)
    await consult.wait_state("DISCONNECTED", 10)
    replaced = await wait_new_call(colleague, known=[colleague_leg])
    await replaced.wait_state("CONFIRMED", 10)
    assert "customer-att" in replaced.remote_uri
    new_leg = next(c for c in customer.calls if c is not customer_leg)
    await new_leg.wait_state("CONFIRMED", 10)
    await held.hangup()
    await new_leg.hangup()
    await replaced.wait_state("DISCONNECTED", 10)


async def wait_new_call(phone: Softphone, known: list[object]) -> Any:
    """A call the worker adopted by itself (no `incoming` event): it shows up in `calls`."""
    return await phone._wait_for(lambda: next((c for c in phone.calls if c not in known), None), 10,
                                 "a replacing call")
