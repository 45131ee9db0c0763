"""Call-center scenarios with real calls through the sandbox Asterisk, checked through
the tracker (live), REST (/calls, /queues, /agents) and, when recording, kept as raw AMI
captures for the replay unit tests (tests/unit/test_tracker_scenarios.py).

Every run also captures each scenario alone with its own AMI tap and checks that the
capture, replayed through a fresh tracker, ends the calls as they ended live
(`test_recorded_scenarios_replay_as_they_ran_live`). Re-record every fixture with

    HOTLINE_RECORD_FIXTURES=1 .venv/bin/pytest tests/integration/test_call_scenarios.py -k replay

Scenarios that need no agent phone run concurrently; the ones that share agents 1001-1004
run one after another.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from cti import channel_vars as cv
from cti.ami.events import parse_event
from cti.ami.protocol import AMIParser
from cti.originate import OriginateRequest, OriginateResult, Originator
from cti.tracker import CallEvent, CallTracker
from dialplans.definition import HotlineDefinition
from hotline.sandbox import Sandbox
from hotline.service import HotlineService
from tests.support.ami_tap import AMITap
from tests.support.calls import PhoneFactory, agent_phone, carrier_headers, hotline_uri, wait_for

pytestmark = pytest.mark.asterisk

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ami"


@dataclass
class Scene:
    """What a scenario needs, and what it leaves for the checks."""

    sandbox: Sandbox
    service: HotlineService
    definition: HotlineDefinition
    phones: PhoneFactory
    events: list[CallEvent]
    linkedids: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def first(self, kind: str, **match: Any) -> CallEvent | None:
        for e in self.events:
            if e.kind == kind and all(e.call.get(k) == v or e.data.get(k) == v for k, v in match.items()):
                return e
        return None

    async def event(self, kind: str, timeout: float, **match: Any) -> CallEvent:
        try:
            found: CallEvent = await wait_for(lambda: self.first(kind, **match), timeout, f"{kind} {match}")
        except AssertionError as exc:
            seen = [(e.kind, e.data) for e in self.events if e.linkedid == match.get("linkedid", e.linkedid)
                    and e.kind != "agent_state"]
            raise AssertionError(f"{exc}; events seen: {seen}") from None
        return found

    async def ended(self, linkedid: str, timeout: float = 20) -> dict[str, Any]:
        return (await self.event("call_ended", timeout, linkedid=linkedid)).call

    async def agent_state(self, agent: str, state: str, timeout: float = 10) -> None:
        """Until the tracker shows `agent` in `state` in every queue they serve."""
        def reached() -> bool:
            members = [m for m in self.service.tracker.members.values() if m.name == agent]
            return bool(members) and all(m.state == state for m in members)

        await wait_for(reached, timeout, f"agent {agent} {state}")


async def _caller_in_menu(scene: Scene, caller_num: str) -> tuple[Any, str]:
    """A PSTN caller on the hotline, the IVR menu ready for a digit; returns (call, linkedid)."""
    ready: list[str] = []

    def on_ivr(caller: str, node: str, what: str) -> None:
        if caller == caller_num and node == "main" and what == "input":
            ready.append(node)

    # The IVR engine says when it starts accepting digits (a digit sent earlier is lost).
    scene.service.runner.watchers.append(on_ivr)
    try:
        caller = await scene.phones(f"c{caller_num}", username=caller_num)
        call = await caller.call(hotline_uri(scene.sandbox), headers=carrier_headers())
        await call.wait_state("CONFIRMED", timeout=10)
        started = await scene.event("call_started", 10, caller_num=caller_num)
        scene.linkedids.append(started.linkedid)
        await wait_for(lambda: ready, 20, f"the menu waiting for {caller_num}'s digit")
    finally:
        scene.service.runner.watchers.remove(on_ivr)
    return call, started.linkedid


async def _agents(scene: Scene, *ids: str, **kwargs: Any) -> list[Any]:
    phones = list(await asyncio.gather(*(agent_phone(scene.phones, scene.sandbox, scene.definition, a, **kwargs)
                                         for a in ids)))
    for agent in ids:
        await scene.agent_state(agent, "available")
    return phones


async def _stop(*phones: Any) -> None:
    """Stop phones now (unregister), so later scenarios find these agents logged out."""
    await asyncio.gather(*(p.stop() for p in phones))


# -- scenarios -------------------------------------------------------------------------------
async def ivr_hangup(scene: Scene) -> None:
    """The caller hangs up while the IVR menu plays."""
    call, linkedid = await _caller_in_menu(scene, "13900139001")
    await call.hangup()
    call_view = await scene.ended(linkedid)
    assert call_view["outcome"] == "ivr_hangup" and call_view["queue"] is None
    assert call_view["hangup_by"] == "caller"


async def queue_abandoned(scene: Scene) -> None:
    """Press 3 (complaint, no agent logged in), wait in the queue, hang up: abandoned."""
    call, linkedid = await _caller_in_menu(scene, "13900139002")
    await call.send_dtmf("3")
    joined = await scene.event("queue_joined", 15, linkedid=linkedid)
    assert joined.data["queue"] == "complaint" and joined.data["position"] >= 1
    waiting = scene.service.queues_view()["complaint"]
    assert waiting["waiting"] >= 1
    await call.hangup()
    abandoned = await scene.event("queue_abandoned", 10, linkedid=linkedid)
    assert abandoned.data["queue"] == "complaint" and abandoned.data["position"] >= 1
    assert abandoned.data["wait_seconds"] is not None
    call_view = await scene.ended(linkedid)
    assert call_view["outcome"] == "abandoned" and call_view["abandoned"] is True
    assert call_view["agent"] is None and call_view["queue"] == "complaint"


async def queue_positions(scene: Scene) -> None:
    """Two callers wait in complaint (nobody logged in); the first hangs up, the second moves up."""
    first, first_id = await _caller_in_menu(scene, "13900139008")
    await first.send_dtmf("3")
    await scene.event("queue_joined", 15, linkedid=first_id)
    second, second_id = await _caller_in_menu(scene, "13900139009")
    await second.send_dtmf("3")
    joined = await scene.event("queue_joined", 15, linkedid=second_id)
    assert joined.data["position"] == 2 and joined.data["count"] == 2
    assert scene.service.queues_view()["complaint"]["waiting"] == 2
    await first.hangup()
    left = await scene.event("queue_abandoned", 10, linkedid=first_id)
    assert left.data["position"] == 1
    waiting = scene.service.tracker.calls[second_id]
    assert waiting.queue_position == 1 and waiting.queue_original_position == 2
    await second.hangup()
    abandoned = await scene.event("queue_abandoned", 10, linkedid=second_id)
    assert abandoned.data["position"] == 1 and abandoned.data["original_position"] == 2
    await scene.ended(second_id)
    assert scene.service.queues_view().get("complaint", {}).get("waiting", 0) == 0


async def queue_timeout(scene: Scene) -> None:
    """A caller waits in a queue with nobody to answer until the queue's timeout."""
    customer = await scene.phones("cust-qtimeout", auto_answer=True)
    async with Originator(scene.service.ami) as originator:
        # Queue(installation,,,,3): the real app_queue timeout, shortened for the test
        # (the hotline's own queues wait up to 300 s).
        result = await originator.originate(OriginateRequest(
            f"PJSIP/carrier/sip:{customer.name}@127.0.0.1:{customer.sip_port}",
            application="Queue", data="installation,,,,3", caller_id='"Hotline" <4000>',
            variables={cv.ORIGIN: "queue-test"}))
    assert result.outcome == "answered"
    scene.linkedids.append(result.uniqueid)
    timed_out = await scene.event("queue_timeout", 20, linkedid=result.uniqueid)
    assert timed_out.data["queue"] == "installation" and timed_out.data["wait_seconds"] >= 2.5
    call_view = await scene.ended(result.uniqueid)
    assert call_view["outcome"] == "queue_timeout" and call_view["origin"] == "queue-test"


