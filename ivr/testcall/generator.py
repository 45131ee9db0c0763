"""Scenarios from the hotline's IVR flow, one per menu path, so every choice is tested.

A path is walked from the start node: prompts of each node are expected in order,
each menu choice is pressed after the menu's prompts, a queue node expects its
prompts and then an agent, voicemail/transfer/hangup nodes expect their prompts.
What DTMF cannot choose is decided by a stated assumption carried on the scenario
(`assumes`): opening hours branch both ways ("hours:open" / "hours:closed", the
service's clock decides which one a real call takes), a caller lookup is silent, a
routing node takes its default (the test caller is no known customer), a queue's
overflow rules do not fire (agents are available), a digit collection gets
`min_digits` ones and '#'. Branches that need caller data or queue conditions are
listed as skipped with the reason, never silently dropped; so are node types this
generator does not know.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from ivr.model import (
    Collect,
    Flow,
    Hangup,
    Hours,
    Lookup,
    Menu,
    Play,
    QueueRoute,
    Route,
    Transfer,
    Voicemail,
    successors,
)
from ivr.testcall.scenario import Scenario, Step, Thresholds

MAX_PATHS = 500


@dataclass(frozen=True, slots=True)
class Skipped:
    path: tuple[str, ...]
    node: str
    reason: str


@dataclass
class Generated:
    scenarios: list[Scenario] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def menu_choices(self) -> set[tuple[str, str]]:
        """(menu node, digit) pairs exercised by the generated scenarios."""
        return {pair for s in self.scenarios for pair in _pairs(s)}


def _pairs(s: Scenario) -> list[tuple[str, str]]:
    return [(node, digit) for node, digit in (p.split(":", 1) for p in s.path)]


def menu_choices(flow: Flow) -> set[tuple[str, str]]:
    """Every (menu node, digit) reachable from the start node: what full coverage means."""
    seen: set[str] = set()
    out: set[tuple[str, str]] = set()
    stack = [flow.start]
    while stack:
        nid = stack.pop()
        if nid in seen or nid not in flow.nodes:
            continue
        seen.add(nid)
        node = flow.nodes[nid]
        if isinstance(node, Menu):
            out.update((nid, d) for d in node.choices)
        stack.extend(successors(node))
    return out


def generate(flow: Flow, number: str, *, caller_id: str | None = None, stay: float = 2.0,
             agent_within: float = 60.0, thresholds: Thresholds | None = None) -> Generated:
    """One scenario per path from the start node to where the IVR hands the call over."""
    out = Generated()
    names: dict[str, int] = {}
    for walk in _walk(flow, flow.start, _Walk()):
        if isinstance(walk.end, Skipped):
            out.skipped.append(walk.end)
            continue
        digits = "-".join(p.split(":", 1)[1].replace("*", "star").replace("#", "hash") for p in walk.path)
        name = "path-" + (digits or "direct")
        if "hours:closed" in walk.assumes:
            name += "-closed"
        names[name] = names.get(name, 0) + 1
        if names[name] > 1:
            name = f"{name}-{names[name]}"
        steps = _finish(walk.steps, walk.end, stay, agent_within)
        out.scenarios.append(Scenario(name=name, number=number, caller_id=caller_id, path=walk.path,
                                      assumes=walk.assumes, thresholds=thresholds or Thresholds(),
                                      steps=tuple(steps)))
        if len(out.scenarios) >= MAX_PATHS:
            break
    return out


def _finish(steps: tuple[Step, ...], end: Any, stay: float, agent_within: float) -> list[Step]:
    if isinstance(end, QueueRoute):
        return [*steps, Step("wait_agent", within=agent_within), Step("stay", seconds=stay), Step("hangup")]
    if isinstance(end, Hangup):
        return [*steps, Step("expect_hangup", within=10.0)]
    # Voicemail (the caller would speak now) and transfer (the far end is not ours).
    return [*steps, Step("stay", seconds=stay), Step("hangup")]


def _expect(prompts: tuple[str, ...]) -> tuple[Step, ...]:
    return tuple(Step("expect_prompt", prompt=p) for p in prompts)


@dataclass(frozen=True, slots=True)
class _Walk:
    path: tuple[str, ...] = ()
    steps: tuple[Step, ...] = ()
    assumes: tuple[str, ...] = ()
    visited: frozenset[str] = frozenset()
    end: Any = None

    def then(self, *steps: Step, choice: str | None = None, assume: str | None = None) -> _Walk:
        return replace(self, steps=self.steps + steps, path=self.path + ((choice,) if choice else ()),
                       assumes=self.assumes + ((assume,) if assume else ()))

    def skip(self, node: str, reason: str) -> _Walk:
        return replace(self, end=Skipped(self.path, node, reason))


def _walk(flow: Flow, nid: str, w: _Walk) -> Iterator[_Walk]:
    node = flow.nodes.get(nid)
    if node is None:
        yield w.skip(nid, "the node does not exist")
        return
    if nid in w.visited:
        # A loop back (e.g. "9: back to the main menu"): the path ends instead of looping.
        yield w.skip(nid, "loops back to a node already on this path")
        return
    w = replace(w, visited=w.visited | {nid})
    if isinstance(node, Menu):
        for digit in sorted(node.choices):
            yield from _walk(flow, node.choices[digit],
                             w.then(*_expect(node.prompts), Step("press", digits=digit), choice=f"{nid}:{digit}"))
    elif isinstance(node, Play):
        yield from _walk(flow, node.next, w.then(*_expect(node.prompts)))
    elif isinstance(node, Lookup):
        yield from _walk(flow, node.next, w)  # silent: the caller hears nothing
    elif isinstance(node, Hours):
        yield from _walk(flow, node.open, w.then(assume="hours:open"))
        yield from _walk(flow, node.closed, w.then(assume="hours:closed"))
    elif isinstance(node, Collect):
        digits = "1" * max(1, node.min_digits) + "#"
        yield from _walk(flow, node.next, w.then(*_expect(node.prompts), Step("press", digits=digits),
                                                 assume=f"collect:{node.variable}={digits[:-1]}"))
    elif isinstance(node, Route):
        for rule in node.rules:
            if rule.goto:
                yield w.skip(nid, f"rule {rule.id} -> {rule.goto} depends on caller data or queue state")
        yield from _walk(flow, node.default, w.then(assume=f"route:{nid}=default"))
    elif isinstance(node, QueueRoute):
        for rule in node.rules:
            if rule.goto:
                yield w.skip(nid, f"rule {rule.id} -> {rule.goto} depends on caller data or queue state")
        yield replace(w.then(*_expect(node.prompts), assume=f"queue:{node.queue} has agents"), end=node)
    elif isinstance(node, Voicemail | Transfer | Hangup):
        yield replace(w.then(*_expect(node.prompts)), end=node)
    else:
        yield w.skip(nid, f"node type {type(node).__name__} is not known to the test-call generator")
