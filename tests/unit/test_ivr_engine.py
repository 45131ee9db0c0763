"""The IVR engine on a scripted channel: every path of the default hotline, without Asterisk."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from cti import channel_vars as cv
from dialplans.compiler import AsteriskSettings, compile_hotline
from dialplans.definition import DEFAULT_PATH, load_definition
from ivr.agi.errors import AGIHangup
from ivr.engine import QUEUE_PRIO, FlowRunner, Outcome, publish_outcome
from ivr.model import Flow, Lookup, Menu, Play
from ivr.routing import CallerFacts, QueueLoad

FLOW = compile_hotline(
    load_definition(DEFAULT_PATH),
    AsteriskSettings(ami_secret="x", agent_passwords=dict.fromkeys(("1001", "1002", "1003", "1004"), "p")),
).flow
WORKDAY = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)  # Wednesday 11:00 in Shanghai
NATIONAL_DAY = datetime(2026, 10, 1, 4, 0, tzinfo=UTC)  # a holiday in the default calendar
STAFFED = {"repair": 2, "installation": 2, "complaint": 2, "south": 1, "operator": 4}


@dataclass
class ScriptedChannel:
    """Presses `keys` in order: one entry per prompt/wait; None = caller stays silent."""

    keys: list[str | None]
    played: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    hang_up_after: int | None = None  # hang up when this many prompts have played

    async def stream_file(self, name: str, escape_digits: str = "") -> str | None:
        if self.hang_up_after is not None and len(self.played) >= self.hang_up_after:
            raise AGIHangup("caller hung up")
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


@dataclass
class Load:
    logged_in: dict[str, int]

    def load(self, queue: str) -> QueueLoad:
        n = self.logged_in.get(queue, 0)
        return QueueLoad(queue, True, members=4, logged_in=n, waiting=0, estimated_wait=0.0 if n else None)


def runner(facts: CallerFacts | None = None, logged_in: dict[str, int] | None = None,
           now: datetime = WORKDAY) -> FlowRunner:
    return FlowRunner(FLOW, clock=lambda: now, lookup=lambda number: facts or CallerFacts(status="unknown"),
                      queue_load=Load(STAFFED if logged_in is None else logged_in))


@pytest.mark.parametrize(("digit", "queue"), [("1", "repair"), ("2", "installation"), ("3", "complaint"),
                                              ("0", "operator")])
async def test_each_menu_choice_routes_to_its_queue(digit: str, queue: str) -> None:
    ch = ScriptedChannel([digit])
    outcome = await runner().run(ch, "13512345678")
    assert (outcome.action, outcome.target, outcome.choices) == ("queue", queue, (digit,))
    assert outcome.path[:3] == ("hours", "lookup", "main")
    assert outcome.reason.startswith(f"menu:{digit}") and outcome.reason.endswith(f"queue {queue}")
    assert ch.played == ["welcome", "connecting"]  # the digit interrupted the welcome prompt


async def test_digit_after_prompts_within_timeout() -> None:
    ch = ScriptedChannel([None, None, "2"])
    outcome = await runner().run(ch, "13512345678")
    assert outcome.target == "installation"
    assert ch.played == ["welcome", "menu", "connecting"]


async def test_invalid_then_valid() -> None:
    r = runner()
    ch = ScriptedChannel(["9", "3"])
    outcome = await r.run(ch, "13512345678")
    assert outcome.target == "complaint"
    assert ch.played == ["welcome", "invalid", "welcome", "connecting"]
    assert r.stats.invalid["main"] == 1
    assert r.stats.choices[("main", "3")] == 1


async def test_silence_goes_to_operator_after_retries() -> None:
    r = runner()
    ch = ScriptedChannel([])
    outcome = await r.run(ch, "13512345678")
    assert outcome.action == "queue" and outcome.target == "operator"
    assert outcome.choices == ()
    assert outcome.path[-2:] == ("operator", "operator_queue")
    assert "operator default: no rule matched (customer unknown)" in outcome.reason
    assert r.stats.timeouts["main"] == 3  # first try + 2 retries
    assert ch.played.count("timeout") == 3


async def test_after_hours_leaves_a_message_for_the_operator_queue() -> None:
    r = runner(now=NATIONAL_DAY)
    ch = ScriptedChannel([])
    outcome = await r.run(ch, "13512345678")
    assert (outcome.action, outcome.target) == ("voicemail", "operator")
    assert ch.played == ["closed", "leave_message"]
    assert "hours main closed: holiday 2026-10-01 12:00 Asia/Shanghai" in outcome.reason
    assert r.stats.routes[("hours", "closed")] == 1 and r.stats.entries["main"] == 0


async def test_vip_joins_the_chosen_queue_with_priority() -> None:
    vip = CallerFacts(status="match", customer="DEMO-0002", vip=True)
    ch = ScriptedChannel(["1"])
    outcome = await runner(vip).run(ch, "13900139000")
    assert (outcome.target, outcome.priority) == ("repair", 10)
    assert "rule vip-priority: customer DEMO-0002 vip=true" in outcome.reason
    await publish_outcome(ch, outcome)
    assert ch.variables[QUEUE_PRIO] == "10" and ch.order[-1] == cv.ACTION


async def test_no_agents_logged_in_overflows_to_operator() -> None:
    r = runner(logged_in={"repair": 0, "operator": 1})
    ch = ScriptedChannel(["1"])
    outcome = await r.run(ch, "13512345678")
    assert outcome.target == "operator"
    assert outcome.path[-3:] == ("repair", "overflow", "operator_queue")
    assert "rule repair-no-agents: repair has 0 of 4 agents logged in" in outcome.reason
    assert ch.played == ["welcome", "busy", "connecting"]
    assert r.stats.routes[("repair", "repair-no-agents")] == 1


async def test_nobody_logged_in_anywhere_leaves_a_message() -> None:
    outcome = await runner(logged_in={}).run(ScriptedChannel(["1"]), "13512345678")
    assert (outcome.action, outcome.target) == ("voicemail", "operator")
    assert "rule operator-no-agents" in outcome.reason


@pytest.mark.parametrize(("facts", "target", "rule"), [
    (CallerFacts("match", "C1", open_repair=True, days_since_install=2), "repair", "open-repair"),
    (CallerFacts("match", "C1", days_since_install=7), "installation", "new-installation"),
    (CallerFacts("match", "C1", days_since_install=8, region="华南"), "south", "south-region"),
    (CallerFacts("match", "C1", days_since_install=8, region="华北"), "operator", None),
])
async def test_operator_choice_routes_by_customer_record(facts: CallerFacts, target: str, rule: str | None) -> None:
    outcome = await runner(facts).run(ScriptedChannel(["0"]), "13512345678")
    assert outcome.target == target
    if rule:
        assert f"rule {rule}:" in outcome.reason
    else:
        assert "operator default" in outcome.reason


async def test_hangup_mid_menu_is_counted_and_propagates() -> None:
    r = runner()
    with pytest.raises(AGIHangup):
        await r.run(ScriptedChannel([], hang_up_after=1), "13512345678")
    assert r.stats.hangups["main"] == 1
    assert r.stats.to_dict()["main"]["hangups"] == 1


async def test_lookup_failure_leaves_caller_unknown_and_the_call_goes_on() -> None:
    def broken(number: str) -> CallerFacts:
        raise RuntimeError("database is down")

    r = FlowRunner(FLOW, clock=lambda: WORKDAY, lookup=broken, queue_load=Load(STAFFED))
    outcome = await r.run(ScriptedChannel(["0"]), "13512345678")
    assert outcome.target == "operator" and "customer error" in outcome.reason


async def test_slow_lookup_times_out_without_blocking_the_loop() -> None:
    import threading

    release = threading.Event()

    def slow(number: str) -> CallerFacts:
        release.wait(5)
        return CallerFacts("match", "X", vip=True)

    flow = Flow(start="l", nodes={**FLOW.nodes, "l": Lookup("l", "main", 0.2)},
                prompts=FLOW.prompts)
    r = FlowRunner(flow, clock=lambda: WORKDAY, lookup=slow, queue_load=Load(STAFFED))
    try:
        outcome = await r.run(ScriptedChannel(["0"]), "13512345678")
    finally:
        release.set()
    assert outcome.priority is None and "customer timeout" in outcome.reason


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
