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
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Final

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

READ_CHUNK: Final = 64 * 1024
#: Commands that last as long as a prompt plays or the caller types: never "slow".
LONG_COMMANDS: Final = frozenset({
    "STREAM FILE", "CONTROL STREAM FILE", "GET DATA", "GET OPTION", "WAIT FOR DIGIT", "EXEC",
    "RECORD FILE", "SAY ALPHA", "SAY DIGITS", "SAY NUMBER", "SAY PHONETIC", "SAY DATE", "SAY TIME",
    "SAY DATETIME", "SPEECH RECOGNIZE", "RECEIVE CHAR", "RECEIVE TEXT", "GOSUB",
})


class _SessionLog:
    """Prefixes every record with the channel and uniqueid, so one call's lines group."""

    def __init__(self, logger: logging.Logger, env: AGIEnvironment) -> None:
        self._logger = logger
        self._prefix = f"[{env.channel or '?'} {env.uniqueid or '?'}]"

    def _log(self, level: int, msg: str, args: tuple[object, ...], exc_info: bool = False) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, "%s " + msg, self._prefix, *args, exc_info=exc_info, stacklevel=3)

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


class AGIChannel:
    """One FastAGI session as the IVR sees it: typed commands, strictly one at a time.

    Asterisk must not get a second command before it answered the first: a new line
    aborts a running STREAM FILE / GET DATA without any answer (res_agi.c "res == 1:
    new command", Asterisk 22), and lines it has buffered are not read until more
    data arrives. A lock serializes callers; a reader task feeds the parser so a
    HANGUP or EOF is seen even while no command is pending.
    """

    def __init__(
        self,
        env: AGIEnvironment,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        parser: AGIParser,
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
        self._reader = reader
        self._writer = writer
        self._parser = parser
        self._lock = asyncio.Lock()
        self._current: asyncio.Future[AGIResponse] | None = None
        self._ended = asyncio.Event()  # HANGUP seen, or the connection is gone
        self._hung_up = False
        self._gone: tuple[type[AGIError], str] | None = None
        self._desynced = False
        self._read_task: asyncio.Task[None] | None = None
        self._on_busy: Callable[[bool], None] | None = None

    # -- state ---------------------------------------------------------------------------
    @property
    def hung_up(self) -> bool:
        """The caller hung up (HANGUP notice, our HANGUP command, or EOF)."""
        return self._hung_up or (self._gone is not None and self._gone[0] is AGIHangup)

    @property
    def alive(self) -> bool:
        """Commands can still reach the channel."""
        return not self._hung_up and self._gone is None and not self._writer.is_closing()

    # -- wire ----------------------------------------------------------------------------
    def _start(self, items: Iterable[AGIItem] = ()) -> None:
        for item in items:
            self._dispatch(item)
        self._read_task = asyncio.get_running_loop().create_task(
            self._read_loop(), name=f"fastagi-reader-{self.env.uniqueid}")

    async def _read_loop(self) -> None:
        try:
            while True:
                chunk = await self._reader.read(READ_CHUNK)
                if not chunk:
                    self._end(AGIHangup, "Asterisk closed the FastAGI connection")
                    return
                for item in self._parser.feed(chunk):
                    self._dispatch(item)
        except AGIProtocolError as exc:
            self.log.warning("garbage from Asterisk, closing: %s", exc)
            self._end(AGIProtocolError, str(exc))
        except OSError as exc:
            self._end(AGIHangup, f"FastAGI connection lost: {exc!r}")

    def _dispatch(self, item: AGIItem) -> None:
        if isinstance(item, HangupNotice):
            # Usually arrives right after the answer to the running command; if a
            # command is still pending, its answer follows and is discarded.
            self.log.debug("HANGUP notice from Asterisk")
            self._hung_up = True
            self._ended.set()
            self._fail_current(AGIHangup, "caller hung up")
        elif isinstance(item, AGIResponse):
            fut = self._current
            if fut is not None and not fut.done():
                fut.set_result(item)
            else:
                # The answer to a command that timed out or was cancelled.
                self.log.debug("discarding late AGI response %r", item.text[:200])
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
        if self._hung_up or self._writer.is_closing():
            raise AGIHangup("caller hung up")

    def _busy(self, busy: bool) -> None:
        if self._on_busy is not None:
            self._on_busy(busy)

    async def _close(self) -> None:
        """Close the socket (FIN after pending writes), then stop the reader."""
        self._writer.close()
        try:
            async with asyncio.timeout(2.0):
                await self._writer.wait_closed()
        except TimeoutError:
            self._writer.transport.abort()  # the peer stopped reading: do not wait forever
        except OSError:
            pass
        task = self._read_task
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
            if not task.cancelled() and (exc := task.exception()) is not None:
                self.log.error("AGI reader failed: %r", exc)

    # -- commands ------------------------------------------------------------------------
    async def command(self, *words: str, timeout: float | None = None) -> AGIResponse:
        """Send one command and return its checked response (see errors.check_response).

        `timeout` defaults to `command_timeout`; `math.inf` waits as long as it takes.
        ValueError for arguments that cannot be sent safely (protocol.encode_command).
        """
        return await self._send(words, timeout, internal=False)

    async def _send(self, words: tuple[str, ...], timeout: float | None, *, internal: bool) -> AGIResponse:
        line = encode_command(*words)  # our misuse fails here, before anything is sent
        name = words[0].upper()
        limit = self.command_timeout if timeout is None else timeout
        async with self._lock:
            self._raise_if_ended()
            if self._desynced and not internal:
                raise AGITimeout("an earlier AGI command got no answer; the session is out of step")
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[AGIResponse] = loop.create_future()
            self._current = fut
            self._busy(True)
            started = loop.time()
            try:
                self._writer.write(line)
                self.commands_sent += 1
                async with asyncio.timeout(None if math.isinf(limit) else limit):
                    await self._writer.drain()
                    resp = await fut
            except TimeoutError:
                raise AGITimeout(f"no answer to {name} within {limit:g} s") from None
            except OSError as exc:
                self._end(AGIHangup, f"FastAGI connection lost: {exc!r}")
                raise AGIHangup(f"FastAGI connection lost during {name}") from exc
            finally:
                if not fut.done() or fut.cancelled():
                    fut.cancel()
                    self._desynced = True  # its answer may still come, or never
                self._current = None
                elapsed = loop.time() - started
                self.command_seconds += elapsed
                self._busy(False)
            if elapsed > self.slow_command and name not in LONG_COMMANDS:
                self.log.warning("slow AGI command %s: %.2f s", name, elapsed)
            value = resp.result_int
            if resp.code == 200 and value is not None and value < 0 and await self._hangup_follows():
                # A failed command is "usually because the channel hung up" (res_agi.c);
                # Asterisk then writes HANGUP (or closes) right after the answer.
                raise AGIHangup(f"caller hung up during {name}", resp)
            return check_response(resp)

    async def _hangup_follows(self) -> bool:
        if not self._ended.is_set():
            try:
                async with asyncio.timeout(self.hangup_grace):
                    await self._ended.wait()
            except TimeoutError:
                return False
        return self.hung_up

    async def answer(self) -> None:
        await self.command("ANSWER")

    async def stream_file(self, name: str, escape_digits: str = "") -> str | None:
        """Play a prompt; the escape digit the caller pressed, or None."""
        return _digit(await self.command("STREAM FILE", name, escape_digits))

    async def get_data(self, prompt: str, timeout_ms: int, max_digits: int) -> tuple[str, bool]:
        """Play a prompt and collect digits: (digits, timed_out)."""
        budget = self.command_timeout + max(timeout_ms, 0) * max(max_digits, 1) / 1000
        resp = await self.command("GET DATA", prompt, str(timeout_ms), str(max_digits), timeout=budget)
        # "200 result=123 (timeout)", "200 result= (timeout)" or "200 result=123".
        return resp.result or "", resp.data == "timeout"

    async def wait_for_digit(self, timeout_ms: int) -> str | None:
        """The next key, or None after timeout_ms (a negative wait is capped at command_timeout)."""
        budget = self.command_timeout + max(timeout_ms, 0) / 1000
        return _digit(await self.command("WAIT FOR DIGIT", str(timeout_ms), timeout=budget))

    async def set_variable(self, name: str, value: str) -> None:
        await self.command("SET VARIABLE", name, value)

    async def get_variable(self, name: str) -> str | None:
        """The variable's value; None when unset ("200 result=0")."""
        resp = await self.command("GET VARIABLE", name)
        return (resp.data or "") if resp.result == "1" else None

    async def get_full_variable(self, expression: str) -> str | None:
        """Evaluate `${...}` expressions on the channel (GET FULL VARIABLE)."""
        resp = await self.command("GET FULL VARIABLE", expression)
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
        return await self.command(*words)

    async def verbose(self, message: str, level: int = 1) -> None:
        await self.command("VERBOSE", message, str(level))

    async def hangup(self) -> None:
        """Hang the caller up; later commands raise AGIHangup."""
        await self.command("HANGUP")
        self._hung_up = True

    async def set_context(self, context: str) -> None:
        await self.command("SET CONTEXT", context)

    async def set_extension(self, extension: str) -> None:
        await self.command("SET EXTENSION", extension)

    async def set_priority(self, priority: int | str) -> None:
        # Asterisk applies it through ast_explicit_goto(), which compensates for the
        # autoloop increment: after AGI returns, the dialplan runs exactly `priority`.
        await self.command("SET PRIORITY", str(priority))


def script_name(env: AGIEnvironment) -> str:
    """Handler key: agi://host:port/hotline?x=1 -> "hotline"."""
    script = env.network_script
    if not script and "://" in env.request:
        # Asterisk omits agi_network_script when the URL has no path at all.
        script = env.request.split("://", 1)[1].partition("/")[2]
    return script.split("?", 1)[0].strip("/")


class _EarlyEOF(Exception):
    """The peer closed before the environment block was complete."""


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
        self.sessions_active = 0
        self.sessions_total = 0
        self.sessions_rejected = 0
        self.failures = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("FastAGI server already started")
        self._closing = False
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("FastAGI listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        """Stop listening, cancel every session (each tries the failsafe), wait for them."""
        self._closing = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if server is not None:
            await server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback, so the session task is created (and owned) here.
        if self._closing:
            writer.close()
            return
        self.sessions_total += 1
        if len(self._tasks) >= 2 * self.max_sessions:
            # A flood: do not even read the environment.
            self.sessions_rejected += 1
            log.warning("FastAGI: %d connections open, dropping a new one", len(self._tasks))
            writer.close()
            return
        admitted = self.sessions_active < self.max_sessions
        if admitted:
            self.sessions_active += 1
        task = asyncio.get_running_loop().create_task(
            self._session(reader, writer, admitted), name=f"fastagi-session-{self.sessions_total}")
        self._tasks.add(task)
        task.add_done_callback(self._session_done)

    def _session_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("FastAGI session crashed", exc_info=task.exception())

    # -- one session ---------------------------------------------------------------------
    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, admitted: bool) -> None:
        peer = writer.get_extra_info("peername")
        channel: AGIChannel | None = None
        try:
            parser = AGIParser()
            try:
                env, leftovers = await self._read_environment(reader, parser)
            except TimeoutError:
                log.warning("FastAGI %s: no complete environment within %g s, closing", peer, self.env_timeout)
                return
            except AGIProtocolError as exc:
                log.warning("FastAGI %s: bad environment block, closing: %s", peer, exc)
                return
            except (_EarlyEOF, OSError) as exc:
                log.info("FastAGI %s: connection closed before the environment was complete (%r)", peer, exc)
                return
            channel = AGIChannel(env, reader, writer, parser, command_timeout=self.command_timeout,
                                 hangup_grace=self.hangup_grace, slow_command=self.slow_command)
            channel._start(leftovers)
            if not admitted:
                self.sessions_rejected += 1
                channel.log.warning("more than %d FastAGI sessions; sending the caller to the failsafe",
                                    self.max_sessions)
                await self._to_failsafe(channel)
                return
            script = script_name(env)
            handler = self.handlers.get(script)
            if handler is None:
                self.failures += 1
                channel.log.error("no FastAGI handler for script %r (request %r); sending the caller to the "
                                  "failsafe", script, env.request)
                await self._to_failsafe(channel)
                return
            await self._run_handler(channel, handler, script)
        finally:
            if admitted:
                self.sessions_active -= 1
            if channel is not None:
                await channel._close()
            else:
                writer.close()

    async def _read_environment(
        self, reader: asyncio.StreamReader, parser: AGIParser,
    ) -> tuple[AGIEnvironment, list[AGIItem]]:
        async with asyncio.timeout(self.env_timeout):
            while True:
                chunk = await reader.read(READ_CHUNK)
                if not chunk:
                    raise _EarlyEOF(f"{parser.buffered} bytes of an incomplete line")
                items = parser.feed(chunk)
                if items:
                    env = items[0]  # the parser yields the environment first, always
                    assert isinstance(env, AGIEnvironment)
                    return env, items[1:]

    async def _run_handler(self, channel: AGIChannel, handler: Handler, script: str) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        idle = asyncio.timeout(None)

        def busy(flag: bool) -> None:
            # Idle = the handler holds the caller without any AGI command running.
            if not idle.expired():
                idle.reschedule(None if flag else loop.time() + self.idle_timeout)

        try:
            async with idle:
                busy(False)
                channel._on_busy = busy
                try:
                    await handler(channel)
                finally:
                    channel._on_busy = None
        except asyncio.CancelledError:
            if channel.alive:
                channel.log.warning("session cancelled; sending the caller to the failsafe")
                await self._to_failsafe(channel)
            raise
        except (AGIHangup, AGIDeadChannel) as exc:
            channel.log.debug("caller hung up (%s)", exc)
        except Exception as exc:
            self.failures += 1
            if isinstance(exc, TimeoutError) and idle.expired():
                channel.log.error("handler %r sent no AGI command for %g s; sending the caller to the failsafe",
                                  script, self.idle_timeout)
            else:
                channel.log.exception("handler %r failed; sending the caller to the failsafe", script)
            await self._to_failsafe(channel)
        finally:
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
