"""Hardened asyncio FastAGI server: bounded input, timeouts, a failsafe for every failure.

Asterisk connects once per AGI(agi://host/<script>) call. The session reads the
environment block (bounded in size and time), picks the handler by script name and
runs it with an AGIChannel. What can go wrong, and what happens:

* the caller hangs up (HANGUP notice or EOF): AGIHangup inside the handler, which
  lets it propagate; the session ends quietly (debug log);
* the handler raises, sends no command for `idle_timeout`, the script is unknown,
  or too many sessions are open: the caller is sent to the `failsafe` dialplan
  location (SET VARIABLE HOTLINE_AGI_FAILED 1, SET CONTEXT/EXTENSION/PRIORITY)
  before the socket closes, so nobody is left in silence;
* the session is cancelled (stop()): failsafe as above, then CancelledError
  propagates; it is never swallowed;
* Asterisk sends garbage or nothing: the connection is closed; other sessions
  are unaffected.

Every session is a task the server owns; stop() cancels and awaits them all.
Per call the cost is kept low (tests/bench/bench_fastagi.py): the server accepts
every waiting connection in one loop pass, the socket feeds the parser straight from
a BufferedProtocol, one lazily re-armed timer carries every deadline, common answers
are parsed once, and a finished call leaves no reference cycles behind. It runs on
asyncio's loop or uvloop's (the service's default, see ivr.agi.eventloop).
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, cast

from cti import channel_vars as cv
from ivr.agi.errors import (
    AGIDeadChannel,
    AGIError,
    AGIHangup,
    AGIProtocolError,
    AGITimeout,
    check_response,
)
from ivr.agi.protocol import (
    AGIEnvironment,
    AGIItem,
    AGIParser,
    AGIResponse,
    HangupNotice,
    check_app_name,
    encode_app_args,
    encode_command,
)

log = logging.getLogger(__name__)

Handler = Callable[["AGIChannel"], Awaitable[None]]

#: Bytes read from the socket at a time, per connection (AGI lines are short).
READ_BUFFER: Final = 4096
#: Seconds accepting pauses when the process is out of file descriptors (asyncio's value).
ACCEPT_PAUSE = 1.0
#: Commands that last as long as a prompt plays or the caller types: never "slow".
LONG_COMMANDS: Final = frozenset({
    "STREAM FILE", "CONTROL STREAM FILE", "GET DATA", "GET OPTION", "WAIT FOR DIGIT", "EXEC",
    "RECORD FILE", "SAY ALPHA", "SAY DIGITS", "SAY NUMBER", "SAY PHONETIC", "SAY DATE", "SAY TIME",
    "SAY DATETIME", "SPEECH RECOGNIZE", "RECEIVE CHAR", "RECEIVE TEXT", "GOSUB",
})


class _SessionLog:
    """Prefixes every record with the channel and uniqueid, so one call's lines group."""

    __slots__ = ("_logger", "_env")

    def __init__(self, logger: logging.Logger, env: AGIEnvironment) -> None:
        self._logger = logger
        self._env = env

    def _log(self, level: int, msg: str, args: tuple[object, ...], exc_info: bool = False) -> None:
        if self._logger.isEnabledFor(level):
            prefix = f"[{self._env.channel or '?'} {self._env.uniqueid or '?'}]"
            self._logger.log(level, "%s " + msg, prefix, *args, exc_info=exc_info, stacklevel=3)

    def enabled(self, level: int) -> bool:
        return self._logger.isEnabledFor(level)

    def debug(self, msg: str, *args: object) -> None:
        self._log(logging.DEBUG, msg, args)

    def info(self, msg: str, *args: object) -> None:
        self._log(logging.INFO, msg, args)

    def warning(self, msg: str, *args: object) -> None:
        self._log(logging.WARNING, msg, args)

    def error(self, msg: str, *args: object) -> None:
        self._log(logging.ERROR, msg, args)

    def exception(self, msg: str, *args: object) -> None:
        self._log(logging.ERROR, msg, args, exc_info=True)


def _digit(resp: AGIResponse) -> str | None:
    """STREAM FILE / WAIT FOR DIGIT answer with the pressed key's ASCII code, 0 for none."""
    code = resp.result_int
    return chr(code) if code is not None and code > 0 else None


