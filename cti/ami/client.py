"""asyncio AMI client: the only I/O of `cti.ami`; it moves bytes between a socket and
the sans-I/O parser and keeps one logged-in session alive.

What it guarantees, and why:

* Events reach `on_event` synchronously, in wire order, from the reader itself: the
  call tracker is a reducer and must see events in the order Asterisk sent them.
* Subscriptions are bounded and never block the reader; a subscriber that falls
  behind is closed with `lagged=True` (it must resync) instead of stalling calls.
* Every action gets a unique ActionID (`<host>-<pid>-<random>-<n>`), so replies are
  matched even when several clients share one Asterisk, and late replies to
  abandoned actions are simply ignored.
* An action in flight when the connection drops fails with `AMIConnectionLost`
  and is never re-sent: re-sending an Originate would ring a customer twice.
  Callers reconcile from events instead.
* After every (re)login `on_connected` runs (resync: CoreShowChannels,
  QueueStatus) before `ready` turns true.
* Garbage from the peer (`ProtocolError`), a dead peer (unanswered Ping) or a
  refused login drop the connection and reconnect with capped, jittered
  exponential backoff; nothing propagates out of the connection task.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType, TracebackType
from typing import Final

from cti.ami.events import Event, Response, UnknownEvent, parse_event, parse_response
from cti.ami.protocol import AMIParser, Message, ProtocolError, encode_action

__all__ = [
    "AMIActionError",
    "AMIClient",
    "AMIConnectionLost",
    "AMIError",
    "AMITimeout",
    "Subscription",
]

log = logging.getLogger(__name__)

_NO_HEADERS: Final[Mapping[str, str | Sequence[str]]] = MappingProxyType({})
_READ_SIZE: Final = 64 * 1024


class AMIError(Exception):
    """Base of the AMI client's errors."""


