"""Originate: request checks, headers, reason mapping and pacing (pure), and the
Originator's guarantees against a scripted AMI peer (held replies, a dropped
connection at the worst moment: what a real Asterisk cannot do on demand)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from cti.ami.client import AMIClient
from cti.ami.events import OriginateResponse, parse_event
from cti.ami.protocol import Message
from cti.originate import (
    InvalidOriginateRequest,
    OriginateRequest,
    OriginateResult,
    Originator,
    Pacer,
    originate_headers,
    outcome_for_reason,
    result_from_event,
)
from tests.support.fake_ami import FakeAMI, FakeSession


# -- requests -----------------------------------------------------------------------------
def test_dialplan_request_headers() -> None:
    req = OriginateRequest("PJSIP/2001", context="survey", exten="s", priority=1, caller_id='"Hotline" <4000>',
                           timeout_s=25, variables={"HOTLINE_ORIGIN": "survey", "__HOTLINE_JOB": "42"},
                           account_code="survey")
    headers = originate_headers(req, "orig-1")
    assert headers == {
        "Channel": "PJSIP/2001", "Async": "true", "Timeout": "25000", "ChannelId": "orig-1",
        "Context": "survey", "Exten": "s", "Priority": "1", "CallerID": '"Hotline" <4000>',
        "Account": "survey", "Variable": ["HOTLINE_ORIGIN=survey", "__HOTLINE_JOB=42"],
    }


def test_application_request_headers_and_default_priority() -> None:
    app = originate_headers(OriginateRequest("Local/1@x", application="Playback", data="beep"), "c")
    assert app["Application"] == "Playback" and app["Data"] == "beep"
    assert "Context" not in app and "Variable" not in app and "CallerID" not in app
    plan = originate_headers(OriginateRequest("PJSIP/1", context="c", exten="e"), "c")
    assert plan["Priority"] == "1"


def test_request_is_frozen_and_copies_variables() -> None:
    variables = {"HOTLINE_ORIGIN": "survey"}
    req = OriginateRequest("PJSIP/1", application="Wait", data="1", variables=variables)
    variables["HOTLINE_ORIGIN"] = "changed"
    assert req.variables["HOTLINE_ORIGIN"] == "survey"
    with pytest.raises(TypeError):
        req.variables["X"] = "1"  # type: ignore[index]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"channel": "PJSIP/1\r\nAction: Command", "application": "Wait"}, "line break"),
    ({"channel": "PJSIP/1", "application": "Wait", "caller_id": "x\nAction: Hangup"}, "caller_id"),
    ({"channel": "PJSIP/1", "application": "Wait", "variables": {"A": "1\r\nAction: Hangup"}}, "variable A"),
    ({"channel": "PJSIP/1", "application": "Wait", "variables": {"A": "1,B=2"}}, "','"),
    ({"channel": "PJSIP/1", "application": "Wait", "variables": {"A=B": "1"}}, "variable name"),
    ({"channel": "PJSIP/1", "application": "Wait", "variables": {"": "1"}}, "variable name"),
    ({"channel": "PJSIP/1", "application": "Wait", "data": "a\x00b"}, "data"),
    ({"channel": "PJSIP/1", "context": "c", "exten": "s\n"}, "exten"),
    ({"channel": "nochannel", "application": "Wait"}, "Tech/resource"),
    ({"channel": "", "application": "Wait"}, "channel"),
    ({"channel": "PJSIP/1"}, "either"),
    ({"channel": "PJSIP/1", "context": "c", "exten": "s", "application": "Wait"}, "either"),
    ({"channel": "PJSIP/1", "context": "c"}, "exten"),
    ({"channel": "PJSIP/1", "context": "c", "exten": "s", "priority": 0}, "priority"),
    ({"channel": "PJSIP/1", "application": "Wait", "timeout_s": 0}, "timeout_s"),
    ({"channel": "PJSIP/1", "application": "Wait", "timeout_s": "30"}, "timeout_s"),
    ({"channel": "PJSIP/1", "application": "Wait", "account_code": "a\rb"}, "account_code"),
])
def test_hostile_or_invalid_requests_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidOriginateRequest, match=message):
        OriginateRequest(**kwargs)  # type: ignore[arg-type]


# -- results ------------------------------------------------------------------------------
@pytest.mark.parametrize(("reason", "success", "outcome"), [
    (4, True, "answered"), (0, False, "failed"), (1, False, "no_answer"), (3, False, "no_answer"),
    (5, False, "busy"), (8, False, "congestion"), (4, False, "failed"), (99, False, "failed"),
    (None, False, "failed"),
])
def test_reason_codes_map_to_outcomes(reason: int | None, success: bool, outcome: str) -> None:
    assert outcome_for_reason(reason, success) == outcome


@pytest.mark.parametrize(("reason", "dial_status", "cause", "outcome"), [
    (0, "BUSY", 17, "busy"),  # what Asterisk 22.10 sends for a SIP 486 (recorded)
    (0, None, 17, "busy"),
    (0, "CHANUNAVAIL", None, "failed"),
    (3, "NOANSWER", None, "no_answer"),
    (0, "CONGESTION", 34, "congestion"),
    (0, None, 21, "failed"),
])
def test_leg_facts_refine_the_reason(reason: int, dial_status: str | None, cause: int | None, outcome: str) -> None:
    assert outcome_for_reason(reason, False, dial_status, cause) == outcome


def _response(**headers: str) -> OriginateResponse:
    event = parse_event(Message(tuple({"Event": "OriginateResponse", **headers}.items())))
    assert isinstance(event, OriginateResponse)
    return event


def test_result_from_event() -> None:
    ok = result_from_event(_response(ActionID="a-1", Response="Success", Channel="PJSIP/1003-00000001",
                                     Reason="4", Uniqueid="orig-1", Context="c", Exten="s"), "a-1", "orig-1")
    assert (ok.success, ok.outcome, ok.reason, ok.uniqueid, ok.channel) == (True, "answered", 4, "orig-1",
                                                                          "PJSIP/1003-00000001")
    failed = result_from_event(_response(ActionID="a-2", Response="Failure", Channel="PJSIP/1004", Reason="0",
                                         Uniqueid="<null>"), "a-2", "orig-2")
    assert (failed.success, failed.outcome, failed.uniqueid) == (False, "failed", "orig-2")
    assert not failed.must_reconcile


def test_pacer_spaces_starts_evenly() -> None:
    pacer = Pacer(4.0)
    assert [pacer.reserve(10.0) for _ in range(4)] == [0.0, 0.25, 0.5, 0.75]
    assert pacer.reserve(20.0) == 0.0  # idle time gives no burst credit
    assert pacer.reserve(20.0) == 0.25
    with pytest.raises(ValueError):
        Pacer(0)


# -- the Originator against a scripted peer -----------------------------------------------
def _queued(session: FakeSession, action: Message) -> None:
    session.respond(action, Message="Originate successfully queued")


def _originate_response(session: FakeSession, action: Message, response: str, reason: str) -> None:
    session.event("OriginateResponse", ActionID=action.action_id or "", Response=response,
                  Channel=action.get("Channel") or "", Context="", Exten="", Application="Wait", Data="1",
                  Reason=reason, Uniqueid=action.get("ChannelId") or "", CallerIDNum="<unknown>",
                  CallerIDName="<unknown>")


async def test_results_matched_by_action_id_out_of_order(server: FakeAMI, ami: AMIClient) -> None:
    held: list[tuple[FakeSession, Message]] = []

    async def hold(session: FakeSession, action: Message) -> None:
        _queued(session, action)
        held.append((session, action))
        if len(held) == 2:  # answer the second first
            _originate_response(session, held[1][1], "Failure", "5")
            _originate_response(session, held[0][1], "Success", "4")

    server.handlers["Originate"] = hold
    async with Originator(ami) as originator:
        first, second = await asyncio.gather(
            originator.originate(OriginateRequest("PJSIP/1001", application="Wait", data="1")),
            originator.originate(OriginateRequest("PJSIP/1002", application="Wait", data="1")),
        )
    assert (first.outcome, first.channel) == ("answered", "PJSIP/1001")
    assert (second.outcome, second.channel) == ("busy", "PJSIP/1002")
    sent = server.all_actions("Originate")
    assert {a.get("Async") for a in sent} == {"true"}
    assert len({a.action_id for a in sent}) == 2 and len({a.get("ChannelId") for a in sent}) == 2
    assert first.uniqueid == sent[[a.get("Channel") for a in sent].index("PJSIP/1001")].get("ChannelId")


async def test_connection_lost_before_response_is_unknown_and_never_resent(
    server: FakeAMI, ami: AMIClient
) -> None:
    async def queued_then_drop(session: FakeSession, action: Message) -> None:
        _queued(session, action)
        await session.drain()
        session.abort()

    server.handlers["Originate"] = queued_then_drop
    async with Originator(ami, response_grace_s=30) as originator:
        result = await originator.originate(
            OriginateRequest("PJSIP/1001", application="Wait", data="1", timeout_s=30))
        assert result.outcome == "unknown" and result.must_reconcile and not result.success
        assert result.uniqueid == server.all_actions("Originate")[0].get("ChannelId")
        await server.logged_in_session(2)  # the client reconnected ...
        await ami.wait_ready(5)
        assert len(server.all_actions("Originate")) == 1  # ... and sent nothing again
        assert originator.outcomes["unknown"] == 1


async def test_caller_chosen_channel_id(server: FakeAMI, ami: AMIClient) -> None:
    async def answer(session: FakeSession, action: Message) -> None:
        _queued(session, action)
        _originate_response(session, action, "Success", "4")

    server.handlers["Originate"] = answer
    request = OriginateRequest("PJSIP/1001", application="Wait", data="1")
    async with Originator(ami) as originator:
        result = await originator.originate(request, channel_id="survey-17-3")
        with pytest.raises(InvalidOriginateRequest):
            await originator.originate(request, channel_id="a\r\nAction: Hangup")
    assert result.uniqueid == "survey-17-3" and server.all_actions("Originate")[0].get("ChannelId") == "survey-17-3"
    assert len(server.all_actions("Originate")) == 1


async def test_no_reply_at_all_is_unknown(server: FakeAMI, ami: AMIClient) -> None:
    async def drop(session: FakeSession, action: Message) -> None:
        session.abort()

    server.handlers["Originate"] = drop
    async with Originator(ami) as originator:
        result = await originator.originate(OriginateRequest("PJSIP/1001", application="Wait", data="1"))
    assert result.outcome == "unknown"


async def test_not_ready_means_not_sent(server: FakeAMI, ami: AMIClient) -> None:
    await ami.stop()
    async with Originator(ami) as originator:
        result = await originator.originate(OriginateRequest("PJSIP/1001", application="Wait", data="1"))
    assert result.outcome == "not_sent" and not result.must_reconcile
    assert server.all_actions("Originate") == []


async def test_error_reply_is_failed(server: FakeAMI, ami: AMIClient) -> None:
    async def refuse(session: FakeSession, action: Message) -> None:
        session.respond(action, "Error", Message="Originate failed")

    server.handlers["Originate"] = refuse
    async with Originator(ami) as originator:
        result = await originator.originate(OriginateRequest("PJSIP/1001", application="Wait", data="1"))
    assert (result.outcome, result.message) == ("failed", "Originate failed")


async def test_concurrency_cap_holds_the_rest_back(server: FakeAMI, ami: AMIClient) -> None:
    held: list[tuple[FakeSession, Message]] = []

    async def hold(session: FakeSession, action: Message) -> None:
        _queued(session, action)
        held.append((session, action))

    server.handlers["Originate"] = hold
    async with Originator(ami, max_concurrent=2) as originator:
        tasks = [asyncio.create_task(originator.originate(
            OriginateRequest(f"PJSIP/10{i:02d}", application="Wait", data="1"))) for i in range(5)]
        await server.wait_until(lambda: len(held) == 2)
        # Three more are waiting for a slot: nothing else reaches Asterisk until one ends
        # (a Ping round trip: anything sent before it has been seen by the peer).
        await ami.send_action("Ping")
        assert len(server.all_actions("Originate")) == 2 and originator.in_flight == 2
        for step in range(3):
            session, action = held[step]
            _originate_response(session, action, "Success", "4")
            expected = step + 3
            await server.wait_until(lambda: len(held) == expected)  # noqa: B023 - awaited in this iteration
            assert originator.in_flight <= 2
        for session, action in held[3:]:
            _originate_response(session, action, "Failure", "3")
        results = await asyncio.gather(*tasks)
    assert sorted(r.outcome for r in results) == ["answered"] * 3 + ["no_answer"] * 2


async def test_pacing_limits_the_start_rate(server: FakeAMI, ami: AMIClient) -> None:
    loop = asyncio.get_running_loop()
    sent_at: list[float] = []

    async def answer(session: FakeSession, action: Message) -> None:
        sent_at.append(loop.time())
        _queued(session, action)
        _originate_response(session, action, "Success", "4")

    server.handlers["Originate"] = answer
    async with Originator(ami, rate_per_second=20) as originator:
        await asyncio.gather(*(originator.originate(OriginateRequest("PJSIP/1", application="Wait", data="1"))
                               for _ in range(5)))
    # 20/s: starts are booked on a 50 ms schedule. One start woken late (a busy machine)
    # leaves less than 50 ms to the next slot, so the check is the schedule: k starts
    # after another, at least k slots later, less one slot's worth of jitter.
    assert len(sent_at) == 5
    late = [(i, j, round(sent_at[j] - sent_at[i], 3)) for i in range(5) for j in range(i + 1, 5)
            if sent_at[j] - sent_at[i] < (j - i) * 0.05 - 0.035]
    assert not late, late
    assert sent_at[-1] - sent_at[0] >= 4 * 0.05 - 0.035, sent_at


class _BusyLeg:
    """The events of an outbound leg whose far end answers 486, as Asterisk 22 sends them."""

    def __init__(self, session: FakeSession, action: Message) -> None:
        leg = action.get("ChannelId") or ""
        self.session = session
        self.block = {"Channel": "PJSIP/carrier-00000000", "ChannelState": "0", "ChannelStateDesc": "Down",
                      "CallerIDNum": "<unknown>", "CallerIDName": "<unknown>", "ConnectedLineNum": "<unknown>",
                      "ConnectedLineName": "<unknown>", "Language": "en", "AccountCode": "", "Context": "from-trunk",
                      "Exten": "s", "Priority": "1", "Uniqueid": leg, "Linkedid": leg}

    def newchannel(self) -> None:
        self.session.event("Newchannel", self.block)

    def hangup_request(self) -> None:
        self.session.event("HangupRequest", {**self.block, "Cause": "17", "TechCause": "486"})

    def dial_end(self) -> None:
        self.session.event("DialEnd", {**{f"Dest{k}": v for k, v in self.block.items()}, "DialStatus": "BUSY"})

    def hangup(self) -> None:
        self.session.event("Hangup", {**self.block, "Cause": "17", "Cause-txt": "User busy"})


async def _originate_to_busy(server: FakeAMI, ami: AMIClient,
                             events: Callable[[FakeSession, Message, _BusyLeg], Awaitable[None]]) -> OriginateResult:
    """One originate whose leg is rejected busy; `events` sends the leg's events and the
    OriginateResponse in the order under test."""
    async def busy(session: FakeSession, action: Message) -> None:
        _queued(session, action)
        await events(session, action, _BusyLeg(session, action))

    server.handlers["Originate"] = busy
    async with Originator(ami) as originator:
        return await originator.originate(OriginateRequest("PJSIP/carrier/sip:c@127.0.0.1:5099",
                                                           application="Wait", data="1"))


async def test_busy_leg_events_before_the_response(server: FakeAMI, ami: AMIClient) -> None:
    """Asterisk 22 order for a 486: HangupRequest (cause 17), DialEnd BUSY, then
    OriginateResponse with Reason 0."""
    async def events(session: FakeSession, action: Message, leg: _BusyLeg) -> None:
        leg.hangup_request()
        leg.dial_end()
        _originate_response(session, action, "Failure", "0")

    result = await _originate_to_busy(server, ami, events)
    assert (result.outcome, result.reason, result.dial_status, result.hangup_cause) == ("busy", 0, "BUSY", 17)


async def test_busy_leg_events_after_the_response(server: FakeAMI, ami: AMIClient) -> None:
    """The other order Asterisk 22 also uses: OriginateResponse (Reason 0) first, then the
    leg's HangupRequest, DialEnd BUSY and Hangup; the Originator waits for the leg."""
    async def events(session: FakeSession, action: Message, leg: _BusyLeg) -> None:
        leg.newchannel()
        _originate_response(session, action, "Failure", "0")
        await session.drain()
        leg.hangup_request()
        leg.dial_end()
        leg.hangup()

    result = await _originate_to_busy(server, ami, events)
    assert (result.outcome, result.reason, result.dial_status, result.hangup_cause) == ("busy", 0, "BUSY", 17)