class _Watchdog:
    """One timer per connection for every deadline it has, re-armed lazily.

    The deadline moves on every command (command timeout while one runs, idle timeout
    between them) but almost never passes. Moving it later only updates a float; the
    loop timer is re-armed when it fires early, or when the deadline moves earlier.
    So a call costs one timer, not two per command (asyncio.timeout() and
    Timeout.reschedule() each push a TimerHandle onto the loop's heap).
    """

    __slots__ = ("_loop", "_expired", "_timer", "_armed_at", "_closed", "deadline", "kind")

    def __init__(self, loop: asyncio.AbstractEventLoop, expired: Callable[[str], None]) -> None:
        self._loop = loop
        self._expired = expired
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = math.inf
        self._closed = False
        self.deadline = math.inf
        self.kind = ""

    def set(self, kind: str, seconds: float) -> None:
        """`kind` expires `seconds` from now (math.inf: never)."""
        self.set_at(kind, self._loop.time() + seconds)

    def set_at(self, kind: str, deadline: float) -> None:
        """`kind` expires at loop time `deadline`."""
        self.kind = kind
        self.deadline = deadline
        if deadline < self._armed_at and not self._closed:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(deadline, self._fire)
            self._armed_at = deadline

    def clear(self) -> None:
        self.deadline = math.inf
        self.kind = ""

    def cancel(self) -> None:
        self.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._armed_at = math.inf

    def close(self) -> None:
        """For good: drops the callback, so the connection it belongs to is freed by
        reference counting instead of waiting for the cyclic garbage collector."""
        self.cancel()
        self._closed = True
        self._expired = _ignore

    def _fire(self) -> None:
        self._timer = None
        self._armed_at = math.inf
        deadline = self.deadline
        if deadline == math.inf:
            return
        if self._loop.time() < deadline:  # moved later since the timer was armed
            self._timer = self._loop.call_at(deadline, self._fire)
            self._armed_at = deadline
            return
        kind = self.kind
        self.clear()
        self._expired(kind)


def _ignore(kind: str) -> None:
    pass


class _CommandExpired(Exception):
    """Internal: the watchdog's command deadline passed (becomes AGITimeout)."""


class _IdleExpired(Exception):
    """Internal: the handler sent no command for idle_timeout (its task was cancelled)."""


class _EarlyEOF(Exception):
    """The peer closed before the environment block was complete."""


class _Link(asyncio.BufferedProtocol):
    """The socket side of one FastAGI connection.

    Bytes go straight from the socket into the parser and from there to the channel:
    no reader task, no stream buffer. Input stays bounded by the parser (line,
    environment and response limits). Output needs no flow control: the channel
    writes one command line (< AGI_BUF_LEN bytes) and then waits for its answer, so
    at most one line is ever buffered per connection.

    A BufferedProtocol, because with a plain Protocol asyncio allocates 256 KiB for
    every recv(), and glibc serves that with mmap + mremap + munmap: three extra
    system calls per AGI response (seen with strace on the FastAGI benchmark).
    """

    def __init__(self, server: FastAGIServer) -> None:
        self.server = server
        self.parser = AGIParser()
        self._buffer = server._read_buffer  # each read is copied out before the next one
        self.transport: asyncio.Transport | None = None
        self.channel: AGIChannel | None = None
        # The server's loop when it is listening (asyncio.get_running_loop() costs a
        # getpid() system call on Python 3.11).
        self.loop = server._loop if server._loop is not None else asyncio.get_running_loop()
        self.environment: asyncio.Future[AGIChannel] = self.loop.create_future()
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self.watchdog = _Watchdog(self.loop, self._expired)

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._buffer[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        channel = self.channel
        if channel is None and self.environment.done():
            return  # the session gave up on the environment and is closing
        try:
            items = self.parser.feed(data)
            for item in items:
                if channel is not None:
                    channel._dispatch(item)
                    continue
                # The parser yields the environment first, always.
                assert isinstance(item, AGIEnvironment)
                self.watchdog.clear()
                channel = self.channel = self.server._channel(item, self)
                self.environment.set_result(channel)
        except AGIProtocolError as exc:
            self._garbage(exc)

    def eof_received(self) -> bool:
        self._lost(None)
        return True  # the session closes our side when it is done

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)
        self.watchdog.cancel()
        if not self.closed.done():
            self.closed.set_result(None)

    # -- events --------------------------------------------------------------------------
    def _lost(self, exc: Exception | None) -> None:
        if self.channel is not None:
            if exc is None:
                self.channel._end(AGIHangup, "Asterisk closed the FastAGI connection")
            else:
                self.channel._end(AGIHangup, f"FastAGI connection lost: {exc!r}")
        elif not self.environment.done():
            self.environment.set_exception(
                exc if exc is not None else _EarlyEOF(f"{self.parser.buffered} bytes of an incomplete line"))

    def _garbage(self, exc: AGIProtocolError) -> None:
        assert self.transport is not None
        self.transport.pause_reading()  # the parser has failed: nothing more to read
        if self.channel is not None:
            self.channel.log.warning("garbage from Asterisk, closing: %s", exc)
            self.channel._end(AGIProtocolError, str(exc))
        elif not self.environment.done():
            self.environment.set_exception(exc)

    def _expired(self, kind: str) -> None:
        if kind == "environment":
            if not self.environment.done():
                self.environment.set_exception(TimeoutError())
        elif self.channel is not None:
            self.channel._expired(kind)

    async def close(self) -> None:
        """Close the socket (FIN after pending writes); wait only while writes are pending."""
        transport = self.transport
        assert transport is not None
        self.watchdog.close()
        if not self.environment.done():
            self.environment.cancel()
        elif not self.environment.cancelled():
            self.environment.exception()  # retrieved: the session may have been cancelled before it looked
        transport.close()
        if self.closed.done() or not transport.get_write_buffer_size():
            return  # nothing left to send: the socket closes on the loop's next pass
        # The peer stopped reading and our last lines are still buffered: do not wait forever.
        abort = self.loop.call_later(2.0, transport.abort)
        try:
            await self.closed
        finally:
            abort.cancel()