class AMIActionError(AMIError):
    """Asterisk answered the action with `Response: Error` (or refused the login)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.message or f"AMI action failed ({response.response})")
        self.response = response


class AMIConnectionLost(AMIError):
    """Not connected, or the connection dropped before the reply. The action is never re-sent."""


class AMITimeout(AMIError, TimeoutError):
    """No reply in time. Asterisk may still have executed the action."""


class Subscription:
    """An ordered, bounded feed of events for one consumer (`async for event in sub`).

    The reader appends without ever waiting. When `maxsize` events are queued and
    another arrives, the subscription is closed with `lagged = True`: the consumer
    still gets what was queued, then iteration ends and it must resync. A closed
    subscription receives nothing more. Use `close()` (or `async with`) to detach.
    """

    def __init__(self, maxsize: int, on_close: Callable[[Subscription], None] | None = None) -> None:
        if maxsize <= 0:
            raise ValueError("maxsize must be positive")
        self.maxsize = maxsize
        self.lagged = False
        self.closed = False
        self._items: collections.deque[Event] = collections.deque()
        self._wakeup = asyncio.Event()
        self._on_close = on_close

    def __len__(self) -> int:
        return len(self._items)

    def _put(self, event: Event) -> None:
        if self.closed:
            return
        if len(self._items) >= self.maxsize:
            self.lagged = True
            log.warning("AMI subscriber fell %d events behind; closing it (it must resync)", self.maxsize)
            self.close()
            return
        self._items.append(event)
        self._wakeup.set()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._wakeup.set()
        if self._on_close is not None:
            self._on_close(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while not self._items:
            if self.closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._items.popleft()

    async def get(self, timeout: float | None = None) -> Event:
        """Next event; StopAsyncIteration when closed and drained, TimeoutError on timeout."""
        async with asyncio.timeout(timeout):
            return await self.__anext__()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _ListCollector:
    """Events of one list action (`EventList: start` ... `EventList: Complete`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.events: list[Event] = []
        self.done: asyncio.Future[list[Event]] = loop.create_future()
        # Mark a failure as retrieved even if nobody awaits it any more (the action
        # may have failed or timed out already), so asyncio logs no stray error.
        self.done.add_done_callback(lambda f: f.cancelled() or f.exception())

    def add(self, event: Event, msg: Message) -> None:
        if self.done.done():
            return
        if (msg.get("EventList") or "").lower() == "complete":
            expected = msg.get("ListItems")
            if expected is not None and expected.isdigit() and int(expected) != len(self.events):
                log.warning("AMI list %s announced %s items, got %d", event.name, expected, len(self.events))
            self.done.set_result(self.events)
        else:
            self.events.append(event)

    def fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


class AMIClient:
    """One AMI session to one Asterisk that logs in, resyncs and reconnects by itself.

    `connected`: the TCP connection is up. `ready`: logged in and `on_connected`
    finished. `last_event_at`: wall-clock time of the last message received (events
    and replies, so keep-alive Pongs count on an idle system). `reconnects`: number
    of successful logins after the first one.
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str,
        *,
        on_event: Callable[[Event], None] | None = None,
        on_connected: Callable[[AMIClient], Awaitable[None]] | None = None,
        on_disconnected: Callable[[], None] | None = None,
        event_mask: str = "on",
        ping_interval: float = 20.0,
        reconnect_min: float = 0.2,
        reconnect_max: float = 10.0,
        action_timeout: float = 10.0,
        action_id_prefix: str | None = None,
        max_message_bytes: int = 256 * 1024,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self._secret = secret
        self.on_event = on_event
        self.on_connected = on_connected
        self.on_disconnected = on_disconnected
        self.event_mask = event_mask
        self.ping_interval = ping_interval
        self.reconnect_min = reconnect_min
        self.reconnect_max = max(reconnect_max, reconnect_min)
        self.action_timeout = action_timeout
        self.max_message_bytes = max_message_bytes
        # Unique per process and per instance, so two services (or a restarted one)
        # on the same Asterisk never match each other's replies.
        self.action_id_prefix = action_id_prefix or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.connected = False
        self.ready = False
        self.last_event_at: float | None = None
        self.reconnects = 0
        self.logins = 0
        self.events_received = 0
        self._seq = itertools.count(1)
        self._rng = random.Random()
        self._writer: asyncio.StreamWriter | None = None
        self._logged_in = False
        self._pending: dict[str, asyncio.Future[Response]] = {}
        self._lists: dict[str, _ListCollector] = {}
        self._subscriptions: list[Subscription] = []
        self._ready_event = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False
        self._session_waiters: list[asyncio.Future[None]] = []

    def __repr__(self) -> str:
        state = "ready" if self.ready else "connected" if self.connected else "disconnected"
        return f"<AMIClient {self.username}@{self.host}:{self.port} {state}>"

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Start the owned connection task and return at once (see `wait_ready`)."""
        if self._runner is not None and not self._runner.done():
            return
        self._stopping = False
        self._runner = asyncio.create_task(self._run(), name=f"ami-{self.host}:{self.port}")

    async def wait_ready(self, timeout: float) -> None:
        """Wait until logged in and resynced; AMITimeout otherwise."""
        try:
            async with asyncio.timeout(timeout):
                await self._ready_event.wait()
        except TimeoutError:
            raise AMITimeout(f"AMI {self.host}:{self.port} not ready within {timeout}s") from None

    async def stop(self) -> None:
        """Log off if possible, cancel the connection task, close the socket and subscriptions."""
        self._stopping = True
        if self._logged_in:
            with contextlib.suppress(AMIError, TimeoutError, OSError):
                await self._request("Logoff", _NO_HEADERS, min(1.0, self.action_timeout))
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            # wait() instead of await: never swallow a cancellation aimed at our caller.
            await asyncio.wait({runner})
        self._teardown()
        for sub in list(self._subscriptions):
            sub.close()

    def subscribe(self, maxsize: int = 10000) -> Subscription:
        """A new ordered event feed; it sees events that arrive from now on."""
        sub = Subscription(maxsize, on_close=self._unsubscribe)
        self._subscriptions.append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subscriptions.remove(sub)

    # -- actions -------------------------------------------------------------------------
    async def send_action(
        self,
        action: str,
        headers: Mapping[str, str | Sequence[str]] = _NO_HEADERS,
        *,
        timeout: float | None = None,
        action_id: str | None = None,
    ) -> Response:
        """Send one action and return its reply.

        Raises AMIActionError (Response: Error), AMITimeout, AMIConnectionLost (not
        logged in, or lost before the reply; never re-sent) and ValueError for a
        header that would inject CR/LF. `action_id` (from `new_action_id()`) lets a
        caller match events that carry it before the reply is back.
        """
        self._require_session()
        return await self._request(action, headers, self.action_timeout if timeout is None else timeout,
                                   action_id=action_id)

    def new_action_id(self) -> str:
        """A fresh ActionID with this client's per-process prefix."""
        return self._next_id()

    async def send_list_action(
        self,
        action: str,
        headers: Mapping[str, str | Sequence[str]] = _NO_HEADERS,
        *,
        timeout: float | None = None,
    ) -> tuple[Response, list[Event]]:
        """Send a list action (CoreShowChannels, QueueStatus ...) and collect its events.

        The reply says `EventList: start`; events carrying our ActionID are collected
        (they do not go to `on_event` or subscribers) until the one with
        `EventList: Complete`, which ends the list and is not included. A success
        reply without `EventList` means the action produced no list: `[]`.
        The timeout covers the whole exchange.
        """
        self._require_session()
        action_id = self._next_id()
        collector = _ListCollector(asyncio.get_running_loop())
        self._lists[action_id] = collector
        limit = self.action_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                response = await self._request(action, headers, None, action_id=action_id)
                if not response.is_list:
                    return response, collector.events
                events = await collector.done
        except TimeoutError:
            raise AMITimeout(f"AMI list action {action} not complete within {limit}s") from None
        finally:
            self._lists.pop(action_id, None)
        return response, events

    def session_lost(self) -> asyncio.Future[None]:
        """A future resolved when the current session ends (at once if there is none).

        For replies that arrive as events after the action's own reply (an async
        Originate's OriginateResponse): a waiter learns that the reply may never
        come, instead of waiting out its timeout.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self._logged_in:
            future.set_result(None)
        else:
            self._session_waiters.append(future)
            future.add_done_callback(self._forget_session_waiter)  # a cancelled waiter leaves the list
        return future

    def _forget_session_waiter(self, future: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self._session_waiters.remove(future)

    def _require_session(self) -> None:
        if not self._logged_in or self._writer is None:
            raise AMIConnectionLost(f"AMI {self.host}:{self.port} is not connected")

    def _next_id(self) -> str:
        return f"{self.action_id_prefix}-{next(self._seq)}"

    async def _request(
        self,
        action: str,
        headers: Mapping[str, str | Sequence[str]],
        timeout: float | None,
        *,
        action_id: str | None = None,
    ) -> Response:
        writer = self._writer
        if writer is None or not self.connected:
            raise AMIConnectionLost(f"AMI {self.host}:{self.port} is not connected")
        action_id = action_id or self._next_id()
        data = encode_action(action, action_id, headers)  # ValueError (our misuse) before anything is sent
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._pending[action_id] = future
        try:
            writer.write(data)
            async with asyncio.timeout(timeout):
                await writer.drain()
                response = await future
        except TimeoutError:
            raise AMITimeout(f"no reply to AMI {action} within {timeout}s") from None
        except ConnectionError as exc:
            raise AMIConnectionLost(f"AMI connection lost while sending {action}: {exc}") from exc
        finally:
            self._pending.pop(action_id, None)
        if not response.success:
            raise AMIActionError(response)
        return response

    # -- connection --------------------------------------------------------------------
    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            logins_before = self.logins
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except ProtocolError as exc:
                log.error("AMI %s:%s sent malformed data (%s); reconnecting", self.host, self.port, exc)
            except AMIActionError as exc:
                log.error("AMI login to %s:%s as %r refused: %s", self.host, self.port, self.username, exc)
            except (OSError, TimeoutError, AMIError) as exc:
                if not self._stopping:
                    log.warning("AMI %s:%s: %s", self.host, self.port, exc or type(exc).__name__)
            except Exception:
                # e.g. a bug in on_connected: state was not resynced, so do not go ready.
                log.exception("AMI %s:%s session failed", self.host, self.port)
            finally:
                self._teardown()
            if self._stopping:
                break
            if self.logins > logins_before:
                failures = 0
            delay = min(self.reconnect_max, self.reconnect_min * 2 ** min(failures, 30))
            delay *= self._rng.uniform(0.5, 1.0)  # jitter: many clients must not reconnect in step
            failures += 1
            log.info("AMI %s:%s reconnecting in %.2fs", self.host, self.port, delay)
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        async with asyncio.timeout(self.action_timeout):
            reader, writer = await asyncio.open_connection(self.host, self.port)
        self._writer = writer
        self.connected = True
        log.info("AMI connected to %s:%s", self.host, self.port)
        parser = AMIParser(self.max_message_bytes)
        reader_task = asyncio.create_task(self._read_loop(reader, parser), name="ami-reader")
        control_task = asyncio.create_task(self._login_and_keepalive(), name="ami-control")
        tasks = (reader_task, control_task)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
        for task in tasks:  # reader first: its error explains the control task's
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error

    async def _read_loop(self, reader: asyncio.StreamReader, parser: AMIParser) -> None:
        while True:
            chunk = await reader.read(_READ_SIZE)
            if not chunk:
                raise ConnectionResetError("Asterisk closed the AMI connection")
            try:
                messages = parser.feed(chunk)
            except ProtocolError as exc:
                for message in exc.messages:  # complete ones before the bad frame keep their order
                    self._dispatch(message)
                raise
            for message in messages:
                self._dispatch(message)

    async def _login_and_keepalive(self) -> None:
        await self._request(
            "Login",
            {"Username": self.username, "Secret": self._secret, "Events": self.event_mask},
            self.action_timeout,
        )
        self._logged_in = True
        self.logins += 1
        if self.logins > 1:
            self.reconnects += 1
        log.info("AMI logged in to %s:%s as %r", self.host, self.port, self.username)
        if self.on_connected is not None:
            await self.on_connected(self)
        self.ready = True
        self._ready_event.set()
        while True:
            await asyncio.sleep(self.ping_interval)
            try:
                await self._request("Ping", _NO_HEADERS, self.action_timeout)
            except AMITimeout:
                # TCP may look fine while Asterisk is hung or a middlebox dropped state.
                raise AMIConnectionLost(f"Ping unanswered for {self.action_timeout}s; dropping connection") from None

    def _teardown(self) -> None:
        was_connected = self.connected
        self.connected = False
        self.ready = False
        self._logged_in = False
        self._ready_event.clear()
        writer, self._writer = self._writer, None
        if writer is not None and not writer.is_closing():
            writer.close()
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(AMIConnectionLost("AMI connection lost before the reply; not re-sent"))
        for collector in self._lists.values():
            collector.fail(AMIConnectionLost("AMI connection lost during a list action"))
        waiters, self._session_waiters = self._session_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        if was_connected:
            log.info("AMI disconnected from %s:%s", self.host, self.port)
            if self.on_disconnected is not None:
                try:
                    self.on_disconnected()
                except Exception:
                    log.exception("AMI on_disconnected hook failed")

    # -- inbound -------------------------------------------------------------------------
    def _dispatch(self, msg: Message) -> None:
        self.last_event_at = time.time()
        kind = msg.kind
        action_id = msg.action_id
        if kind == "response":
            future = self._pending.get(action_id) if action_id is not None else None
            if future is None or future.done():
                log.debug("AMI reply for unknown ActionID %r ignored", action_id)
                return
            future.set_result(parse_response(msg))
            return
        if kind != "event":
            log.debug("AMI message that is neither event nor response ignored: %r", msg.headers[:3])
            return
        self.events_received += 1
        try:
            event = parse_event(msg)
        except Exception:  # parse_event should never raise; if it does, keep the stream going
            log.exception("AMI event %s could not be typed", msg.name)
            event = UnknownEvent(msg.name, msg)
        if action_id is not None:
            collector = self._lists.get(action_id)
            if collector is not None:
                collector.add(event, msg)
                return
        self._deliver(event)

    def _deliver(self, event: Event) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # the tracker must never kill the reader
                log.exception("AMI on_event failed for %s", event.name)
        for sub in tuple(self._subscriptions):
            sub._put(event)
