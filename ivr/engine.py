"""Run an IVR flow (ivr.model) on one caller's FastAGI channel.

The engine only decides; Asterisk acts. When the flow reaches a queue, voicemail,
transfer or hangup, the engine sets channel variables (cti.channel_vars) and
returns, and the dialplan runs Queue()/Record()/Dial()/Hangup(). So a caller waiting
in a queue does not depend on the service staying up, and the tracker learns the
IVR's decision from AMI VarSet events like any other call fact. Hangups (AGIHangup)
are counted on the node where they happened and propagate to the server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from cti import channel_vars as cv
from ivr import hours
from ivr.agi.errors import AGIDeadChannel, AGIHangup
from ivr.model import (
    DTMF_DIGITS,
    Collect,
    Flow,
    Hangup,
    Hours,
    Language,
    Lookup,
    Menu,
    Node,
    Play,
    QueueRoute,
    Route,
    Transfer,
    Voicemail,
)
from ivr.routing import CallerFacts, QueueLoad, QueueLoadView, decide

log = logging.getLogger(__name__)

#: A flow that visits more nodes than this is looping; the caller goes to the failsafe.
MAX_STEPS = 64
#: Asterisk's own queue priority variable: higher joins ahead of lower.
QUEUE_PRIO = "QUEUE_PRIO"
#: Collected digits are stored as HOTLINE_IN_<variable>.
INPUT_PREFIX = f"{cv.PREFIX}IN_"

#: Blocking customer lookup by caller number (run in a worker thread).
CustomerLookup = Callable[[str], CallerFacts]
#: Live IVR position: (caller number, node id, "enter" | "input"); "input" is sent right
#: before the engine starts accepting digits (a menu or collect prompt, or a digit wait).
Watcher = Callable[[str, str, str], None]


class Channel(Protocol):
    """What the engine needs from an AGI channel (ivr.agi.server.AGIChannel)."""

    async def stream_file(self, name: str, escape_digits: str = "") -> str | None: ...
    async def wait_for_digit(self, timeout_ms: int) -> str | None: ...
    async def set_variable(self, name: str, value: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where the flow sent the caller and why."""

    action: str  # "queue" | "voicemail" | "transfer" | "hangup"
    target: str
    choices: tuple[str, ...]
    reason: str
    path: tuple[str, ...]
    priority: int | None = None
    data: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass
class NodeStats:
    """Per-node counters: entries, choices, timeouts, invalid inputs, hang-ups, routes, time."""

    entries: Counter[str] = field(default_factory=Counter)
    timeouts: Counter[str] = field(default_factory=Counter)
    invalid: Counter[str] = field(default_factory=Counter)
    hangups: Counter[str] = field(default_factory=Counter)
    choices: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: (node, rule id or "default"/"open"/"closed") -> calls it decided.
    routes: Counter[tuple[str, str]] = field(default_factory=Counter)
    seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))

    def to_dict(self) -> dict[str, Any]:
        """JSON view for GET /ivr/stats, one entry per node seen."""
        nodes = sorted(set(self.entries) | set(self.timeouts) | set(self.invalid) | set(self.hangups))
        return {
            node: {"entries": self.entries[node], "timeouts": self.timeouts[node], "invalid": self.invalid[node],
                   "hangups": self.hangups[node], "seconds": round(self.seconds[node], 3),
                   "choices": {d: n for (nid, d), n in self.choices.items() if nid == node},
                   "routes": {r: n for (nid, r), n in self.routes.items() if nid == node}}
            for node in nodes
        }


@dataclass
class CallState:
    """What one call has gathered on its way through the flow."""

    caller: str
    facts: CallerFacts = field(default_factory=CallerFacts)
    choices: list[str] = field(default_factory=list)
    path: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    data: dict[str, str] = field(default_factory=dict)
    #: Prompt language for this call; None = the hotline's language.
    language: str | None = None


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _no_lookup(number: str) -> CallerFacts:
    return CallerFacts(status="not_looked_up")


class _UnknownLoad:
    def load(self, queue: str) -> QueueLoad:
        return QueueLoad(queue, known=False)


