"""The IVR engine on a scripted channel: every path of a menu, without Asterisk."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from cti import channel_vars as cv
from dialplans.compiler import AsteriskSettings, compile_hotline
from dialplans.definition import DEFAULT_PATH, load_definition
from ivr.engine import FlowRunner, Outcome, publish_outcome
from ivr.model import Flow, Menu, Play

FLOW = compile_hotline(
    load_definition(DEFAULT_PATH),
    AsteriskSettings(ami_secret="x", agent_passwords=dict.fromkeys(("1001", "1002", "1003", "1004"), "p")),
).flow


@dataclass
class ScriptedChannel:
    """Presses `keys` in order: one entry per prompt/wait; None = caller stays silent."""

    keys: list[str | None]
    played: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)

    async def stream_file(self, name: str, escape_digits: str = "") -> str | None:
        self.played.append(name.rsplit("/", 1)[-1])
        if escape_digits and self.keys:
            return self.keys.pop(0)
        return None

    async def wait_for_digit(self, timeout_ms: int) -> str | None:
        assert timeout_ms == 5000
        return self.keys.pop(0) if self.keys else None

    async def set_variable(self, name: str, value: str) -> None:
        self.variables[name] = value
        self.order.append(name)


@pytest.mark.parametrize(("digit", "queue"), [("1", "repair"), ("2", "installation"), ("3", "complaint"),
                                              ("0", "operator")])
async def test_each_menu_choice_routes_to_its_queue(digit: str, queue: str) -> None:
    ch = ScriptedChannel([digit])
    outcome = await FlowRunner(FLOW).run(ch)
    assert outcome == Outcome("queue", queue, (digit,), f"menu:{digit}", ("main", queue))
    assert ch.played == ["welcome", "connecting"]  # the digit interrupted the welcome prompt


async def test_digit_after_prompts_within_timeout() -> None:
    ch = ScriptedChannel([None, None, "2"])
    outcome = await FlowRunner(FLOW).run(ch)
    assert outcome.target == "installation"
    assert ch.played == ["welcome", "menu", "connecting"]


async def test_invalid_then_valid() -> None:
    runner = FlowRunner(FLOW)
    ch = ScriptedChannel(["9", "3"])
    outcome = await runner.run(ch)
    assert outcome.target == "complaint"
    assert ch.played == ["welcome", "invalid", "welcome", "connecting"]
    assert runner.stats.invalid["main"] == 1
    assert runner.stats.choices[("main", "3")] == 1


async def test_silence_goes_to_operator_after_retries() -> None:
    runner = FlowRunner(FLOW)
    ch = ScriptedChannel([])
    outcome = await runner.run(ch)
    assert outcome.action == "queue" and outcome.target == "operator"
    assert outcome.choices == ()
    assert runner.stats.timeouts["main"] == 3  # first try + 2 retries
    assert ch.played.count("timeout") == 3


async def test_loop_without_exit_is_stopped() -> None:
    flow = Flow(start="a", nodes={"a": Play("a", (), "b"), "b": Play("b", (), "a")}, prompts={})
    with pytest.raises(RuntimeError, match="did not reach"):
        await FlowRunner(flow).run(ScriptedChannel([]))


async def test_menu_with_hangup_node() -> None:
    from ivr.model import Hangup

    flow = Flow(start="m", nodes={
        "m": Menu("m", ("p",), {"9": "bye"}, timeout=5, retries=0, on_exhausted="bye"),
        "bye": Hangup("bye", ("p",)),
    }, prompts={"p": "/s/p"})
    outcome = await FlowRunner(flow).run(ScriptedChannel(["9"]))
    assert outcome.action == "hangup"


async def test_publish_sets_action_last() -> None:
    ch = ScriptedChannel([])
    await publish_outcome(ch, Outcome("queue", "repair", ("1",), "menu:1", ("main", "repair")))
    assert ch.variables == {cv.CHOICE: "1", cv.ROUTE_REASON: "menu:1", cv.TARGET: "repair", cv.ACTION: "queue"}
    assert ch.order[-1] == cv.ACTION
