"""Run an IVR flow (ivr.model) on one caller's FastAGI channel.

The engine only decides; Asterisk acts. When the flow reaches a queue or a hangup,
the engine sets channel variables (cti.channel_vars) and returns, and the dialplan
runs Queue()/Hangup(). So a caller waiting in a queue does not depend on the
service staying up, and the tracker learns the IVR's decision from AMI VarSet
events like any other call fact. Hangups (AGIHangup) propagate to the server.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Protocol

from cti import channel_vars as cv
from ivr.model import DTMF_DIGITS, Flow, Hangup, Menu, Play, QueueRoute

log = logging.getLogger(__name__)

#: A flow that visits more nodes than this is looping; the caller goes to the failsafe.
MAX_STEPS = 64


class Channel(Protocol):
    """What the engine needs from an AGI channel (ivr.agi.server.AGIChannel)."""

    async def stream_file(self, name: str, escape_digits: str = "") -> str | None: ...
    async def wait_for_digit(self, timeout_ms: int) -> str | None: ...
    async def set_variable(self, name: str, value: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where the flow sent the caller and why."""

    action: str  # "queue" | "hangup"
    target: str
    choices: tuple[str, ...]
    reason: str
    path: tuple[str, ...]


@dataclass
class NodeStats:
    """Per-node counters (entries, choices, timeouts, invalid inputs, time spent)."""

    entries: Counter[str] = field(default_factory=Counter)
    timeouts: Counter[str] = field(default_factory=Counter)
    invalid: Counter[str] = field(default_factory=Counter)
    choices: Counter[tuple[str, str]] = field(default_factory=Counter)
    seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))


class FlowRunner:
    """Walks a flow for one call; one instance serves every call of a flow version."""

    def __init__(self, flow: Flow, stats: NodeStats | None = None) -> None:
        self.flow = flow
        self.stats = stats if stats is not None else NodeStats()

    async def run(self, channel: Channel) -> Outcome:
        node_id = self.flow.start
        choices: list[str] = []
        path: list[str] = []
        for _ in range(MAX_STEPS):
            node = self.flow.node(node_id)
            path.append(node_id)
            self.stats.entries[node_id] += 1
            started = time.monotonic()
            try:
                if isinstance(node, Play):
                    await self._play(channel, node.prompts)
                    node_id = node.next
                elif isinstance(node, Menu):
                    digit = await self._menu(channel, node)
                    if digit is None:
                        node_id = node.on_exhausted
                    else:
                        choices.append(digit)
                        self.stats.choices[(node.id, digit)] += 1
                        node_id = node.choices[digit]
                elif isinstance(node, QueueRoute):
                    await self._play(channel, node.prompts)
                    reason = f"menu:{'>'.join(choices)}" if choices else f"node:{node.id}"
                    return Outcome("queue", node.queue, tuple(choices), reason, tuple(path))
                elif isinstance(node, Hangup):
                    await self._play(channel, node.prompts)
                    return Outcome("hangup", "normal", tuple(choices), f"node:{node.id}", tuple(path))
            finally:
                self.stats.seconds[path[-1]] += time.monotonic() - started
        raise RuntimeError(f"IVR flow did not reach a queue or hangup in {MAX_STEPS} steps: {path[-8:]}")

    async def _play(self, channel: Channel, prompts: tuple[str, ...]) -> None:
        for prompt in prompts:
            await channel.stream_file(self.flow.sound(prompt))

    async def _menu(self, channel: Channel, menu: Menu) -> str | None:
        """One digit from the caller, re-prompting on timeout or invalid input."""
        for _attempt in range(menu.retries + 1):
            digit: str | None = None
            for prompt in menu.prompts:
                digit = await channel.stream_file(self.flow.sound(prompt), DTMF_DIGITS)
                if digit:
                    break
            if not digit:
                digit = await channel.wait_for_digit(int(menu.timeout * 1000))
            if not digit:
                self.stats.timeouts[menu.id] += 1
                if menu.timeout_prompt:
                    await channel.stream_file(self.flow.sound(menu.timeout_prompt))
                continue
            if digit in menu.choices:
                return digit
            self.stats.invalid[menu.id] += 1
            if menu.invalid_prompt:
                await channel.stream_file(self.flow.sound(menu.invalid_prompt))
        return None


async def publish_outcome(channel: Channel, outcome: Outcome) -> None:
    """Hand the decision to the dialplan (and, via VarSet, to the tracker)."""
    await channel.set_variable(cv.CHOICE, ">".join(outcome.choices))
    await channel.set_variable(cv.ROUTE_REASON, outcome.reason)
    await channel.set_variable(cv.TARGET, outcome.target)
    # ACTION last: the dialplan and the tracker treat it as "decision complete".
    await channel.set_variable(cv.ACTION, outcome.action)