async def _originate(scene: Scene, phone: Any, timeout_s: float = 10) -> OriginateResult:
    async with Originator(scene.service.ami) as originator:
        result = await originator.originate(OriginateRequest(
            f"PJSIP/carrier/sip:{phone.name}@127.0.0.1:{phone.sip_port}", application="Wait", data="1",
            caller_id='"Hotline" <4000>', timeout_s=timeout_s, variables={cv.ORIGIN: "survey"}))
    scene.linkedids.append(result.uniqueid)
    return result


async def originate_success(scene: Scene) -> None:
    """An outbound survey call the customer answers."""
    customer = await scene.phones("cust-answer", auto_answer=True)
    result = await _originate(scene, customer)
    assert result.outcome == "answered"
    call_view = await scene.ended(result.uniqueid)
    assert call_view["origin"] == "survey" and call_view["outcome"] == "answered"
    assert call_view["originate"]["outcome"] == "answered"


async def originate_failure(scene: Scene) -> None:
    """An outbound survey call the customer's phone rejects as busy (486)."""
    customer = await scene.phones("cust-busy", reject_code=486)
    result = await _originate(scene, customer)
    assert (result.outcome, result.dial_status) == ("busy", "BUSY"), result
    call_view = await scene.ended(result.uniqueid)
    assert call_view["origin"] == "survey" and call_view["outcome"] == "busy"
    assert call_view["hangup_cause"] == 17  # Q.850 user busy


