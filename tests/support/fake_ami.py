"""A scriptable fake Asterisk Manager Interface server for client tests.

It does what a real Asterisk cannot be made to do on demand: hold a reply back,
answer out of order, send garbage or half a frame, drop the connection mid-action.
Listens on 127.0.0.1 only, on a free port. Framing uses our own sans-I/O code in
both directions (AMI actions and events share the wire format).

Default behaviour follows Asterisk 22: greeting line, Login (checked against the
configured credentials, then FullyBooted), Ping, Logoff, and the list actions
CoreShowChannels and QueueStatus. Register `server.handlers["Action"]` to script
anything else, or to override a default; a handler that does not reply simulates
a hung Asterisk.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Final

from cti.ami.protocol import AMIParser, Message, ProtocolError, encode_message

if TYPE_CHECKING:
    from cti.ami.client import AMIClient

Headers = Mapping[str, str] | Iterable[tuple[str, str]]
Handler = Callable[["FakeSession", Message], Awaitable[None]]

GREETING: Final = b"Asterisk Call Manager/11.0.0\r\n"


def _pairs(headers: Headers | None, extra: Mapping[str, str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if headers is not None:
        out.extend(headers.items() if isinstance(headers, Mapping) else headers)
    out.extend(extra.items())
    return out


class FakeSession:
    """One client connection as the server sees it."""

    def __init__(self, server: FakeAMI, number: int, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.number = number  # 1 for the first connection, 2 after one reconnect ...
        self.reader = reader
        self.writer = writer
        self.actions: list[Message] = []
        self.logged_in = False
        self.closed = asyncio.Event()

    # -- sending ---------------------------------------------------------------------
    def send_raw(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    def send(self, headers: Headers | None = None, **extra: str) -> None:
        self.send_raw(encode_message(_pairs(headers, extra)))

    def respond(self, action: Message, response: str = "Success", headers: Headers | None = None,
                **extra: str) -> None:
        """Reply to `action`, echoing its ActionID like Asterisk does."""
        pairs = [("Response", response)]
        if action.action_id is not None:
            pairs.append(("ActionID", action.action_id))
        self.send(pairs + _pairs(headers, extra))

    def event(self, name: str, headers: Headers | None = None, **extra: str) -> None:
        self.send([("Event", name)] + _pairs(headers, extra))

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    def close(self) -> None:
        """Orderly close (FIN) after what was written."""
        if not self.writer.is_closing():
            self.writer.close()

    def abort(self) -> None:
        """Drop the connection at once, discarding unsent data."""
        self.writer.transport.abort()

    # -- receiving -------------------------------------------------------------------
    def received(self, name: str) -> list[Message]:
        return [a for a in self.actions if (a.get("Action") or "").lower() == name.lower()]

    async def wait_action(self, name: str, count: int = 1, timeout: float = 5.0) -> Message:
        """The `count`-th action named `name` received on this connection."""
        await self.server.wait_until(lambda: len(self.received(name)) >= count, timeout)
        return self.received(name)[count - 1]

    async def _serve(self) -> None:
        parser = AMIParser()
        try:
            self.send_raw(self.server.greeting)
            while True:
                chunk = await self.reader.read(65536)
                if not chunk:
                    return
                for action in parser.feed(chunk):
                    self.actions.append(action)
                    self.server._notify()
                    await self.server._handle(self, action)
                    await self.drain()
        except (ConnectionError, ProtocolError):
            return
        finally:
            self.close()
            self.closed.set()
            self.server._notify()


class FakeAMI:
    """The fake server: `await start()`, point a client at `port`, `await stop()`."""

    def __init__(self, username: str = "hotline", secret: str = "s3cret", *, greeting: bytes = GREETING) -> None:
        self.username = username
        self.secret = secret
        self.greeting = greeting
        self.port = 0
        self.sessions: list[FakeSession] = []
        self.handlers: dict[str, Handler] = {}
        self.channels: list[dict[str, str]] = []  # what CoreShowChannels reports
        self.queue_members: list[dict[str, str]] = []  # QueueMember entries QueueStatus reports
        self.accept_logins = True
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, host="127.0.0.1", port=0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in self.sessions:
            session.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FakeAMI:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- observing -------------------------------------------------------------------
    @property
    def logins(self) -> int:
        return sum(1 for s in self.sessions if s.logged_in)

    def all_actions(self, name: str) -> list[Message]:
        return [a for s in self.sessions for a in s.received(name)]

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait for a condition on server state, woken on every change (no polling sleeps)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def session(self, number: int, timeout: float = 5.0) -> FakeSession:
        """The `number`-th connection (1-based), once it exists."""
        await self.wait_until(lambda: len(self.sessions) >= number, timeout)
        return self.sessions[number - 1]

    async def logged_in_session(self, number: int, timeout: float = 5.0) -> FakeSession:
        """The `number`-th connection that logged in successfully."""
        def done() -> bool:
            return len([s for s in self.sessions if s.logged_in]) >= number

        await self.wait_until(done, timeout)
        return [s for s in self.sessions if s.logged_in][number - 1]

    def _notify(self) -> None:
        self._changed.set()

    # -- serving ---------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = FakeSession(self, len(self.sessions) + 1, reader, writer)
        self.sessions.append(session)
        self._notify()
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await session._serve()
        finally:
            self._tasks.discard(task)

    async def _handle(self, session: FakeSession, action: Message) -> None:
        name = action.get("Action") or ""
        handler = self.handlers.get(name) or self.handlers.get(name.lower())
        if handler is None:
            handler = _DEFAULTS.get(name.lower(), _unknown)
        if not session.logged_in and name.lower() not in ("login", "logoff") and handler in _DEFAULTS.values():
            session.respond(action, "Error", Message="Permission denied")
            return
        await handler(session, action)


async def _login(session: FakeSession, action: Message) -> None:
    server = session.server
    if (
        server.accept_logins
        and action.get("Username") == server.username
        and action.get("Secret") == server.secret
    ):
        session.respond(action, Message="Authentication accepted")
        session.logged_in = True
        server._notify()
        if (action.get("Events") or "on").lower() != "off":
            session.event("FullyBooted", Privilege="system,all", Uptime="12", LastReload="12",
                          Status="Fully Booted")
    else:
        session.respond(action, "Error", Message="Authentication failed")


async def _ping(session: FakeSession, action: Message) -> None:
    session.respond(action, Ping="Pong", Timestamp=f"{time.time():.6f}")


async def _logoff(session: FakeSession, action: Message) -> None:
    session.respond(action, "Goodbye", Message="Thanks for all the fish.")
    await session.drain()
    session.close()


async def _send_list(session: FakeSession, action: Message, item: str, complete: str,
                     items: list[dict[str, str]], message: str) -> None:
    session.respond(action, EventList="start", Message=message)
    aid = action.action_id or ""
    for headers in items:
        session.event(item, [("ActionID", aid), *headers.items()])
    session.event(complete, ActionID=aid, EventList="Complete", ListItems=str(len(items)))


async def _core_show_channels(session: FakeSession, action: Message) -> None:
    await _send_list(session, action, "CoreShowChannel", "CoreShowChannelsComplete",
                     session.server.channels, "Channels will follow")


async def _queue_status(session: FakeSession, action: Message) -> None:
    await _send_list(session, action, "QueueMember", "QueueStatusComplete",
                     session.server.queue_members, "Queue status will follow")


async def _unknown(session: FakeSession, action: Message) -> None:
    session.respond(action, "Error", Message="Invalid/unknown command")


_DEFAULTS: dict[str, Handler] = {
    "login": _login,
    "ping": _ping,
    "logoff": _logoff,
    "coreshowchannels": _core_show_channels,
    "queuestatus": _queue_status,
}


def channel_headers(uniqueid: str, channel: str, *, linkedid: str | None = None, caller: str = "1001",
                    prefix: str = "") -> dict[str, str]:
    """A channel snapshot block as Asterisk 22 writes it."""
    values = {
        "Channel": channel, "ChannelState": "6", "ChannelStateDesc": "Up", "CallerIDNum": caller,
        "CallerIDName": "<unknown>", "ConnectedLineNum": "<unknown>", "ConnectedLineName": "<unknown>",
        "Language": "en", "AccountCode": "", "Context": "hotline", "Exten": "400", "Priority": "1",
        "Uniqueid": uniqueid, "Linkedid": linkedid or uniqueid,
    }
    return {prefix + key: value for key, value in values.items()}


@contextlib.asynccontextmanager
async def ready_client(server: FakeAMI) -> AsyncIterator[AMIClient]:
    """A logged-in `AMIClient` on `server` that reconnects fast (tests of reconnects and
    originates), stopped on exit."""
    from cti.ami.client import AMIClient

    client = AMIClient("127.0.0.1", server.port, server.username, server.secret, reconnect_min=0.01,
                       reconnect_max=0.05, action_timeout=2.0, ping_interval=60.0, action_id_prefix="t")
    await client.start()
    await client.wait_ready(5)
    try:
        yield client
    finally:
        await client.stop()