class FlowRunner:
    """Walks a flow for one call; one instance serves every call of a flow version.

    `clock` (aware datetimes), `lookup` (blocking caller lookup) and `queue_load`
    are attributes so the service wires them and tests can swap them.
    """

    def __init__(
        self, flow: Flow, stats: NodeStats | None = None, *, clock: Callable[[], datetime] = _utc_now,
        lookup: CustomerLookup = _no_lookup, queue_load: QueueLoadView | None = None,
    ) -> None:
        self.flow = flow
        self.stats = stats if stats is not None else NodeStats()
        self.clock = clock
        self.lookup = lookup
        self.queue_load: QueueLoadView = queue_load if queue_load is not None else _UnknownLoad()
        self.watchers: list[Watcher] = []

    def _notify(self, caller: str, node_id: str, what: str) -> None:
        for watcher in list(self.watchers):
            try:
                watcher(caller, node_id, what)
            except Exception:  # a broken watcher must not cost a caller the call
                log.exception("IVR watcher failed")

    def replaced(self, flow: Flow) -> FlowRunner:
        """A runner for a newly published flow that keeps the stats, clock, lookup and queue view."""
        runner = FlowRunner(flow, self.stats, clock=self.clock, lookup=self.lookup, queue_load=self.queue_load)
        runner.watchers = self.watchers
        return runner

    async def run(self, channel: Channel, caller: str | None = None) -> Outcome:
        """Walk the flow; `caller` defaults to the AGI environment's caller ID number."""
        if caller is None:
            caller = str(getattr(getattr(channel, "env", None), "caller_id_num", "") or "")
        state = CallState(caller)
        node_id = self.flow.start
        for _ in range(MAX_STEPS):
            node = self.flow.node(node_id)
            state.path.append(node_id)
            self.stats.entries[node_id] += 1
            self._notify(state.caller, node_id, "enter")
            started = time.monotonic()
            try:
                step = await self._step(channel, node, state)
            except (AGIHangup, AGIDeadChannel):
                self.stats.hangups[node_id] += 1
                raise
            finally:
                self.stats.seconds[node_id] += time.monotonic() - started
            if isinstance(step, Outcome):
                return step
            node_id = step
        raise RuntimeError(f"IVR flow did not reach a queue or hangup in {MAX_STEPS} steps: {state.path[-8:]}")

    async def _step(self, channel: Channel, node: Node, state: CallState) -> str | Outcome:
        """Run one node: the next node's id, or the outcome when the IVR is done."""
        if isinstance(node, Play):
            await self._play(channel, node.prompts, state)
            return node.next
        if isinstance(node, Menu):
            digit = await self._menu(channel, node, state)
            if digit is None:
                return node.on_exhausted
            state.choices.append(digit)
            self.stats.choices[(node.id, digit)] += 1
            return node.choices[digit]
        if isinstance(node, Collect):
            digits = await self._collect(channel, node, state)
            if digits is None:
                return node.on_failure
            state.data[node.variable] = digits
            await channel.set_variable(INPUT_PREFIX + node.variable, digits)
            return node.next
        if isinstance(node, Lookup):
            state.facts = await self._lookup(node, state.caller)
            # A customer who prefers another language we have prompts in hears it.
            if state.facts.language in self.flow.localized:
                await self._set_language(channel, state, state.facts.language)
            return node.next
        if isinstance(node, Language):
            await self._set_language(channel, state, node.language)
            return node.next
        if isinstance(node, Hours):
            now = self.clock()
            is_open = hours.is_open(node.calendar, now)
            self.stats.routes[(node.id, "open" if is_open else "closed")] += 1
            if not is_open:
                state.reasons.append(f"hours {node.calendar.name} {hours.why(node.calendar, now)}")
            return node.open if is_open else node.closed
        if isinstance(node, Route):
            decision = decide(node.rules, state.facts, self.queue_load.load)
            if decision is None or decision.goto is None:
                self.stats.routes[(node.id, "default")] += 1
                state.reasons.append(f"{node.id} default: no rule matched (customer {state.facts.status})")
                return node.default
            self.stats.routes[(node.id, str(decision.rule))] += 1
            state.reasons.append(decision.reason)
            return decision.goto
        if isinstance(node, QueueRoute):
            decision = decide(node.rules, state.facts, self.queue_load.load, node.queue)
            self.stats.routes[(node.id, str(decision.rule) if decision else "default")] += 1
            if decision is not None:
                state.reasons.append(decision.reason)
                if decision.goto is not None:  # overflow: somewhere else instead
                    return decision.goto
            await self._play(channel, node.prompts, state)
            priority = decision.priority if decision is not None else None
            return self._outcome("queue", node.queue, state, f"queue {node.queue}", priority)
        await self._play(channel, node.prompts, state)
        if isinstance(node, Voicemail):
            return self._outcome("voicemail", node.queue, state, f"message for {node.queue}")
        if isinstance(node, Transfer):
            return self._outcome("transfer", node.number, state, f"transfer to {node.number}")
        if isinstance(node, Hangup):
            return self._outcome("hangup", "normal", state, f"hangup at {node.id}")
        raise TypeError(f"unknown IVR node type {type(node).__name__}")  # the failsafe takes the caller

    def _outcome(self, action: str, target: str, state: CallState, last: str,
                 priority: int | None = None) -> Outcome:
        """The reason reads left to right: menu digits, then every rule that decided, then the end."""
        parts = ([f"menu:{'>'.join(state.choices)}"] if state.choices else []) + state.reasons + [last]
        if priority is not None:
            parts.append(f"priority {priority}")
        return Outcome(action, target, tuple(state.choices), "; ".join(parts), tuple(state.path), priority,
                       dict(state.data))

    async def _lookup(self, node: Lookup, caller: str) -> CallerFacts:
        """The caller's facts, in a worker thread, bounded by the node's timeout."""
        if not caller:
            return CallerFacts(status="invalid")
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.lookup, caller), node.timeout)
        except TimeoutError:
            log.warning("customer lookup for %r took longer than %ss", caller, node.timeout)
            return CallerFacts(status="timeout")
        except Exception as exc:  # a broken store must not cost the caller the call
            log.warning("customer lookup for %r failed: %s", caller, exc)
            return CallerFacts(status="error")

    async def _set_language(self, channel: Channel, state: CallState, language: str | None) -> None:
        """Prompts in `language` from now on; Asterisk's own sounds (queue announcements)
        follow through CHANNEL(language) (only for languages other than the hotline's,
        which may have no Asterisk sounds at all, e.g. zh on Debian)."""
        state.language = language
        if language in self.flow.localized:
            await channel.set_variable("CHANNEL(language)", str(language))

    async def _play(self, channel: Channel, prompts: tuple[str, ...], state: CallState) -> None:
        for prompt in prompts:
            await channel.stream_file(self.flow.sound(prompt, state.language))

    async def _menu(self, channel: Channel, menu: Menu, state: CallState) -> str | None:
        """One digit from the caller, re-prompting on timeout or invalid input."""
        for _attempt in range(menu.retries + 1):
            digit: str | None = None
            for prompt in menu.prompts:
                self._notify(state.caller, menu.id, "input")
                digit = await channel.stream_file(self.flow.sound(prompt, state.language), DTMF_DIGITS)
                if digit:
                    break
            if not digit:
                self._notify(state.caller, menu.id, "input")
                digit = await channel.wait_for_digit(int(menu.timeout * 1000))
            if not digit:
                self.stats.timeouts[menu.id] += 1
                if menu.timeout_prompt:
                    await channel.stream_file(self.flow.sound(menu.timeout_prompt, state.language))
                continue
            if digit in menu.choices:
                return digit
            self.stats.invalid[menu.id] += 1
            if menu.invalid_prompt:
                await channel.stream_file(self.flow.sound(menu.invalid_prompt, state.language))
        return None

    async def _collect(self, channel: Channel, node: Collect, state: CallState) -> str | None:
        """Digits until `#`, `max_digits`, or an inter-digit timeout; `*` starts over."""
        for _attempt in range(node.retries + 1):
            key: str | None = None
            for prompt in node.prompts:
                self._notify(state.caller, node.id, "input")
                key = await channel.stream_file(self.flow.sound(prompt, state.language), DTMF_DIGITS)
                if key:
                    break
            if not key:
                self._notify(state.caller, node.id, "input")
                key = await channel.wait_for_digit(int(node.first_timeout * 1000))
            digits = ""
            submitted = False
            while key:
                if key == "#":
                    submitted = True
                    break
                if key == "*":
                    digits = ""
                    self._notify(state.caller, node.id, "input")
                    key = await channel.wait_for_digit(int(node.first_timeout * 1000))
                    continue
                digits += key
                if len(digits) >= node.max_digits:
                    submitted = True
                    break
                self._notify(state.caller, node.id, "input")
                key = await channel.wait_for_digit(int(node.inter_timeout * 1000))
            if not digits and not submitted:
                self.stats.timeouts[node.id] += 1
            elif node.min_digits <= len(digits) <= node.max_digits:
                return digits
            else:
                self.stats.invalid[node.id] += 1
                if node.invalid_prompt:
                    await channel.stream_file(self.flow.sound(node.invalid_prompt, state.language))
        return None


async def publish_outcome(channel: Channel, outcome: Outcome) -> None:
    """Hand the decision to the dialplan (and, via VarSet, to the tracker)."""
    await channel.set_variable(cv.CHOICE, ">".join(outcome.choices))
    await channel.set_variable(cv.ROUTE_REASON, outcome.reason)
    await channel.set_variable(cv.TARGET, outcome.target)
    if outcome.priority is not None:
        await channel.set_variable(QUEUE_PRIO, str(outcome.priority))
    # ACTION last: the dialplan and the tracker treat it as "decision complete".
    await channel.set_variable(cv.ACTION, outcome.action)