async def answered_by_agent(scene: Scene) -> None:
    """Press 1 (repair): agent 1001 (the only one logged in) answers; the caller hangs up."""
    (agent,) = await _agents(scene, "1001")
    call, linkedid = await _caller_in_menu(scene, "13900139003")
    await call.send_dtmf("1")
    ringing = await agent.wait_incoming(15)
    await scene.agent_state("1001", "ringing")
    await ringing.answer()
    await scene.event("agent_answered", 10, linkedid=linkedid, agent="1001")
    await scene.agent_state("1001", "in_call")
    await ringing.wait_media(5)
    await call.hangup()
    call_view = await scene.ended(linkedid)
    assert call_view["outcome"] == "answered" and call_view["agent"] == "1001"
    assert call_view["hangup_by"] == "caller"
    await scene.agent_state("1001", "available")
    await _stop(agent)


async def agent_no_answer_then_next(scene: Scene) -> None:
    """rrmemory over 1001 and 1002: the first rung agent lets it ring out, the next answers."""
    agents = await _agents(scene, "1001", "1002")
    call, linkedid = await _caller_in_menu(scene, "13900139004")
    await call.send_dtmf("1")
    first = await scene.event("agent_ringing", 15, linkedid=linkedid)
    first_agent = first.data["agent"]
    second_agent = "1002" if first_agent == "1001" else "1001"
    await scene.event("agent_no_answer", 25, linkedid=linkedid, agent=first_agent)  # ring timeout 15 s
    phone = agents[("1001", "1002").index(second_agent)]
    ringing = await phone.wait_incoming(10)
    await ringing.answer()
    await scene.event("agent_answered", 10, linkedid=linkedid, agent=second_agent)
    await ringing.wait_media(5)
    await ringing.hangup()  # the agent ends this one
    call_view = await scene.ended(linkedid)
    assert call_view["outcome"] == "answered" and call_view["agent"] == second_agent
    assert call_view["no_answer_agents"] == [first_agent]
    assert call_view["hangup_by"] == "agent"
    await _stop(*agents)


async def blind_transfer(scene: Scene) -> None:
    """1001 answers and blind-transfers (REFER) the caller to extension 1003, who answers."""
    agent, colleague = await _agents(scene, "1001", "1003")
    call, linkedid = await _caller_in_menu(scene, "13900139005")
    await call.send_dtmf("1")
    ringing = await agent.wait_incoming(15)
    await ringing.answer()
    await ringing.wait_media(5)
    await scene.event("agent_answered", 10, linkedid=linkedid, agent="1001")
    await ringing.transfer(f"sip:1003@127.0.0.1:{scene.sandbox.ports.sip}")
    transferred = await scene.event("transferred", 10, linkedid=linkedid)
    assert transferred.data["transfer_kind"] == "blind" and transferred.data["to"] == "1003", transferred.data
    assert await ringing.wait_transfer(10) == 200  # NOTIFY: Asterisk took the transfer
    await ringing.hangup()  # as a desk phone does once its REFER succeeded
    target = await colleague.wait_incoming(10)
    await target.answer()
    await target.wait_media(5)
    await scene.agent_state("1003", "in_call")
    await call.hangup()
    call_view = await scene.ended(linkedid)
    assert call_view["outcome"] == "answered" and call_view["agent"] == "1001"
    assert call_view["transferred_to"] == "1003"
    assert [t["transfer_kind"] for t in call_view["transfers"]] == ["blind"]
    await _stop(agent, colleague)


