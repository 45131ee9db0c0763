"""Smoke calls after a publish: a real call walks the changed menu path in Asterisk.

The publisher originates a Local channel into the hotline context with a one-time
token in HOTLINE_SMOKE (Local channels copy their variables to the ;2 half that
runs the dialplan). When that call reaches the FastAGI handler, `SmokeRegistry`
wraps its channel: each time the IVR listens for a key, the planned digit is sent
as real DTMF through Asterisk (AMI PlayDTMF on the ;1 half, so it arrives on the ;2
half's read queue like a caller's key). The wrapper records which flow ran and the
decision the IVR handed to the dialplan; the publisher then checks the route in AMI.

QUEUE_MIN_PENALTY on the smoke channel is higher than any member's penalty, so the
smoke caller really joins the queue (QueueCallerJoin proves route and queue) but no
agent's phone ever rings. A smoke call that the IVR routes anywhere else (voicemail,
transfer, hang-up) is hung up from AGI right after the decision: it never dials out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from cti import channel_vars as cv
from ivr.model import Flow

log = logging.getLogger(__name__)

#: Variable carrying the smoke token on the originated Local channel.
SMOKE_VAR = cv.SMOKE
#: Higher than any queue member penalty the compiler writes (0): nobody is rung.
NO_AGENT_PENALTY = "1000000"
#: How long a listening IVR command runs before the key is sent: DTMF that arrives
#: between AGI commands is read and dropped by res_agi, so the key must land while
#: STREAM FILE / WAIT FOR DIGIT runs. A lost key is sent again on the next listen.
KEY_DELAY = 0.3

PressKey = Callable[[str, str], Awaitable[None]]


@dataclass
class SmokeRun:
    """One planned smoke call and what happened on it."""

    token: str
    digits: tuple[str, ...]
    pending: list[str] = field(default_factory=list)
    flow: Flow | None = None
    channel: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    decided: asyncio.Event = field(default_factory=asyncio.Event)
    pressed: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pending = list(self.digits)


class SmokeRegistry:
    """Pending smoke calls by token; the FastAGI handler asks it about each call."""

    def __init__(self) -> None:
        self.runs: dict[str, SmokeRun] = {}
        self.press_key: PressKey | None = None

    @property
    def pending(self) -> bool:
        return bool(self.runs)

    def expect(self, token: str, digits: tuple[str, ...]) -> SmokeRun:
        run = SmokeRun(token, digits)
        self.runs[token] = run
        return run

    def forget(self, token: str) -> None:
        self.runs.pop(token, None)

    async def attach(self, channel: Any, flow: Flow) -> Any:
        """The channel itself, or a key-pressing wrapper if this call is a pending smoke call."""
        token = await channel.get_variable(SMOKE_VAR)
        run = self.runs.get(token or "")
        if run is None or self.press_key is None:
            return channel
        run.flow = flow
        run.channel = channel.env.channel
        return _SmokeChannel(channel, run, self.press_key)


class _SmokeChannel:
    """Delegates to the AGI channel; presses the next planned key while the IVR listens."""

    def __init__(self, inner: Any, run: SmokeRun, press: PressKey) -> None:
        self._inner = inner
        self._run = run
        self._press = press

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def stream_file(self, name: str, escape_digits: str = "") -> str | None:
        if not escape_digits:
            return await self._inner.stream_file(name, escape_digits)  # type: ignore[no-any-return]
        return await self._listen(self._inner.stream_file(name, escape_digits))

    async def wait_for_digit(self, timeout_ms: int) -> str | None:
        return await self._listen(self._inner.wait_for_digit(timeout_ms))

    async def set_variable(self, name: str, value: str) -> None:
        await self._inner.set_variable(name, value)
        self._run.variables[name] = value
        if name == cv.ACTION:
            # The smoke call is a test call: keep it out of agent KPIs.
            await self._inner.set_variable(cv.TEST_TAG, f"smoke-{self._run.token}")
            self._run.decided.set()
            if value != "queue":
                # Never let a smoke call dial a transfer number or record a message: the
                # IVR's decision is the check for these routes; only queues are entered.
                await self._inner.hangup()

    async def _listen(self, command: Awaitable[str | None]) -> str | None:
        task = asyncio.ensure_future(command)
        if self._run.pending:
            done, _ = await asyncio.wait({task}, timeout=KEY_DELAY)
            if not done:
                key = self._run.pending[0]
                self._run.pressed.append(key)
                with contextlib.suppress(Exception):  # a failed key shows up as a wrong route
                    await self._press(self._run.channel, key)
        result = await task
        if result and self._run.pending and result == self._run.pending[0]:
            self._run.pending.pop(0)
        return result
