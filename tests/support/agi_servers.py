"""FastAGI servers and fake-Asterisk connections for one test, closed afterwards.

Shared by tests/unit/test_agi_server.py (its pytest fixtures, on asyncio's loop) and
tests/unit/test_agi_eventloop.py (the same scenarios on uvloop).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ivr.agi.server import FastAGIServer, Handler
from tests.support.fake_asterisk_agi import FakeAsterisk

MakeServer = Callable[..., Awaitable[FastAGIServer]]
Connect = Callable[..., Awaitable[FakeAsterisk]]


class AGITestBed:
    """`make_server` starts a server on a free port; `connect` opens a fake Asterisk to it
    (and sends the environment block unless `env=False`); `close` ends them all."""

    def __init__(self) -> None:
        self.servers: list[FastAGIServer] = []
        self.fakes: list[FakeAsterisk] = []

    async def make_server(self, handlers: Mapping[str, Handler], **kwargs: Any) -> FastAGIServer:
        kwargs.setdefault("port", 0)
        kwargs.setdefault("hangup_grace", 0.05)
        server = FastAGIServer(handlers, **kwargs)
        await server.start()
        self.servers.append(server)
        return server

    async def connect(self, server: FastAGIServer, script: str | None = "hotline", *, env: bool = True,
                      **overrides: str) -> FakeAsterisk:
        fake = await FakeAsterisk.connect(server.port)
        self.fakes.append(fake)
        if env:
            await fake.send_env(script, **overrides)
        return fake

    async def close_fakes(self) -> None:
        for fake in self.fakes:
            await fake.close()

    async def stop_servers(self) -> None:
        for server in self.servers:
            await server.stop()