async def attended_transfer(scene: Scene) -> None:
    """1001 answers, holds the caller, consults 1003, then transfers (REFER/Replaces)."""
    agent, colleague = await _agents(scene, "1001", "1003")
    call, linkedid = await _caller_in_menu(scene, "13900139006")
    await call.send_dtmf("1")
    ringing = await agent.wait_incoming(15)
    await ringing.answer()
    await ringing.wait_media(5)
    await scene.event("agent_answered", 10, linkedid=linkedid, agent="1001")
    await ringing.hold()
    await ringing.wait_media_status("local_hold", 5)
    consult = await agent.call(f"sip:1003@127.0.0.1:{scene.sandbox.ports.sip}")
    target = await colleague.wait_incoming(10)
    await target.answer()
    await asyncio.gather(consult.wait_state("CONFIRMED", 10), target.wait_media(5))
    await ringing.transfer_to(consult)
    assert await ringing.wait_transfer(10) == 200
    transferred = await scene.event("transferred", 10, linkedid=linkedid)
    assert transferred.data["transfer_kind"] == "attended" and transferred.data["to"] == "1003", transferred.data
    await asyncio.gather(ringing.hangup(), consult.hangup())  # the agent's phone is done with both
    await asyncio.gather(ringing.wait_state("DISCONNECTED", 10), consult.wait_state("DISCONNECTED", 10))
    await target.wait_state("CONFIRMED", 5)  # the colleague now talks to the caller
    assert not target.ended
    await call.hangup()
    call_view = await scene.ended(linkedid)
    assert call_view["outcome"] == "answered" and call_view["transferred_to"] == "1003"
    assert [t["transfer_kind"] for t in call_view["transfers"]] == ["attended"]
    scene.notes["consult_linkedid"] = transferred.data.get("consult_linkedid")
    await _stop(agent, colleague)


Scenario = Callable[[Scene], Awaitable[None]]
SCENARIOS: dict[str, Scenario] = {
    "ivr_hangup": ivr_hangup,
    "queue_abandoned": queue_abandoned,
    "queue_timeout": queue_timeout,
    "queue_positions": queue_positions,
    "originate_success": originate_success,
    "originate_failure": originate_failure,
    "answered_by_agent": answered_by_agent,
    "agent_no_answer_next": agent_no_answer_then_next,
    "blind_transfer": blind_transfer,
    "attended_transfer": attended_transfer,
}


def _scene(sandbox: Sandbox, service: HotlineService, definition: HotlineDefinition, phones: PhoneFactory,
           events: list[CallEvent]) -> Scene:
    return Scene(sandbox, service, definition, phones, events)


