"""The asyncio AMI client against a scripted fake Asterisk (tests/support/fake_ami.py).

No fixed sleeps: every wait is for a condition (server state, a recorded event,
`wait_ready`), each bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from cti.ami import events as ev
from cti.ami.client import AMIActionError, AMIClient, AMIConnectionLost, AMITimeout
from cti.ami.protocol import Message, encode_message
from tests.support.fake_ami import FakeAMI, FakeSession, channel_headers

LOGGER = "cti.ami.client"


class Recorder:
    """on_event target that lets a test await what it has received."""

    def __init__(self) -> None:
        self.events: list[ev.Event] = []
        self._changed = asyncio.Event()

    def __call__(self, event: ev.Event) -> None:
        self.events.append(event)
        self._changed.set()

    def named(self, name: str) -> list[ev.Event]:
        return [e for e in self.events if e.name == name]

    async def wait(self, predicate: Callable[[list[ev.Event]], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self.events):
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
async def server() -> AsyncIterator[FakeAMI]:
    fake = FakeAMI()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


ClientFactory = Callable[..., AMIClient]


@pytest.fixture
async def make_client(server: FakeAMI) -> AsyncIterator[ClientFactory]:
    clients: list[AMIClient] = []

    def make(**kwargs: Any) -> AMIClient:
        options: dict[str, Any] = {
            "reconnect_min": 0.01, "reconnect_max": 0.05, "action_timeout": 2.0, "ping_interval": 60.0,
            "action_id_prefix": "test",
        }
        options.update(kwargs)
        secret = options.pop("secret", server.secret)
        client = AMIClient("127.0.0.1", server.port, server.username, secret, **options)
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            await client.stop()


async def noop(session: FakeSession, action: Message) -> None:
    """A handler that never replies: a hung Asterisk."""


async def started(client: AMIClient) -> AMIClient:
    await client.start()
    await client.wait_ready(5)
    return client


# -- login --------------------------------------------------------------------------------
async def test_login_then_ready(server: FakeAMI, make_client: ClientFactory) -> None:
    recorder = Recorder()
    client = await started(make_client(on_event=recorder, event_mask="call,agent,user"))
    assert client.connected and client.ready
    session = await server.logged_in_session(1)
    (login,) = session.received("Login")
    assert (login.get("Username"), login.get("Secret"), login.get("Events")) == ("hotline", "s3cret", "call,agent,user")
    assert (login.action_id or "").startswith("test-")
    await recorder.wait(lambda events: any(isinstance(e, ev.FullyBooted) for e in events))
    assert client.last_event_at is not None
    assert client.reconnects == 0 and client.logins == 1


async def test_default_action_id_prefix_is_unique_per_process() -> None:
    a = AMIClient("127.0.0.1", 1, "u", "s")
    b = AMIClient("127.0.0.1", 1, "u", "s")
    assert a.action_id_prefix != b.action_id_prefix
    assert a.action_id_prefix.startswith(socket.gethostname())


async def test_login_refused_retries_with_backoff(
    server: FakeAMI, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(secret="wrong")
    await client.start()
    await server.wait_until(lambda: len(server.all_actions("Login")) >= 3)
    assert not client.ready and server.logins == 0
    with pytest.raises(AMITimeout):
        await client.wait_ready(0.01)
    assert any("refused" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    server.secret = "wrong"  # the operator fixes the password: the next attempt succeeds
    await client.wait_ready(5)
    assert client.reconnects == 0  # the first successful login is not a reconnect


async def test_wait_ready_times_out_when_nothing_listens(make_client: ClientFactory) -> None:
    closed = FakeAMI()
    await closed.start()
    port = closed.port
    await closed.stop()
    client = make_client()
    client.port = port
    await client.start()
    with pytest.raises(TimeoutError):  # AMITimeout is a TimeoutError
        await client.wait_ready(0.2)
    assert not client.connected


# -- actions ---------------------------------------------------------------------------
async def test_replies_matched_by_action_id_out_of_order(server: FakeAMI, make_client: ClientFactory) -> None:
    server.handlers["Slow"] = noop
    client = await started(make_client())
    first = asyncio.create_task(client.send_action("Slow", {"N": "1"}))
    second = asyncio.create_task(client.send_action("Slow", {"N": "2"}))
    session = await server.logged_in_session(1)
    await session.wait_action("Slow", 2)
    by_n = {a.get("N"): a for a in session.received("Slow")}
    # Replies for ActionIDs we never used (another client, a timed-out action) are ignored.
    session.send(Response="Success", ActionID="someone-else-1", Message="not ours")
    session.send(Response="Success", Message="no ActionID at all")
    session.respond(by_n["2"], Message="second")
    session.respond(by_n["1"], Message="first")
    assert (await first).message == "first"
    assert (await second).message == "second"
    assert client.ready


async def test_error_response_raises_action_error(server: FakeAMI, make_client: ClientFactory) -> None:
    async def no_such_channel(session: FakeSession, action: Message) -> None:
        session.respond(action, "Error", Message="No such channel")

    server.handlers["Hangup"] = no_such_channel
    client = await started(make_client())
    with pytest.raises(AMIActionError) as info:
        await client.send_action("Hangup", {"Channel": "PJSIP/404-00000001"})
    assert info.value.response.message == "No such channel" and not info.value.response.success
    assert (await client.send_action("Ping")).raw.get("Ping") == "Pong"


async def test_action_timeout_and_late_reply_ignored(server: FakeAMI, make_client: ClientFactory) -> None:
    server.handlers["Slow"] = noop
    client = await started(make_client())
    with pytest.raises(AMITimeout):
        await client.send_action("Slow", timeout=0.05)
    session = await server.logged_in_session(1)
    session.respond(session.received("Slow")[0], Message="too late")
    assert (await client.send_action("Ping")).success
    assert client.ready and not client._pending


async def test_send_before_connect_and_injection(server: FakeAMI, make_client: ClientFactory) -> None:
    client = make_client()
    with pytest.raises(AMIConnectionLost):
        await client.send_action("Ping")
    await started(client)
    with pytest.raises(ValueError):
        await client.send_action("Originate", {"Channel": "PJSIP/1\r\nAction: Hangup"})
    await client.send_action("Ping")  # a full round trip: everything sent before it has arrived
    session = await server.logged_in_session(1)
    assert session.received("Originate") == [] and session.received("Hangup") == []


# -- list actions ----------------------------------------------------------------------
async def test_list_action_collects_its_events_only(server: FakeAMI, make_client: ClientFactory) -> None:
    recorder = Recorder()
    rows = [channel_headers(f"1700000000.{i}", f"PJSIP/100{i}-0000000{i}") for i in range(3)]

    async def interleaved(session: FakeSession, action: Message) -> None:
        aid = action.action_id or ""
        session.respond(action, EventList="start", Message="Channels will follow")
        session.event("CoreShowChannel", [("ActionID", aid), *rows[0].items()], Application="AGI",
                      ApplicationData="", Duration="00:00:01")
        session.event("Newchannel", channel_headers("1700000009.1", "PJSIP/live-1"))  # live traffic in between
        session.event("CoreShowChannel", [("ActionID", aid), *rows[1].items()], Application="Queue",
                      ApplicationData="repair", Duration="00:00:02")
        session.event("OriginateResponse", ActionID="test-old-originate", Response="Success", Channel="PJSIP/x",
                      Reason="4", Uniqueid="1700000009.2")
        session.event("CoreShowChannel", [("ActionID", aid), *rows[2].items()], Application="Dial",
                      ApplicationData="", Duration="00:00:03")
        session.event("CoreShowChannelsComplete", ActionID=aid, EventList="Complete", ListItems="3")

    server.handlers["CoreShowChannels"] = interleaved
    client = await started(make_client(on_event=recorder))
    response, items = await client.send_list_action("CoreShowChannels")
    assert response.is_list
    assert [type(e) for e in items] == [ev.CoreShowChannel] * 3
    assert [e.channel.uniqueid for e in items if isinstance(e, ev.CoreShowChannel) and e.channel] == [
        "1700000000.0", "1700000000.1", "1700000000.2"]
    # Everything before Complete on the wire has been dispatched by now.
    names = [e.name for e in recorder.events]
    assert "Newchannel" in names and "OriginateResponse" in names
    assert "CoreShowChannel" not in names and "CoreShowChannelsComplete" not in names
    assert not client._lists


async def test_queue_status_list_and_default_server(server: FakeAMI, make_client: ClientFactory) -> None:
    server.queue_members = [{"Queue": "repair", "Name": f"Agent {n}", "Location": f"PJSIP/{n}",
                             "StateInterface": f"PJSIP/{n}", "Membership": "static", "Penalty": "0",
                             "CallsTaken": "0", "LastCall": "0", "InCall": "0", "Status": "1", "Paused": "0"}
                            for n in (8001, 8002)]
    client = await started(make_client())
    _, members = await client.send_list_action("QueueStatus", {"Queue": "repair"})
    assert [(m.member_name, m.interface) for m in members if isinstance(m, ev.QueueMember)] == [
        ("Agent 8001", "PJSIP/8001"), ("Agent 8002", "PJSIP/8002")]
    _, empty = await client.send_list_action("CoreShowChannels")
    assert empty == []


async def test_list_action_error_and_no_list(server: FakeAMI, make_client: ClientFactory) -> None:
    async def refuse(session: FakeSession, action: Message) -> None:
        session.respond(action, "Error", Message="Permission denied")

    async def plain(session: FakeSession, action: Message) -> None:
        session.respond(action, Message="nothing to list")

    server.handlers["QueueStatus"] = refuse
    server.handlers["Plain"] = plain
    server.handlers["Slow"] = noop
    client = await started(make_client())
    with pytest.raises(AMIActionError):
        await client.send_list_action("QueueStatus")
    response, items = await client.send_list_action("Plain")
    assert response.message == "nothing to list" and items == []
    with pytest.raises(AMITimeout):
        await client.send_list_action("Slow", timeout=0.05)
    assert not client._lists and not client._pending


# -- ordering and subscribers ------------------------------------------------------------
async def test_event_order_preserved_under_load(server: FakeAMI, make_client: ClientFactory) -> None:
    total = 10_000
    recorder = Recorder()
    client = await started(make_client(on_event=recorder))
    sub = client.subscribe(maxsize=total + 10)
    session = await server.logged_in_session(1)
    session.send_raw(b"".join(encode_message([("Event", "UserEvent"), ("UserEvent", "Load"), ("Seq", str(i))])
                              for i in range(total)))
    await recorder.wait(lambda events: len(events) >= total + 1, timeout=60)
    seqs = [e.raw.get("Seq") for e in recorder.events if isinstance(e, ev.UserEvent)]
    assert seqs == [str(i) for i in range(total)]
    assert [(await sub.get(5)).raw.get("Seq") for _ in range(total)] == seqs
    assert not sub.lagged


async def test_slow_subscriber_never_blocks_on_event(server: FakeAMI, make_client: ClientFactory) -> None:
    recorder = Recorder()
    client = await started(make_client(on_event=recorder))
    slow = client.subscribe(maxsize=5)
    fast = client.subscribe(maxsize=1000)
    session = await server.logged_in_session(1)
    for i in range(100):
        session.event("UserEvent", UserEvent="Burst", Seq=str(i))
    await recorder.wait(lambda events: len([e for e in events if e.name == "UserEvent"]) == 100)
    assert slow.lagged and slow.closed
    assert [e.raw.get("Seq") async for e in slow] == ["0", "1", "2", "3", "4"]  # queued ones, then the end
    assert not fast.lagged and len(fast) == 100
    assert slow not in client._subscriptions
    async with client.subscribe() as scoped:
        assert scoped in client._subscriptions
    assert scoped.closed and scoped not in client._subscriptions


async def test_on_event_exception_does_not_stop_the_reader(
    server: FakeAMI, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    def fragile(event: ev.Event) -> None:
        seen.append(event.raw.get("Seq") or event.name)
        if event.raw.get("Seq") == "1":
            raise RuntimeError("tracker bug")

    recorder = Recorder()
    client = await started(make_client(on_event=fragile))
    sub = client.subscribe()
    session = await server.logged_in_session(1)
    for i in range(3):
        session.event("UserEvent", UserEvent="X", Seq=str(i))
    got = [(await sub.get(5)).raw.get("Seq") for _ in range(3)]
    assert got == ["0", "1", "2"] and seen[-3:] == ["0", "1", "2"]
    assert any("on_event failed" in r.getMessage() for r in caplog.records)
    assert client.ready and recorder.events == []


# -- faults ----------------------------------------------------------------------------
async def test_garbage_drops_connection_and_logs_in_again(
    server: FakeAMI, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    disconnects: list[int] = []
    client = await started(make_client(on_event=recorder, max_message_bytes=1024,
                                       on_disconnected=lambda: disconnects.append(1)))
    first = await server.logged_in_session(1)
    # Complete lines of junk are harmless: ignored, connection kept.
    first.send_raw(b"\xff\xfe\x00 not a header\r\n\r\n")
    # A good event, then a frame that never ends: the event still arrives, in order.
    first.send_raw(encode_message([("Event", "UserEvent"), ("UserEvent", "BeforeGarbage")])
                   + b"\x00\xffgarbage" * 200)
    second = await server.logged_in_session(2)
    await client.wait_ready(5)
    assert [e.raw.get("UserEvent") for e in recorder.named("UserEvent")] == ["BeforeGarbage"]
    assert client.reconnects == 1 and disconnects == [1]
    assert any("malformed" in r.getMessage() for r in caplog.records)
    assert (await client.send_action("Ping")).success
    assert second.received("Ping")


async def test_half_frame_then_close_reconnects(server: FakeAMI, make_client: ClientFactory) -> None:
    recorder = Recorder()
    client = await started(make_client(on_event=recorder))
    first = await server.logged_in_session(1)
    first.send_raw(b"Event: Newchannel\r\nChannel: PJSIP/half-00000001\r\nUniqueid: 17")
    await first.drain()
    first.close()
    await server.logged_in_session(2)
    await client.wait_ready(5)
    assert recorder.named("Newchannel") == []  # half a frame is never delivered
    assert len(recorder.named("FullyBooted")) == 2
    assert client.reconnects == 1


async def test_on_connected_runs_before_ready_after_every_login(
    server: FakeAMI, make_client: ClientFactory
) -> None:
    server.channels = [channel_headers("1700000000.1", "PJSIP/1001-00000001"),
                       channel_headers("1700000000.2", "PJSIP/1002-00000002")]
    seen: list[object] = []
    second_done = asyncio.Event()

    async def resync(client: AMIClient) -> None:
        seen.append(client.ready)
        _, channels = await client.send_list_action("CoreShowChannels")
        seen.append(len(channels))
        if len(seen) == 4:
            second_done.set()

    client = await started(make_client(on_connected=resync))
    assert seen == [False, 2] and client.ready
    (await server.logged_in_session(1)).abort()
    async with asyncio.timeout(5):
        await second_done.wait()
    await client.wait_ready(5)
    assert seen == [False, 2, False, 2]
    assert client.reconnects == 1


async def test_failing_on_connected_prevents_ready(
    server: FakeAMI, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    async def flaky(client: AMIClient) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("resync failed")

    client = await started(make_client(on_connected=flaky))
    assert len(calls) == 2 and server.logins == 2
    assert client.ready
    assert any("session failed" in r.getMessage() for r in caplog.records)


async def test_pending_action_fails_on_disconnect_and_is_not_resent(
    server: FakeAMI, make_client: ClientFactory
) -> None:
    async def drop(session: FakeSession, action: Message) -> None:
        session.abort()

    disconnects: list[int] = []
    server.handlers["Originate"] = drop
    client = await started(make_client(on_disconnected=lambda: disconnects.append(1)))
    with pytest.raises(AMIConnectionLost):
        await client.send_action("Originate", {"Channel": "PJSIP/13800138000@carrier", "Async": "true"})
    await client.wait_ready(5)
    second = await server.logged_in_session(2)
    await client.send_action("Ping")  # round trip: anything queued before has arrived
    assert second.received("Originate") == []
    assert len(server.all_actions("Originate")) == 1
    assert disconnects == [1]


async def test_pending_list_action_fails_on_disconnect(server: FakeAMI, make_client: ClientFactory) -> None:
    async def half_list(session: FakeSession, action: Message) -> None:
        session.respond(action, EventList="start", Message="Queue status will follow")
        session.event("QueueParams", ActionID=action.action_id or "", Queue="repair")
        await session.drain()
        session.abort()

    server.handlers["QueueStatus"] = half_list
    client = await started(make_client())
    with pytest.raises(AMIConnectionLost):
        await client.send_list_action("QueueStatus")
    await client.wait_ready(5)
    assert not client._lists and not client._pending


async def test_unanswered_ping_triggers_reconnect(
    server: FakeAMI, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async def ping_only_after_reconnect(session: FakeSession, action: Message) -> None:
        if session.number > 1:
            session.respond(action, Ping="Pong")

    server.handlers["Ping"] = ping_only_after_reconnect
    disconnects: list[int] = []
    client = await started(make_client(ping_interval=0.05, action_timeout=0.3,
                                       on_disconnected=lambda: disconnects.append(1)))
    second = await server.logged_in_session(2)
    await client.wait_ready(5)
    await second.wait_action("Ping")  # keep-alive continues on the new connection
    first = server.sessions[0]
    assert first.received("Ping") and client.reconnects == 1 and disconnects == [1]
    assert any("Ping unanswered" in r.getMessage() for r in caplog.records)


# -- shutdown ----------------------------------------------------------------------------
async def test_stop_logs_off_and_closes(server: FakeAMI, make_client: ClientFactory) -> None:
    disconnects: list[int] = []
    client = await started(make_client(on_disconnected=lambda: disconnects.append(1)))
    sub = client.subscribe()
    session = await server.logged_in_session(1)
    await client.stop()
    assert session.received("Logoff")
    async with asyncio.timeout(5):
        await session.closed.wait()
    assert not client.connected and not client.ready and sub.closed
    assert disconnects == [1]
    await client.stop()  # idempotent
    with pytest.raises(AMIConnectionLost):
        await client.send_action("Ping")
    assert len(server.sessions) == 1  # no reconnect after stop