async def test_busy_response_between_the_hangup_request_and_the_dial_end(server: FakeAMI, ami: AMIClient) -> None:
    """Seen under load: the response overtakes the leg's DialEnd but not its HangupRequest.
    The cause alone must not end the wait: the DialEnd's status belongs in the result."""
    async def events(session: FakeSession, action: Message, leg: _BusyLeg) -> None:
        leg.newchannel()
        leg.hangup_request()
        _originate_response(session, action, "Failure", "0")
        await session.drain()
        await asyncio.sleep(0.2)  # Asterisk's stasis lagging behind: the client has the response
        leg.dial_end()
        leg.hangup()

    result = await _originate_to_busy(server, ami, events)
    assert (result.outcome, result.reason, result.dial_status, result.hangup_cause) == ("busy", 0, "BUSY", 17)


async def test_session_lost_future_follows_the_connection(server: FakeAMI, ami: AMIClient) -> None:
    kept = ami.session_lost()
    dropped = ami.session_lost()
    dropped.cancel()  # an originate that finished: its waiter leaves the client's list
    await asyncio.sleep(0)  # done-callbacks run on the next loop iteration
    assert dropped not in ami._session_waiters and kept in ami._session_waiters
    assert ami.new_action_id() != ami.new_action_id()
    (await server.logged_in_session(1)).abort()
    await asyncio.wait_for(kept, 5)
    await ami.wait_ready(5)
    assert not ami.session_lost().done()  # a new session, a new future
