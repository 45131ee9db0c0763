"""CTI with real calls: screen pops on the ringing agent's websocket, reconnects, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from dialplans.definition import HotlineDefinition
from hotline.sandbox import Sandbox
from hotline.service import HotlineService
from tests.support.calls import PhoneFactory, agent_phone, carrier_headers, hotline_uri, wait_for

pytestmark = pytest.mark.asterisk

KNOWN_CALLER = "13800138000"  # demo data: open repair order, two products


class WSClient:
    """A websocket client that collects every message it receives."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.messages.append(msg.json())
                self._changed.set()

    async def wait(self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for m in self.messages:
                if predicate(m):
                    return m
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {what} within {timeout}s; got {[m['type'] for m in self.messages]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def close(self) -> None:
        await self.ws.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@pytest.fixture
async def ws_connect(service_server: TestServer) -> AsyncIterator[Callable[..., Any]]:
    session = aiohttp.ClientSession()
    clients: list[WSClient] = []

    async def connect(token: str, since: int | None = None) -> WSClient:
        url = service_server.make_url("/ws").with_query({"token": token, **({"since": since} if since else {})})
        client = WSClient(await session.ws_connect(url))
        clients.append(client)
        return client

    try:
        yield connect
    finally:
        for c in clients:
            await c.close()
        await session.close()


@pytest.fixture(scope="module")
def demo_customers(service: HotlineService) -> None:
    from cti.customers.demo import generate

    if service.customers.lookup(KNOWN_CALLER).status != "match":
        generate(service.sessions, 200, seed=7)


def _for_call(linkedid: str, type_: str, state: str | None = None) -> Callable[[dict[str, Any]], bool]:
    return lambda m: (m["type"] == type_ and m["linkedid"] == linkedid
                      and (state is None or m["data"].get("state") == state))


async def test_screen_pop_reaches_only_the_ringing_agent_before_answer(
    sandbox: Sandbox, service: HotlineService, definition: HotlineDefinition, phones: PhoneFactory,
    tokens: dict[str, str], ws_connect: Callable[..., Any], demo_customers: None,
) -> None:
    agents = {a: await agent_phone(phones, sandbox, definition, a) for a in ("1001", "1002")}
    ws = {a: await ws_connect(tokens[f"agent{a}"]) for a in agents}
    supervisor = await ws_connect(tokens["supervisor"])
    for client in (*ws.values(), supervisor):
        await client.wait(lambda m: m["type"] == "snapshot", 5, "snapshot")

    caller = await phones("known", username=KNOWN_CALLER)
    menu_entries = service.node_stats.entries["main"]
    call = await caller.call(hotline_uri(sandbox), headers=carrier_headers())
    await call.wait_state("CONFIRMED", timeout=10)
    await wait_for(lambda: service.node_stats.entries["main"] > menu_entries, 10, "the IVR menu")
    await call.send_dtmf("1")

    # Whichever agent the queue rings first: its phone rings, its websocket has the card.
    ringing = await asyncio.wait(
        {asyncio.ensure_future(p.wait_incoming(20)): a for a, p in agents.items()}.keys(),
        return_when=asyncio.FIRST_COMPLETED)
    done, pending = ringing
    for task in pending:
        task.cancel()
    agent_call = done.pop().result()
    agent = next(a for a, p in agents.items() if agent_call in p.calls)
    other = "1002" if agent == "1001" else "1001"

    pop = await ws[agent].wait(lambda m: m["type"] == "screen_pop", 5, "screen pop")
    assert agent_call.state != "CONFIRMED"  # the card is there while the phone still rings
    assert pop["v"] == 1 and pop["agent"] == agent and pop["data"]["state"] == "ringing"
    linkedid = pop["linkedid"]
    customer = pop["data"]["customer"]
    assert customer["status"] == "match"
    card = customer["cards"][0]
    assert card["products"] and all(p["installed_on"] for p in card["products"])
    assert any(o["kind"] == "repair" for o in card["service_orders"])
    assert card["open_repair"] is True
    assert card["address"]
    assert pop["data"]["call"]["caller_num"] == KNOWN_CALLER and pop["data"]["queue"] == "repair"

    await agent_call.answer()
    await ws[agent].wait(_for_call(linkedid, "call_update", "answered"), 5, "answered update")
    await call.hangup()
    ended = await ws[agent].wait(_for_call(linkedid, "call_update", "ended"), 10, "ended update")
    assert ended["data"]["outcome"] == "answered"
    # The call joined the customer's contact history.
    await service.flush()
    history = service.customers.card(card["id"])
    assert history is not None and history.recent_contacts[0].linkedid == linkedid
    # The supervisor saw the whole call; the other agent saw nothing of it.
    await supervisor.wait(lambda m: m["type"] == "call" and m["linkedid"] == linkedid
                          and m["data"]["kind"] == "call_ended", 5, "supervisor call_ended")
    assert not [m for m in ws[other].messages if m.get("linkedid") == linkedid]
    # Sequence numbers only grow, and a reconnecting client gets exactly what it missed.
    seqs = [m["seq"] for m in ws[agent].messages if m["type"] != "snapshot"]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    replay = await ws_connect(tokens[f"agent{agent}"], since=pop["seq"] - 1)
    await replay.wait(_for_call(linkedid, "call_update", "ended"), 5, "replayed end")
    replayed = [m for m in replay.messages if m.get("linkedid") == linkedid]
    assert [m["seq"] for m in replayed] == [m["seq"] for m in ws[agent].messages if m.get("linkedid") == linkedid]


async def test_agent_tokens_see_only_their_own_calls(
    service_server: TestServer, tokens: dict[str, str],
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(service_server.make_url("/calls")) as resp:
            assert resp.status == 401 and (await resp.json())["error_id"] == "unauthenticated"
        headers = {"Authorization": f"Bearer {tokens['agent1003']}"}
        async with http.get(service_server.make_url("/queues"), headers=headers) as resp:
            assert resp.status == 403 and (await resp.json())["error_id"] == "forbidden"
        async with http.get(service_server.make_url("/calls"), headers=headers) as resp:
            body = await resp.json()
            assert all(c["agent"] == "1003" for c in body["live"] + body["recent"])
        async with http.post(service_server.make_url("/customers/import"), headers=headers,
                             data="customer_no,name\nX-1,Mallory\n") as resp:
            assert resp.status == 403  # only admins change customer data
        async with http.get(service_server.make_url("/customers/lookup"), headers=headers,
                            params={"number": "13800138000"}) as resp:
            assert resp.status == 200
        admin = {"Authorization": f"Bearer {tokens['admin']}"}
        async with http.get(service_server.make_url("/calls"), headers=admin) as resp:
            every = await resp.json()
        other = next((c for c in every["recent"] if c["agent"] not in (None, "1003")), None)
        if other is not None:
            async with http.get(service_server.make_url(f"/calls/{other['linkedid']}"), headers=headers) as resp:
                assert resp.status == 404


async def _answered_call(sandbox: Sandbox, service: HotlineService, definition: HotlineDefinition,
                         phones: PhoneFactory, caller_num: str) -> tuple[Any, Any, str]:
    agents = [await agent_phone(phones, sandbox, definition, a, auto_answer=True) for a in ("1001", "1002")]
    caller = await phones(f"c{caller_num}", username=caller_num)
    menu_entries = service.node_stats.entries["main"]
    call = await caller.call(hotline_uri(sandbox), headers=carrier_headers())
    await call.wait_state("CONFIRMED", timeout=10)
    await wait_for(lambda: service.node_stats.entries["main"] > menu_entries, 10, "the IVR menu")
    await call.send_dtmf("2")
    answered = await wait_for(lambda: next((c for c in service.tracker.calls.values()
                                            if c.caller_num == caller_num and c.agent), None), 20, "agent answer")
    return call, agents, answered.linkedid


async def test_ami_socket_killed_mid_call_reconnects_and_resyncs(
    sandbox: Sandbox, service: HotlineService, definition: HotlineDefinition, phones: PhoneFactory,
    tokens: dict[str, str], ws_connect: Callable[..., Any],
) -> None:
    supervisor = await ws_connect(tokens["supervisor"])
    call, _agents, linkedid = await _answered_call(sandbox, service, definition, phones, "13100131000")
    reconnects = service.ami.reconnects
    writer = service.ami._writer
    assert writer is not None
    writer.transport.abort()  # the TCP connection to Asterisk dies mid-call
    await supervisor.wait(lambda m: m["type"] == "status" and m["data"]["fresh"] is False, 5, "stale flag")
    await call.hangup()  # the caller hangs up while we may still be away
    await supervisor.wait(lambda m: m["type"] == "status" and m["data"]["fresh"] is True, 15, "fresh again")
    assert service.ami.reconnects == reconnects + 1
    ended = await wait_for(lambda: (c := service.tracker.call(linkedid)) is not None and c.ended_at, 15, "call end")
    assert ended
    final = service.tracker.call(linkedid)
    assert final is not None
    assert final.outcome == "answered" and final.agent in ("1001", "1002") and final.queue == "installation"
    assert service.status()["ami"]["ready"] is True


async def test_asterisk_restart_mid_call_resets_and_recovers(
    sandbox: Sandbox, service: HotlineService, definition: HotlineDefinition, phones: PhoneFactory,
) -> None:
    call, _agents, linkedid = await _answered_call(sandbox, service, definition, phones, "13200132000")
    logins = service.ami.reconnects
    sandbox.stop()
    await wait_for(lambda: not service.ami.ready and service.tracker.needs_resync, 10, "the service to notice")
    assert service.status()["ami"]["resynced"] is False  # clients see the stale flag
    sandbox.start()
    await sandbox.wait_booted(timeout=30)
    # Reconnect backoff is capped at 10 s: allow for one full wait after Asterisk is back.
    await wait_for(lambda: service.ami.reconnects > logins and service.ami.ready and not service.tracker.needs_resync,
                   25, "a new login and resync after the restart")
    final = service.tracker.call(linkedid)
    assert final is not None and final.ended_at is not None  # the restart ended it; we noticed
    assert final.agent is not None
    assert not [c for c in service.tracker.calls.values() if c.caller_num == "13200132000"]
    with contextlib.suppress(Exception):
        await call.hangup()
    # And the hotline works again after the restart.
    call2, _agents2, linkedid2 = await _answered_call(sandbox, service, definition, phones, "13300133000")
    await call2.hangup()
    await wait_for(lambda: (c := service.tracker.call(linkedid2)) is not None and c.ended_at, 15, "second call end")