class AGIChannel:
    """One FastAGI session as the IVR sees it: typed commands, strictly one at a time.

    Asterisk must not get a second command before it answered the first: a new line
    aborts a running STREAM FILE / GET DATA without any answer (res_agi.c "res == 1:
    new command", Asterisk 22), and lines it has buffered are not read until more
    data arrives. A lock serializes callers; the connection feeds the parser as
    bytes arrive, so a HANGUP or EOF is seen even while no command is pending.
    """

    def __init__(
        self,
        env: AGIEnvironment,
        link: _Link,
        *,
        command_timeout: float = 120.0,
        hangup_grace: float = 0.5,
        slow_command: float = 1.0,
    ) -> None:
        self.env = env
        self.command_timeout = command_timeout
        self.hangup_grace = hangup_grace
        self.slow_command = slow_command
        self.commands_sent = 0
        self.command_seconds = 0.0
        self.log = _SessionLog(log, env)
        self._loop = link.loop
        assert link.transport is not None
        self._transport = link.transport
        self._watchdog = link.watchdog
        self._lock = asyncio.Lock()
        self._current: asyncio.Future[AGIResponse] | None = None
        self._ended = asyncio.Event()  # HANGUP seen, or the connection is gone
        self._hung_up = False
        self._gone: tuple[type[AGIError], str] | None = None
        self._desynced = False
        # While a handler runs: its idle timeout and task (cancelled when idle too long).
        self._idle_timeout: float | None = None
        self._idle_task: asyncio.Task[None] | None = None
        self._idle_fired = False

    # -- state ---------------------------------------------------------------------------
    @property
    def hung_up(self) -> bool:
        """The caller hung up (HANGUP notice, our HANGUP command, or EOF)."""
        return self._hung_up or (self._gone is not None and self._gone[0] is AGIHangup)

    @property
    def alive(self) -> bool:
        """Commands can still reach the channel."""
        return not self._hung_up and self._gone is None and not self._transport.is_closing()

    # -- wire ----------------------------------------------------------------------------
    def _dispatch(self, item: AGIItem) -> None:
        if isinstance(item, AGIResponse):
            fut = self._current
            if fut is not None and not fut.done():
                fut.set_result(item)
            else:
                # The answer to a command that timed out or was cancelled.
                self.log.debug("discarding late AGI response %r", item.text[:200])
        elif isinstance(item, HangupNotice):
            # Usually arrives right after the answer to the running command; if a
            # command is still pending, its answer follows and is discarded.
            self.log.debug("HANGUP notice from Asterisk")
            self._hung_up = True
            self._ended.set()
            self._fail_current(AGIHangup, "caller hung up")
        else:
            raise AGIProtocolError("second AGI environment block in one session")

    def _end(self, kind: type[AGIError], message: str) -> None:
        if self._gone is None:
            self._gone = (kind, message)
        self._ended.set()
        self._fail_current(kind, message)

    def _fail_current(self, kind: type[AGIError], message: str) -> None:
        fut = self._current
        if fut is not None and not fut.done():
            fut.set_exception(kind(message))

    def _raise_if_ended(self) -> None:
        if self._gone is not None:
            kind, message = self._gone
            raise kind(message)
        if self._hung_up or self._transport.is_closing():
            raise AGIHangup("caller hung up")

    # -- deadlines -----------------------------------------------------------------------
    def _idle(self, now: float) -> None:
        """No command running: the idle timeout runs while a handler holds the caller."""
        if self._idle_timeout is not None:
            self._watchdog.set_at("idle", now + self._idle_timeout)
        else:
            self._watchdog.clear()

    def _expired(self, kind: str) -> None:
        if kind == "command":
            fut = self._current
            if fut is not None and not fut.done():
                fut.set_exception(_CommandExpired())
        elif kind == "idle":
            task = self._idle_task
            if task is not None and not task.done():
                self._idle_fired = True
                task.cancel()

    async def _run(self, handler: Handler, idle_timeout: float) -> None:
        """Run the handler; _IdleExpired if it held the caller idle for idle_timeout.

        The idle timeout cancels the handler's task, and only that cancellation
        becomes _IdleExpired: one from outside (stop()) stays a CancelledError, as
        asyncio.timeout() does it (Task.cancelling/uncancel).
        """
        task = asyncio.current_task(self._loop)
        assert task is not None
        cancelling = task.cancelling()
        self._idle_timeout, self._idle_task, self._idle_fired = idle_timeout, task, False
        self._idle(self._loop.time())
        try:
            await handler(self)
        except asyncio.CancelledError:
            if self._idle_fired and task.uncancel() <= cancelling:
                raise _IdleExpired() from None
            raise
        else:
            if self._idle_fired:
                task.uncancel()  # the handler swallowed our cancellation and returned
        finally:
            self._idle_timeout = self._idle_task = None
            if self._watchdog.kind == "idle":
                self._watchdog.clear()

    # -- commands ------------------------------------------------------------------------
    async def command(self, *words: str, timeout: float | None = None) -> AGIResponse:
        """Send one command and return its checked response (see errors.check_response).

        `timeout` defaults to `command_timeout`; `math.inf` waits as long as it takes.
        ValueError for arguments that cannot be sent safely (protocol.encode_command).
        """
        return await self._send(words, timeout, internal=False)

    async def _send(self, words: tuple[str, ...], timeout: float | None, *, internal: bool) -> AGIResponse:
        line = encode_command(*words)  # our misuse fails here, before anything is sent
        limit = self.command_timeout if timeout is None else timeout
        lock = self._lock
        await lock.acquire()
        try:
            if self._gone is not None or self._hung_up or self._desynced or self._transport.is_closing():
                self._raise_if_ended()
                if self._desynced and not internal:
                    raise AGITimeout("an earlier AGI command got no answer; the session is out of step")
            loop = self._loop
            fut: asyncio.Future[AGIResponse] = loop.create_future()
            self._current = fut
            started = loop.time()
            self._watchdog.set_at("command", started + limit)
            try:
                self._transport.write(line)
                self.commands_sent += 1
                resp = await fut
            except _CommandExpired:
                self._desynced = True  # its answer may still come, or never
                raise AGITimeout(f"no answer to {words[0].upper()} within {limit:g} s") from None
            finally:
                if not fut.done():
                    fut.cancel()
                    self._desynced = True  # cancelled: its answer may still come
                self._current = None
                now = loop.time()
                elapsed = now - started
                self.command_seconds += elapsed
                self._idle(now)
            if elapsed > self.slow_command and (name := words[0].upper()) not in LONG_COMMANDS:
                self.log.warning("slow AGI command %s: %.2f s", name, elapsed)
            result = resp.result
            if resp.code == 200 and result is not None:
                if not result.startswith("-"):
                    return resp  # success, the usual case (what check_response would return)
                value = resp.result_int
                if value is not None and value < 0 and await self._hangup_follows():
                    # A failed command is "usually because the channel hung up" (res_agi.c);
                    # Asterisk then writes HANGUP (or closes) right after the answer.
                    raise AGIHangup(f"caller hung up during {words[0].upper()}", resp)
            return check_response(resp)
        finally:
            lock.release()

    async def _hangup_follows(self) -> bool:
        if not self._ended.is_set():
            try:
                async with asyncio.timeout(self.hangup_grace):
                    await self._ended.wait()
            except TimeoutError:
                return False
        return self.hung_up

    async def answer(self) -> None:
        await self._send(("ANSWER",), None, internal=False)

    async def stream_file(self, name: str, escape_digits: str = "") -> str | None:
        """Play a prompt; the escape digit the caller pressed, or None."""
        return _digit(await self._send(("STREAM FILE", name, escape_digits), None, internal=False))

    async def get_data(self, prompt: str, timeout_ms: int, max_digits: int) -> tuple[str, bool]:
        """Play a prompt and collect digits: (digits, timed_out)."""
        budget = self.command_timeout + max(timeout_ms, 0) * max(max_digits, 1) / 1000
        resp = await self._send(("GET DATA", prompt, str(timeout_ms), str(max_digits)), budget, internal=False)
        # "200 result=123 (timeout)", "200 result= (timeout)" or "200 result=123".
        return resp.result or "", resp.data == "timeout"

    async def wait_for_digit(self, timeout_ms: int) -> str | None:
        """The next key, or None after timeout_ms (a negative wait is capped at command_timeout)."""
        budget = self.command_timeout + max(timeout_ms, 0) / 1000
        return _digit(await self._send(("WAIT FOR DIGIT", str(timeout_ms)), budget, internal=False))

    async def set_variable(self, name: str, value: str) -> None:
        await self._send(("SET VARIABLE", name, value), None, internal=False)

    async def get_variable(self, name: str) -> str | None:
        """The variable's value; None when unset ("200 result=0")."""
        resp = await self._send(("GET VARIABLE", name), None, internal=False)
        return (resp.data or "") if resp.result == "1" else None

    async def get_full_variable(self, expression: str) -> str | None:
        """Evaluate `${...}` expressions on the channel (GET FULL VARIABLE)."""
        resp = await self._send(("GET FULL VARIABLE", expression), None, internal=False)
        return (resp.data or "") if resp.result == "1" else None

    async def exec(self, application: str, *args: str) -> AGIResponse:
        """Run a dialplan application; each of `args` stays one application argument.

        Arguments are escaped for Asterisk's standard argument splitting (see
        protocol.encode_app_args); applications that take their data raw (Set,
        Verbose) would keep the backslashes: use set_variable/verbose for those.
        """
        words: tuple[str, ...] = ("EXEC", check_app_name(application))
        if args:
            words += (encode_app_args(*args),)
        return await self._send(words, None, internal=False)

    async def verbose(self, message: str, level: int = 1) -> None:
        await self._send(("VERBOSE", message, str(level)), None, internal=False)

    async def hangup(self) -> None:
        """Hang the caller up; later commands raise AGIHangup."""
        await self._send(("HANGUP",), None, internal=False)
        self._hung_up = True

    async def set_context(self, context: str) -> None:
        await self._send(("SET CONTEXT", context), None, internal=False)

    async def set_extension(self, extension: str) -> None:
        await self._send(("SET EXTENSION", extension), None, internal=False)

    async def set_priority(self, priority: int | str) -> None:
        # Asterisk applies it through ast_explicit_goto(), which compensates for the
        # autoloop increment: after AGI returns, the dialplan runs exactly `priority`.
        await self._send(("SET PRIORITY", str(priority)), None, internal=False)


