"""Record raw AMI bytes from the sandbox during a real call (fixtures are made this way)."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

from cti.ami.protocol import encode_action


class AMITap:
    """A second AMI session that only records what Asterisk sends, byte for byte."""

    def __init__(self, port: int, username: str, secret: str) -> None:
        self.port, self.username, self.secret = port, username, secret
        self.data = bytearray()
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._logged_in = asyncio.Event()
        self._grew = asyncio.Event()
        self._pings = 0

    async def __aenter__(self) -> AMITap:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._writer = writer
        writer.write(encode_action("Login", "tap-1", {"Username": self.username, "Secret": self.secret}))
        self._task = asyncio.create_task(self._read(reader))
        await asyncio.wait_for(self._logged_in.wait(), 5)
        return self

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while chunk := await reader.read(65536):
            self.data += chunk
            if b"FullyBooted" in self.data:
                self._logged_in.set()
            self._grew.set()

    async def sync(self, timeout: float = 5.0) -> None:
        """Ping on the tap's own session and wait for the Pong: whatever Asterisk queued
        for this session before the Ping has then been captured."""
        assert self._writer is not None
        self._pings += 1
        marker = f"ActionID: tap-ping-{self._pings}\r\n".encode()
        self._writer.write(encode_action("Ping", f"tap-ping-{self._pings}"))
        async with asyncio.timeout(timeout):
            while marker not in self.data:
                self._grew.clear()
                await self._grew.wait()

    async def __aexit__(self, *exc: object | TracebackType) -> None:
        assert self._writer is not None and self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
