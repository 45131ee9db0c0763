"""Hardened asyncio FastAGI server: bounded input, timeouts, failsafe on any failure.

Every session is an owned task. A handler that fails (or an unknown script) sends
the caller to the failsafe dialplan location before the socket closes, so nobody
is left in silence; a hangup ends the session quietly; cancellation propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from ivr.agi.errors import AGIDeadChannel, AGIError, AGIHangup, AGIProtocolError, AGIResultError, check_response
from ivr.agi.protocol import AGIEnvironment, AGIParser, AGIResponse, HangupNotice, encode_command

log = logging.getLogger(__name__)

Handler = Callable[["AGIChannel"], Awaitable[None]]
SLOW_COMMAND_SECONDS = 1.0


class AGIChannel:
    """One FastAGI session's channel: typed commands over the parser."""

    def __init__(self, env: AGIEnvironment, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 parser: AGIParser, command_timeout: float) -> None:
        self.env = env
        self._reader = reader
        self._writer = writer
        self._parser = parser
        self._queued: list[AGIResponse | HangupNotice] = []
        self.command_timeout = command_timeout
        self.hung_up = False

    async def _next_item(self) -> AGIResponse | HangupNotice:
        while not self._queued:
            chunk = await self._reader.read(4096)
            if not chunk:
                raise AGIHangup("Asterisk closed the AGI connection")
            for item in self._parser.feed(chunk):
                if isinstance(item, AGIEnvironment):
                    raise AGIProtocolError("second environment block in one session")
                self._queued.append(item)
        return self._queued.pop(0)

    async def command(self, *words: str, timeout: float | None = None) -> AGIResponse:
        if self.hung_up:
            raise AGIHangup("caller hung up")
        self._writer.write(encode_command(*words))
        started = time.monotonic()
        while True:
            item = await asyncio.wait_for(self._next_item(), timeout or self.command_timeout)
            if isinstance(item, HangupNotice):
                # The response to the running command still follows the notice.
                self.hung_up = True
                continue
            elapsed = time.monotonic() - started
            if elapsed > SLOW_COMMAND_SECONDS and words[0] not in ("STREAM FILE", "WAIT FOR DIGIT", "GET DATA"):
                log.info("slow AGI command %s: %.2fs", words[0], elapsed)
            try:
                return check_response(item)
            except AGIResultError:
                if self.hung_up:
                    raise AGIHangup("caller hung up") from None
                raise

    async def answer(self) -> None:
        await self.command("ANSWER")

    async def stream_file(self, name: str, escape_digits: str = "") -> str | None:
        resp = await self.command("STREAM FILE", name, escape_digits)
        if self.hung_up:
            raise AGIHangup("caller hung up")
        code = resp.result_int or 0
        return chr(code) if code > 0 else None

    async def get_data(self, prompt: str, timeout_ms: int, max_digits: int) -> tuple[str, bool]:
        resp = await self.command("GET DATA", prompt, str(timeout_ms), str(max_digits))
        return (resp.result or "", resp.data == "timeout")

    async def wait_for_digit(self, timeout_ms: int) -> str | None:
        resp = await self.command("WAIT FOR DIGIT", str(timeout_ms), timeout=timeout_ms / 1000 + self.command_timeout)
        if self.hung_up:
            raise AGIHangup("caller hung up")
        code = resp.result_int or 0
        return chr(code) if code > 0 else None

    async def set_variable(self, name: str, value: str) -> None:
        await self.command("SET VARIABLE", name, value)

    async def get_variable(self, name: str) -> str | None:
        resp = await self.command("GET VARIABLE", name)
        return resp.data if resp.result == "1" else None

    async def get_full_variable(self, expression: str) -> str | None:
        resp = await self.command("GET FULL VARIABLE", expression)
        return resp.data if resp.result == "1" else None

    async def exec(self, application: str, *args: str) -> AGIResponse:
        return await self.command("EXEC", application, ",".join(args))

    async def verbose(self, message: str, level: int = 1) -> None:
        await self.command("VERBOSE", message, str(level))

    async def hangup(self) -> None:
        await self.command("HANGUP")

    async def set_context(self, context: str) -> None:
        await self.command("SET CONTEXT", context)

    async def set_extension(self, extension: str) -> None:
        await self.command("SET EXTENSION", extension)

    async def set_priority(self, priority: str) -> None:
        await self.command("SET PRIORITY", priority)


class FastAGIServer:
    def __init__(self, handlers: Mapping[str, Handler], *, host: str = "127.0.0.1", port: int = 4573,
                 idle_timeout: float = 30.0, command_timeout: float = 120.0, env_timeout: float = 5.0,
                 failsafe: tuple[str, str, str] = ("hotline-failsafe", "s", "1"), max_sessions: int = 2000) -> None:
        self.handlers = dict(handlers)
        self.host = host
        self.port = port
        self.idle_timeout = idle_timeout
        self.command_timeout = command_timeout
        self.env_timeout = env_timeout
        self.failsafe = failsafe
        self.max_sessions = max_sessions
        self.sessions_active = 0
        self.sessions_total = 0
        self.failures = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.sessions_total += 1
        self.sessions_active += 1
        try:
            await self._session(reader, writer)
        finally:
            self.sessions_active -= 1
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = AGIParser()
        try:
            env = await asyncio.wait_for(self._read_env(reader, parser), self.env_timeout)
        except (TimeoutError, AGIError, ConnectionError) as exc:
            log.warning("FastAGI: bad session start: %s", exc or type(exc).__name__)
            return
        channel = AGIChannel(env, reader, writer, parser, self.command_timeout)
        script = env.network_script.lstrip("/").split("?", 1)[0]
        handler = self.handlers.get(script)
        try:
            if handler is None:
                raise LookupError(f"no FastAGI handler for script {script!r}")
            if self.sessions_active > self.max_sessions:
                raise RuntimeError(f"more than {self.max_sessions} concurrent AGI sessions")
            await handler(channel)
        except asyncio.CancelledError:
            raise
        except (AGIHangup, AGIDeadChannel):
            log.debug("FastAGI %s: caller hung up", env.channel)
        except Exception:
            self.failures += 1
            log.exception("FastAGI %s (%s) failed; sending the caller to the failsafe", script, env.channel)
            await self._to_failsafe(channel)

    async def _read_env(self, reader: asyncio.StreamReader, parser: AGIParser) -> AGIEnvironment:
        while True:
            chunk = await reader.read(4096)
            if not chunk:
                raise ConnectionError("EOF before the AGI environment was complete")
            for item in parser.feed(chunk):
                if isinstance(item, AGIEnvironment):
                    return item
                raise AGIProtocolError("AGI response before the environment block")

    async def _to_failsafe(self, channel: AGIChannel) -> None:
        from cti import channel_vars as cv

        context, extension, priority = self.failsafe
        with contextlib.suppress(AGIError, OSError, TimeoutError):
            await channel.set_variable(cv.AGI_FAILED, "1")
            await channel.set_context(context)
            await channel.set_extension(extension)
            await channel.set_priority(priority)