def script_name(env: AGIEnvironment) -> str:
    """Handler key: agi://host:port/hotline?x=1 -> "hotline"."""
    script = env.network_script
    if not script and "://" in env.request:
        # Asterisk omits agi_network_script when the URL has no path at all.
        script = env.request.split("://", 1)[1].partition("/")[2]
    return script.split("?", 1)[0].strip("/")


def _peer(link: _Link) -> object:
    return None if link.transport is None else link.transport.get_extra_info("peername")


class FastAGIServer:
    """Serves FastAGI sessions; `handlers` maps script names to coroutines.

    Counters for /status: `sessions_active` (admitted sessions open now),
    `sessions_total` (connections accepted), `sessions_rejected` (over
    `max_sessions`, sent to the failsafe), `failures` (handler failures, idle
    timeouts and unknown scripts).
    """

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        *,
        host: str = "127.0.0.1",
        port: int = 4573,
        idle_timeout: float = 30.0,
        command_timeout: float = 120.0,
        env_timeout: float = 5.0,
        failsafe: tuple[str, str, str] = ("hotline-failsafe", "s", "1"),
        max_sessions: int = 2000,
        failsafe_timeout: float = 5.0,
        hangup_grace: float = 0.5,
        slow_command: float = 1.0,
        backlog: int = 1024,
    ) -> None:
        self.handlers = dict(handlers)
        self.host = host
        self.port = port
        self.idle_timeout = idle_timeout
        self.command_timeout = command_timeout
        self.env_timeout = env_timeout
        self.failsafe = failsafe
        self.max_sessions = max_sessions
        self.failsafe_timeout = failsafe_timeout
        self.hangup_grace = hangup_grace
        self.slow_command = slow_command
        #: Listen queue: Asterisk opens one connection per call, in bursts (asyncio's default is 100).
        self.backlog = backlog
        self.sessions_active = 0
        self.sessions_total = 0
        self.sessions_rejected = 0
        self.failures = 0
        self._listeners: list[socket.socket] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Every connection's reads land here: buffer_updated() copies the bytes out at
        #: once, so one buffer serves all of them (the server lives on one loop).
        self._read_buffer = memoryview(bytearray(READ_BUFFER))
        self._closing = False

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Listen on every address `host` resolves to (port 0: a free port, then in `port`)."""
        if self._listeners is not None:
            raise RuntimeError("FastAGI server already started")
        self._closing = False
        loop = self._loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        listeners: list[socket.socket] = []
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                listeners.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(self.backlog)
                sock.setblocking(False)
        except OSError:
            for sock in listeners:
                sock.close()
            raise
        for sock in listeners:
            loop.add_reader(sock.fileno(), self._accept_ready, sock)
        self._listeners = listeners
        self.port = listeners[0].getsockname()[1]
        log.info("FastAGI listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        """Stop listening, cancel every session (each tries the failsafe), wait for them."""
        self._closing = True
        listeners, self._listeners = self._listeners, None
        for sock in listeners or ():
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._loop = None

    # -- accepting -----------------------------------------------------------------------
    def _accept_ready(self, listener: socket.socket) -> None:
        """Accept every waiting connection (up to `backlog`) and start a session for each.

        Our own accept loop, not loop.create_server(): libuv (so uvloop) accepts one
        connection per loop pass, and under load a pass takes milliseconds, so at a
        thousand callers most of them waited in the listen queue (seen on
        tests/bench/bench_fastagi.py: 770 connections queued, 400 ms before a caller's
        first command). asyncio's own loop accepts up to `backlog` per pass, like this.
        """
        for _ in range(self.backlog):
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the caller gave up while queued
            except OSError as exc:
                # Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), or anything
                # else the kernel says: pause accepting for a while, as asyncio does, instead
                # of failing again at once on every loop pass.
                log.error("FastAGI: cannot accept a connection (%s); pausing for %g s", exc, ACCEPT_PAUSE)
                loop = self._loop
                if loop is not None and not self._closing:
                    loop.remove_reader(listener.fileno())
                    loop.call_later(ACCEPT_PAUSE, self._resume_accepting, listener)
                return
            self._accept(conn)

    def _resume_accepting(self, listener: socket.socket) -> None:
        if self._loop is not None and not self._closing and listener.fileno() >= 0:
            self._loop.add_reader(listener.fileno(), self._accept_ready, listener)

    def _accept(self, conn: socket.socket) -> None:
        if self._closing:
            conn.close()
            return
        self.sessions_total += 1
        if len(self._tasks) >= 2 * self.max_sessions:
            # A flood: do not even read the environment.
            self.sessions_rejected += 1
            log.warning("FastAGI: %d connections open, dropping a new one", len(self._tasks))
            conn.close()
            return
        conn.setblocking(False)
        self._start_session(_Link(self), conn)

    def _start_session(self, link: _Link, conn: socket.socket | None) -> None:
        """The session task for a new connection: `conn` is connected to `link` in it
        (None: the link already has its transport)."""
        admitted = self.sessions_active < self.max_sessions
        if admitted:
            self.sessions_active += 1
        link.watchdog.set("environment", self.env_timeout)
        task = link.loop.create_task(self._session(link, admitted, conn),
                                     name=f"fastagi-session-{self.sessions_total}")
        self._tasks.add(task)
        task.add_done_callback(self._session_done)

    def _channel(self, env: AGIEnvironment, link: _Link) -> AGIChannel:
        return AGIChannel(env, link, command_timeout=self.command_timeout, hangup_grace=self.hangup_grace,
                          slow_command=self.slow_command)

    def _session_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("FastAGI session crashed", exc_info=task.exception())

    # -- one session ---------------------------------------------------------------------
    async def _session(self, link: _Link, admitted: bool, conn: socket.socket | None) -> None:
        try:
            try:
                if conn is not None:
                    await link.loop.connect_accepted_socket(lambda: link, conn)
                channel = await link.environment
            except TimeoutError:
                log.warning("FastAGI %s: no complete environment within %g s, closing", _peer(link),
                            self.env_timeout)
                return
            except AGIProtocolError as exc:
                log.warning("FastAGI %s: bad environment block, closing: %s", _peer(link), exc)
                return
            except (_EarlyEOF, OSError) as exc:
                log.info("FastAGI %s: connection closed before the environment was complete (%r)",
                         _peer(link), exc)
                return
            if not admitted:
                self.sessions_rejected += 1
                channel.log.warning("more than %d FastAGI sessions; sending the caller to the failsafe",
                                    self.max_sessions)
                await self._to_failsafe(channel)
                return
            script = script_name(channel.env)
            handler = self.handlers.get(script)
            if handler is None:
                self.failures += 1
                channel.log.error("no FastAGI handler for script %r (request %r); sending the caller to the "
                                  "failsafe", script, channel.env.request)
                await self._to_failsafe(channel)
                return
            await self._run_handler(channel, handler, script)
        finally:
            if admitted:
                self.sessions_active -= 1
            if link.transport is not None:
                await link.close()
            else:  # the socket never got its transport
                link.watchdog.close()
                link.environment.cancel()
                if conn is not None:
                    conn.close()

    async def _run_handler(self, channel: AGIChannel, handler: Handler, script: str) -> None:
        loop = channel._loop
        started = loop.time()
        try:
            await channel._run(handler, self.idle_timeout)
        except asyncio.CancelledError:
            if channel.alive:
                channel.log.warning("session cancelled; sending the caller to the failsafe")
                await self._to_failsafe(channel)
            raise
        except (AGIHangup, AGIDeadChannel) as exc:
            channel.log.debug("caller hung up (%s)", exc)
        except _IdleExpired:
            self.failures += 1
            channel.log.error("handler %r sent no AGI command for %g s; sending the caller to the failsafe",
                              script, self.idle_timeout)
            await self._to_failsafe(channel)
        except Exception:
            self.failures += 1
            channel.log.exception("handler %r failed; sending the caller to the failsafe", script)
            await self._to_failsafe(channel)
        finally:
            if channel.log.enabled(logging.DEBUG):
                channel.log.debug("session %r ended: %d commands, %.2f s in commands, %.2f s in all", script,
                                  channel.commands_sent, channel.command_seconds, loop.time() - started)

    async def _to_failsafe(self, channel: AGIChannel) -> bool:
        """Route a live caller to the failsafe location; False if that was not possible."""
        if not channel.alive:
            return False
        context, extension, priority = self.failsafe
        try:
            async with asyncio.timeout(self.failsafe_timeout):
                for words in (("SET VARIABLE", cv.AGI_FAILED, "1"), ("SET CONTEXT", context),
                              ("SET EXTENSION", extension), ("SET PRIORITY", priority)):
                    await channel._send(words, self.failsafe_timeout, internal=True)
        except AGIHangup:
            channel.log.debug("caller hung up before reaching the failsafe")
            return False
        except (AGIError, OSError, TimeoutError) as exc:
            channel.log.error("could not send the caller to the failsafe %s,%s,%s: %r",
                              context, extension, priority, exc)
            return False
        channel.log.info("caller sent to the failsafe %s,%s,%s", context, extension, priority)
        return True
