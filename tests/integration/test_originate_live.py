"""AMI Originate against the real sandbox Asterisk: customers' phones that answer, reply
busy, never answer, an endpoint with nothing registered, and a dropped AMI session."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from cti.originate import OriginateRequest, OriginateResult, Originator
from hotline.sandbox import Sandbox
from hotline.service import HotlineService
from tests.support.calls import PhoneFactory, wait_for

pytestmark = pytest.mark.asterisk


def customer_channel(phone: Any) -> str:
    """Dial a (non-registered) customer phone through the sandbox's carrier trunk."""
    return f"PJSIP/carrier/sip:{phone.name}@127.0.0.1:{phone.sip_port}"


def call_ended(events: list[Any], linkedid: str) -> Callable[[], Any]:
    return lambda: next((e for e in events if e.kind == "call_ended" and e.linkedid == linkedid), None)


def survey_request(channel: str, **kwargs: Any) -> OriginateRequest:
    options: dict[str, Any] = {"application": "Wait", "data": "1", "caller_id": '"Hotline" <4000>',
                               "timeout_s": 10, "variables": {"HOTLINE_ORIGIN": "survey"}}
    options.update(kwargs)
    return OriginateRequest(channel, **options)


async def test_originate_outcomes_from_real_calls(
    sandbox: Sandbox, service: HotlineService, phones: PhoneFactory,
) -> None:
    answering, busy, silent = await asyncio.gather(
        phones("cust-answers", auto_answer=True),
        phones("cust-busy", reject_code=486),
        phones("cust-silent"),
    )
    events: list[Any] = []
    unsubscribe = service.subscribe(events.append)
    try:
        async with Originator(service.ami, max_concurrent=4) as originator:
            results: list[OriginateResult] = list(await asyncio.gather(
                originator.originate(survey_request(customer_channel(answering))),
                originator.originate(survey_request(customer_channel(busy))),
                originator.originate(survey_request(customer_channel(silent), timeout_s=3)),
                originator.originate(survey_request("PJSIP/1004")),  # an agent with no phone registered
                originator.originate(survey_request("PJSIP/no-such-endpoint")),
            ))
        ok, rejected, unanswered, unregistered, unknown_endpoint = results
        assert (ok.success, ok.outcome, ok.reason) == (True, "answered", 4)
        assert ok.channel.startswith("PJSIP/carrier-")
        # Asterisk 22.10 reports the 486 as Reason 0; the leg's DialEnd and cause say busy.
        assert (rejected.success, rejected.outcome, rejected.dial_status, rejected.hangup_cause) == (
            False, "busy", "BUSY", 17)
        assert (unanswered.outcome, unanswered.reason) == ("no_answer", 3)
        assert (unregistered.outcome, unregistered.reason) == ("failed", 0)
        assert (unknown_endpoint.outcome, unknown_endpoint.reason) == ("failed", 0)
        assert not any(r.must_reconcile for r in results)
        assert originator.sent == 5 and originator.in_flight == 0

        # Each phone saw exactly one INVITE, with our caller ID.
        for phone in (answering, busy, silent):
            incoming = [c for c in phone.calls if c.incoming]
            assert len(incoming) == 1, phone.name
            assert "4000" in incoming[0].remote_uri

        # The tracker knows the answered call by the Uniqueid we chose, tagged as a survey.
        ended = await wait_for(lambda: next((e for e in events if e.kind == "call_ended"
                                             and e.linkedid == ok.uniqueid), None), 15, "the survey call's end")
        assert ended.call["origin"] == "survey"
        # The tracker reports every OriginateResponse; the tag shows on those that made a channel.
        originated = {e.linkedid: e for e in events if e.kind == "originate_result"}
        assert {r.uniqueid for r in results} <= set(originated)
        assert {originated[r.uniqueid].data["origin"] for r in (ok, rejected, unanswered)} == {"survey"}
        for r in (unregistered, unknown_endpoint):  # no channel was ever created
            assert originated[r.uniqueid].call == {} and originated[r.uniqueid].data["outcome"] == r.outcome
        # Where a channel existed, the call's final outcome agrees (the response may come
        # before the leg's DialEnd and hangup; the call's end has every fact).
        for r in (ok, rejected, unanswered):
            call_end = await wait_for(call_ended(events, r.uniqueid), 15, f"end of {r.uniqueid}")
            assert call_end.call["outcome"] == r.outcome, r
            # The OriginateResponse may also come after the call has ended; then only the
            # originate_result event carries it, and the call's end has no originate part.
            if call_end.call["originate"] is not None:
                assert call_end.call["originate"]["outcome"] == r.outcome, r
    finally:
        unsubscribe()


async def test_ami_drop_before_originate_response_is_unknown_and_not_redialled(
    sandbox: Sandbox, service: HotlineService, phones: PhoneFactory,
) -> None:
    customer = await phones("cust-ringing")  # rings, never answers
    async with Originator(service.ami) as originator:
        task = asyncio.create_task(originator.originate(survey_request(customer_channel(customer), timeout_s=4)))
        incoming = await customer.wait_incoming(timeout=10)
        reconnects = service.ami.reconnects
        writer = service.ami._writer
        assert writer is not None
        writer.transport.abort()  # the AMI session dies while the customer's phone rings
        result = await task
        assert result.outcome == "unknown" and result.must_reconcile and result.reason is None
        await wait_for(lambda: service.ami.ready and service.ami.reconnects > reconnects, 15, "AMI back")
        # Asterisk kept ringing the one call it had; when its timeout ends it, nothing dials again.
        await incoming.wait_state("DISCONNECTED", timeout=15)
        assert originator.sent == 1
    calls = [c for c in customer.calls if c.incoming]
    assert len(calls) == 1
