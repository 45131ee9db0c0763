"""The CTI event hub, tokens and the HTTP/websocket plumbing, without Asterisk."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cti.auth import AuthError, Principal, TokenStore
from cti.db import create_schema, make_engine, session_factory
from cti.screenpop import ScreenPop
from cti.stream import EventHub
from cti.tracker import CallEvent
from cti.web import HUB, SNAPSHOT, TOKENS, auth_middleware, requires, websocket

AGENT = Principal("li", "agent", "1001")
OTHER = Principal("wang", "agent", "1002")
SUPERVISOR = Principal("boss", "supervisor")


def test_agents_see_only_their_own_events() -> None:
    hub = EventHub()
    pop = hub.publish("screen_pop", {}, linkedid="L1", agent="1001")
    call = hub.publish("call", {}, linkedid="L1")
    status = hub.publish("status", {"fresh": True})
    assert pop.visible_to(AGENT) and not pop.visible_to(OTHER) and pop.visible_to(SUPERVISOR)
    assert not call.visible_to(AGENT) and call.visible_to(SUPERVISOR)
    assert status.visible_to(AGENT) and status.visible_to(OTHER)
    assert pop.to_json()["v"] == 1 and [pop.seq, call.seq, status.seq] == [1, 2, 3]


async def test_since_replays_and_knows_when_it_cannot() -> None:
    hub = EventHub(history_size=3)
    for i in range(5):
        hub.publish("screen_pop", {"i": i}, agent="1001")
    assert hub.since(0, AGENT) is None  # events 1 and 2 left the buffer
    replay = hub.since(3, AGENT)
    assert replay is not None and [e.seq for e in replay] == [4, 5]
    assert hub.since(5, AGENT) == []


async def test_slow_subscriber_is_dropped_never_blocks() -> None:
    hub = EventHub(subscriber_queue=3)
    slow = hub.subscribe(SUPERVISOR)
    fast = hub.subscribe(SUPERVISOR)
    for i in range(10):
        hub.publish("call", {"i": i})
        while not fast.queue.empty():
            fast.queue.get_nowait()
    assert slow.lagged and slow.closed and not fast.closed
    assert hub.subscribers == 1


def test_tokens_roles_and_hashing(tmp_path: Any) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 't.db'}")
    create_schema(engine)
    store = TokenStore(session_factory(engine))
    token = store.issue("li", "agent", "1001")
    assert store.check(token) == Principal("li", "agent", "1001")
    assert store.check("nope") is None and store.check("") is None and store.check("x" * 1000) is None
    with pytest.raises(AuthError):
        store.issue("x", "root")
    with pytest.raises(AuthError):
        store.issue("x", "agent")
    assert store.revoke(token) and store.check(token) is None
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("select token_sha256 from api_tokens").fetchall()
    assert all(token not in row[0] for row in stored)
    engine.dispose()


@requires("supervisor", "admin")
async def _watchers_only(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _anyone(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@pytest.fixture
async def client(tmp_path: Any) -> AsyncIterator[tuple[TestClient[Any, Any], dict[str, str], EventHub]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    create_schema(engine)
    store = TokenStore(session_factory(engine))
    tokens = {"agent": store.issue("li", "agent", "1001"), "other": store.issue("wang", "agent", "1002"),
              "supervisor": store.issue("boss", "supervisor")}
    hub = EventHub()
    app = web.Application(middlewares=[auth_middleware])
    app[TOKENS] = store
    app[HUB] = hub
    app[SNAPSHOT] = lambda p: {"calls": [], "who": p.user}
    app.router.add_get("/watch", _watchers_only)
    app.router.add_get("/any", _anyone)
    app.router.add_get("/ws", websocket)
    async with TestClient(TestServer(app)) as c:
        yield c, tokens, hub
    engine.dispose()


async def test_error_shapes(client: Any) -> None:
    c, tokens, _ = client
    resp = await c.get("/any")
    assert resp.status == 401 and (await resp.json())["error_id"] == "unauthenticated"
    resp = await c.get("/watch", headers={"Authorization": f"Bearer {tokens['agent']}"})
    body = await resp.json()
    assert resp.status == 403 and body["error_id"] == "forbidden" and body["details"]["allowed_roles"]
    resp = await c.get("/watch", headers={"Authorization": f"Bearer {tokens['supervisor']}"})
    assert resp.status == 200
    resp = await c.get("/nowhere", headers={"Authorization": f"Bearer {tokens['supervisor']}"})
    assert resp.status == 404 and (await resp.json())["error_id"] == "not-found"
    resp = await c.get("/ws", params={"token": tokens["agent"], "since": "x"})
    assert resp.status == 400 and (await resp.json())["error_id"] == "invalid-since"


async def test_websocket_snapshot_live_and_resume(client: Any) -> None:
    c, tokens, hub = client
    ws = await c.ws_connect("/ws", params={"token": tokens["agent"]})
    snapshot = await ws.receive_json(timeout=5)
    assert snapshot["type"] == "snapshot" and snapshot["data"]["who"] == "li"
    hub.publish("screen_pop", {"n": 1}, agent="1002")  # someone else's
    mine = hub.publish("screen_pop", {"n": 2}, agent="1001")
    got = await ws.receive_json(timeout=5)
    assert got["seq"] == mine.seq and got["data"] == {"n": 2}
    await ws.close()
    later = hub.publish("call_update", {"n": 3}, agent="1001")
    ws = await c.ws_connect("/ws", params={"token": tokens["agent"], "since": str(mine.seq)})
    resumed = await ws.receive_json(timeout=5)
    assert resumed["seq"] == later.seq  # exactly what was missed, no snapshot
    await ws.close()


async def test_screen_pop_goes_to_the_ringing_agent_with_the_lookup() -> None:
    hub = EventHub()
    lookups: list[str] = []

    def lookup(number: str) -> dict[str, Any]:
        lookups.append(number)
        return {"status": "match", "cards": [{"name": "张三"}]}

    pop = ScreenPop(hub, lookup)
    await pop.start()
    call = {"linkedid": "L1", "caller_num": "13800138000", "agent": None}
    pop.on_call_event(CallEvent("call_started", "L1", 1.0, call))
    pop.on_call_event(CallEvent("agent_ringing", "L1", 2.0, call, {"agent": "1001", "queue": "repair"}))
    pop.on_call_event(CallEvent("agent_ringing", "L1", 2.0, call, {"agent": "1002", "queue": "repair"}))
    answered = {**call, "agent": "1002"}
    pop.on_call_event(CallEvent("agent_answered", "L1", 3.0, answered, {"agent": "1002"}))
    pop.on_call_event(CallEvent("call_ended", "L1", 9.0, {**answered, "outcome": "answered"}))
    await asyncio.wait_for(pop.drain(), 5)
    await pop.stop()
    agent_events = [(e.agent, e.type, e.data.get("state")) for e in hub.since(0, SUPERVISOR) or [] if e.agent]
    assert agent_events == [
        ("1001", "screen_pop", "ringing"), ("1002", "screen_pop", "ringing"),
        ("1002", "call_update", "answered"), ("1001", "call_update", "answered_elsewhere"),
        ("1002", "call_update", "ended"),
    ]
    first_pop = next(e for e in hub.since(0, SUPERVISOR) or [] if e.type == "screen_pop")
    assert first_pop.data["customer"]["cards"][0]["name"] == "张三"
    assert lookups == ["13800138000"]  # looked up once per call


async def test_failing_lookup_still_pops() -> None:
    hub = EventHub()

    def broken(number: str) -> dict[str, Any]:
        raise RuntimeError("database down")

    pop = ScreenPop(hub, broken)
    await pop.start()
    call = {"linkedid": "L2", "caller_num": "x", "agent": None}
    pop.on_call_event(CallEvent("agent_ringing", "L2", 1.0, call, {"agent": "1001"}))
    await asyncio.wait_for(pop.drain(), 5)
    await pop.stop()
    event = next(e for e in hub.since(0, SUPERVISOR) or [] if e.type == "screen_pop")
    assert event.data["customer"]["status"] == "error"