async def test_call_center_scenarios_live(
    sandbox: Sandbox, service: HotlineService, service_server: TestServer, definition: HotlineDefinition,
    phones: PhoneFactory, tokens: dict[str, str],
) -> None:
    events: list[CallEvent] = []
    unsubscribe = service.subscribe(events.append)
    scenes: dict[str, Scene] = {}

    async def run(name: str) -> None:
        scenes[name] = scene = _scene(sandbox, service, definition, phones, events)
        await SCENARIOS[name](scene)

    async def sequential(*names: str) -> None:
        for name in names:
            await run(name)

    try:
        # No agent logged in: these only share Asterisk, so they run at once (the two
        # complaint-queue scenarios one after the other: positions are asserted).
        await asyncio.gather(sequential("queue_abandoned", "queue_positions"), run("ivr_hangup"),
                             run("queue_timeout"), run("originate_success"), run("originate_failure"))
        # These share agents 1001-1003 (their states are asserted): one at a time.
        await sequential("answered_by_agent", "agent_no_answer_next", "blind_transfer", "attended_transfer")
    finally:
        unsubscribe()

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {tokens['supervisor']}"}) as http:
        async with http.get(service_server.make_url("/calls")) as resp:
            assert resp.status == 200
            calls = await resp.json()
        recent = {c["linkedid"]: c for c in calls["recent"]}
        outcomes = {name: [recent[lid]["outcome"] for lid in scene.linkedids if lid in recent]
                    for name, scene in scenes.items()}
        assert outcomes == {
            "queue_abandoned": ["abandoned"], "ivr_hangup": ["ivr_hangup"], "queue_timeout": ["queue_timeout"],
            "queue_positions": ["abandoned", "abandoned"],
            "originate_success": ["answered"], "originate_failure": ["busy"],
            "answered_by_agent": ["answered"], "agent_no_answer_next": ["answered"],
            "blind_transfer": ["answered"], "attended_transfer": ["answered"],
        }
        assert not [c for c in calls["live"] if c["linkedid"] in recent]
        async with http.get(service_server.make_url("/agents")) as resp:
            agents = (await resp.json())["agents"]
        async with http.get(service_server.make_url("/queues")) as resp:
            queues = (await resp.json())["queues"]
    # Every phone was stopped (un-REGISTERed): the agents are shown logged out, and
    # nobody waits in any queue.
    for agent in ("1001", "1002", "1003"):
        assert agents[agent]["state"] == "unavailable", agents[agent]
    assert agents["1001"]["calls_taken"] >= 3
    assert all(q["waiting"] == 0 for q in queues.values()), queues


async def test_agent_states_over_rest(
    sandbox: Sandbox, service: HotlineService, service_server: TestServer, definition: HotlineDefinition,
    phones: PhoneFactory, tokens: dict[str, str],
) -> None:
    """Logged in, ringing, in call, paused: as the supervisor's /agents shows them."""
    events: list[CallEvent] = []
    unsubscribe = service.subscribe(events.append)
    scene = _scene(sandbox, service, definition, phones, events)
    configured_wrapup = service.tracker.queue_wrapup.get("repair")

    async def rest(path: str) -> dict[str, Any]:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {tokens['supervisor']}"}) as http:
            async with http.get(service_server.make_url(path)) as resp:
                assert resp.status == 200
                body: dict[str, Any] = await resp.json()
                return body

    async def agents_view() -> dict[str, Any]:
        agents: dict[str, Any] = (await rest("/agents"))["agents"]
        return agents

    try:
        (agent,) = await _agents(scene, "1002")
        assert (await agents_view())["1002"]["state"] == "available"
        await service.ami.send_action("QueuePause", {"Interface": "PJSIP/1002", "Paused": "true",
                                                     "Reason": "lunch"})
        await scene.agent_state("1002", "paused")
        view = (await agents_view())["1002"]
        assert view["state"] == "paused" and view["paused_reason"] == "lunch"
        paused_event = await scene.event("agent_state", 5, agent="1002", state="paused")
        assert paused_event.data["previous"] == "available"
        await service.ami.send_action("QueuePause", {"Interface": "PJSIP/1002", "Paused": "false"})
        await scene.agent_state("1002", "available")

        # A dynamic member logs in to one more queue (QueueMemberAdded) and out again (Removed).
        await service.ami.send_action("QueueAdd", {"Queue": "south", "Interface": "PJSIP/1002",
                                                   "MemberName": "1002"})
        await wait_for(lambda: ("south", "1002") in service.tracker.members, 5, "QueueMemberAdded")
        south = (await rest("/queues"))["queues"]["south"]
        assert {m["name"]: m["state"] for m in south["members"]}["1002"] == "available"
        assert "south" in (await agents_view())["1002"]["queues"]
        await service.ami.send_action("QueueRemove", {"Queue": "south", "Interface": "PJSIP/1002"})
        await wait_for(lambda: ("south", "1002") not in service.tracker.members, 5, "QueueMemberRemoved")
        assert "south" not in (await agents_view())["1002"]["queues"]

        call, linkedid = await _caller_in_menu(scene, "13900139007")
        await call.send_dtmf("1")
        ringing = await agent.wait_incoming(15)
        await scene.agent_state("1002", "ringing")
        assert (await agents_view())["1002"]["state"] == "ringing"
        repair = (await rest("/queues"))["queues"]["repair"]
        assert repair["waiting"] == 1 and repair["longest_wait_since"] is not None
        assert {m["name"]: m["state"] for m in repair["members"]}["1002"] == "ringing"
        live = {c["linkedid"]: c for c in (await rest("/calls"))["live"]}
        assert live[linkedid]["queue"] == "repair" and live[linkedid]["agent"] is None
        await ringing.answer()
        await scene.agent_state("1002", "in_call")
        assert (await agents_view())["1002"]["state"] == "in_call"
        assert (await rest("/queues"))["queues"]["repair"]["waiting"] == 0
        assert (await rest(f"/calls/{linkedid}"))["agent"] == "1002"
        # Wrap-up after the call: 2 s in the tracker's view of repair (as queues.conf
        # wrapuptime would say); the service reports its end, Asterisk sends nothing then.
        service.tracker.queue_wrapup["repair"] = 2
        await call.hangup()
        await scene.ended(linkedid)
        await scene.event("agent_state", 5, agent="1002", state="wrap_up")
        assert (await agents_view())["1002"]["state"] == "wrap_up"
        ended = await scene.event("agent_state", 5, agent="1002", state="available", previous="wrap_up")
        wrapped = scene.first("agent_state", agent="1002", state="wrap_up")
        assert wrapped is not None and 1.5 <= ended.at - wrapped.at <= 4
        assert (await agents_view())["1002"]["state"] == "available"
        await _stop(agent)
        await scene.agent_state("1002", "unavailable")
        assert (await agents_view())["1002"]["state"] == "unavailable"
    finally:
        if configured_wrapup is None:
            service.tracker.queue_wrapup.pop("repair", None)
        else:
            service.tracker.queue_wrapup["repair"] = configured_wrapup
        unsubscribe()


@pytest.mark.timeout(600)
async def test_recorded_scenarios_replay_as_they_ran_live(
    sandbox: Sandbox, service: HotlineService, definition: HotlineDefinition, phones: PhoneFactory,
    tmp_path: Path,
) -> None:
    """One scenario at a time, each with its own AMI tap, captured byte for byte; a fresh
    tracker fed the capture ends every call of the scenario as the live service did.
    With HOTLINE_RECORD_FIXTURES=1 the captures replace tests/fixtures/ami/<scenario>.ami
    (HOTLINE_RECORD_ONLY=a,b limits the run to those scenarios)."""
    out_dir = FIXTURES if os.environ.get("HOTLINE_RECORD_FIXTURES") == "1" else tmp_path
    secret = str(sandbox.load_or_create_secrets(definition)["ami_secret"])
    only = {n for n in os.environ.get("HOTLINE_RECORD_ONLY", "").split(",") if n}
    for name, scenario in SCENARIOS.items():
        if only and name not in only:
            continue
        events: list[CallEvent] = []
        unsubscribe = service.subscribe(events.append)
        try:
            async with AMITap(sandbox.ports.ami, "hotline", secret) as tap:
                scene = _scene(sandbox, service, definition, phones, events)
                await scenario(scene)
                for linkedid in scene.linkedids:
                    await scene.ended(linkedid)
                # The tap has seen everything the service has (same filter, same Asterisk):
                # a Ping round trip on the tap's own session marks the end of the capture.
                await tap.sync()
        finally:
            unsubscribe()
        capture = bytes(tap.data)
        (out_dir / f"{name}.ami").write_bytes(capture)
        live = {e.linkedid: e.call["outcome"] for e in events
                if e.kind == "call_ended" and e.linkedid in scene.linkedids}
        assert live, f"{name}: no call of the scenario ended"
        # Recorded with the hotline's manager.conf filter, which includes HangupRequest.
        replayed = CallTracker(clock=lambda: 0.0, hangup_requests=True).feed_all(
            [parse_event(m) for m in AMIParser().feed(capture) if m.kind == "event"])
        outcomes = {e.linkedid: e.call["outcome"] for e in replayed if e.kind == "call_ended"}
        assert {lid: outcomes.get(lid) for lid in live} == live, name
