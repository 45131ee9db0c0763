"""Each node type: the YAML schema, the engine's behaviour, and what the compiler makes of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from cti import channel_vars as cv
from dialplans.compiler import AsteriskSettings, compile_hotline
from dialplans.definition import DEFAULT_PATH, InvalidDefinition, load_definition
from ivr.engine import INPUT_PREFIX, FlowRunner, publish_outcome
from ivr.model import (
    Collect,
    Flow,
    Hangup,
    Language,
    Lookup,
    Menu,
    Play,
    QueueRoute,
    Route,
    Transfer,
    Voicemail,
    first_menu,
    prompts_of,
    successors,
)
from ivr.routing import CallerFacts

SETTINGS = AsteriskSettings(ami_secret="x", agent_passwords=dict.fromkeys(("1001", "1002"), "p"))


@dataclass
class Keys:
    """A caller who presses `keys`: one per prompt or digit wait; None = silence."""

    keys: list[str | None]
    played: list[str] = field(default_factory=list)
    waits: list[int] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)

    async def stream_file(self, name: str, escape_digits: str = "") -> str | None:
        self.played.append(name)
        return self.keys.pop(0) if escape_digits and self.keys else None

    async def wait_for_digit(self, timeout_ms: int) -> str | None:
        self.waits.append(timeout_ms)
        return self.keys.pop(0) if self.keys else None

    async def set_variable(self, name: str, value: str) -> None:
        self.variables[name] = value


COLLECT = Collect("order", ("ask",), "ORDER_NO", next="done", on_failure="op", min_digits=4, max_digits=8,
                  first_timeout=6, inter_timeout=2, retries=1, invalid_prompt="bad")
FLOW = Flow(start="order", nodes={"order": COLLECT, "done": Hangup("done"), "op": QueueRoute("op", "operator")},
            prompts={"ask": "ask", "bad": "bad"})


@pytest.mark.parametrize(("keys", "digits"), [
    (["1", "2", "3", "4", "#"], "1234"),  # '#' submits
    (["1", "2", "3", "4", None], "1234"),  # inter-digit timeout with enough digits submits
    (["1", "2", "*", "9", "8", "7", "6", "#"], "9876"),  # '*' clears
    (list("123456789"), "12345678"),  # max_digits submits at once
    ([None, "5", "5", "5", "5", "#"], "5555"),  # first key after the prompt, within first_timeout
])
async def test_collect_digits(keys: list[str | None], digits: str) -> None:
    ch = Keys(list(keys))
    runner = FlowRunner(FLOW)
    outcome = await runner.run(ch, "1")
    assert outcome.action == "hangup" and outcome.data == {"ORDER_NO": digits}
    assert ch.variables[INPUT_PREFIX + "ORDER_NO"] == digits == ch.variables["HOTLINE_IN_ORDER_NO"]


async def test_collect_timeouts_are_first_then_inter_digit() -> None:
    ch = Keys([None, "1", "2", "3", "4", None])
    await FlowRunner(FLOW).run(ch, "1")
    assert ch.waits == [6000, 2000, 2000, 2000, 2000]


async def test_collect_too_short_then_silence_goes_to_failure() -> None:
    ch = Keys(["1", "2", "#"])
    runner = FlowRunner(FLOW)
    outcome = await runner.run(ch, "1")
    assert outcome.target == "operator" and outcome.path == ("order", "op")
    assert runner.stats.invalid["order"] == 1 and runner.stats.timeouts["order"] == 1
    assert ch.played == ["ask", "bad", "ask"]
    assert not ch.variables


async def test_voicemail_transfer_and_publish() -> None:
    flow = Flow(start="m", nodes={
        "m": Menu("m", ("p",), {"1": "vm", "2": "xfer"}, retries=0, on_exhausted="vm"),
        "vm": Voicemail("vm", "operator", ("p",)), "xfer": Transfer("xfer", "1004"),
    }, prompts={"p": "p"})
    vm = await FlowRunner(flow).run(Keys(["1"]), "1")
    assert (vm.action, vm.target, vm.reason) == ("voicemail", "operator", "menu:1; message for operator")
    ch = Keys([])
    xfer = await FlowRunner(flow).run(Keys(["2"]), "1")
    await publish_outcome(ch, xfer)
    assert ch.variables[cv.ACTION] == "transfer" and ch.variables[cv.TARGET] == "1004"
    assert "QUEUE_PRIO" not in ch.variables


def test_successors_cover_every_branch() -> None:
    defn = load_definition(DEFAULT_PATH)
    nodes = defn.flow.nodes
    assert successors(nodes["hours"]) == ("lookup", "closed")
    assert successors(nodes["main"]) == ("repair", "installation", "complaint", "operator")
    assert successors(nodes["operator"]) == ("repair", "installation", "south", "operator_queue")
    assert successors(nodes["repair"]) == ("overflow",)
    assert successors(nodes["complaint"]) == ()
    assert successors(nodes["message"]) == ()
    assert successors(COLLECT) == ("done", "op")
    assert successors(Lookup("l", "x")) == ("x",) == successors(Play("p", (), "x"))
    assert successors(Route("r", (), "d")) == ("d",)
    assert first_menu(defn.flow) == "main"
    assert prompts_of(nodes["main"]) == ("welcome", "menu", "invalid", "timeout")
    assert prompts_of(nodes["hours"]) == ()
    # Every successor exists: nothing in the default hotline points nowhere.
    assert all(t in nodes for n in nodes.values() for t in successors(n))


def test_default_hotline_compiles_queue_options_and_exits() -> None:
    files = compile_hotline(load_definition(DEFAULT_PATH), SETTINGS.__class__(
        ami_secret="x", agent_passwords=dict.fromkeys(("1001", "1002", "1003", "1004"), "p"))).files
    ext = files["extensions.conf"]
    assert "exten => voicemail-operator,1,Record(/var/spool/asterisk/monitor/${HOTLINE_REC}-message.wav,3,120,k)" in ext
    queues = files["queues.conf"]
    repair = queues.split("[repair]")[1].split("\n\n")[0]
    assert "announce-position = yes" in repair and "announce-frequency = 60" in repair
    assert "musicclass = default" in repair


EXTRA = """
music_on_hold:
  calm: {folder: calm}
"""
NODES = """
    xfer: {type: transfer, number: "1001", prompts: [p]}
    out: {type: transfer, number: "008613800138000"}
    order: {type: collect, variable: ORDER_NO, next: xfer, on_failure: out, min_digits: 6, max_digits: 10,
            first_timeout: 8, inter_timeout: 3}
"""


def _custom(queue_extra: str = "", nodes: str = NODES, top: str = EXTRA) -> str:
    return f"""
version: 1
hotline: {{numbers: ["4000"], failsafe_queue: q, failsafe_prompt: p}}
{top}
prompts: {{p: {{text: hi}}}}
agents: {{"1001": {{name: A}}}}
queues:
  q:
    members: ["1001"]
    music_on_hold: calm
    periodic_announce: p
    periodic_announce_frequency: 45
    announce_holdtime: true
    {queue_extra}
ivr:
  start: order
  nodes:{nodes}
"""


def test_transfer_collect_moh_and_periodic_announcements_compile() -> None:
    defn = load_definition(_custom())
    order = defn.flow.nodes["order"]
    assert isinstance(order, Collect) and (order.min_digits, order.max_digits, order.first_timeout) == (6, 10, 8.0)
    files = compile_hotline(defn, AsteriskSettings(ami_secret="x", agent_passwords={"1001": "p"})).files
    ext = files["extensions.conf"]
    assert "exten => transfer-1001,1,Dial(PJSIP/1001,60)" in ext  # an agent: ring the phone
    assert ' same => n,GotoIf($["${DIALSTATUS}" = "ANSWER"]?hangup-normal,1:failsafe,1)' in ext
    assert "exten => transfer-008613800138000,1,Dial(PJSIP/008613800138000@carrier,60)" in ext
    q = files["queues.conf"]
    assert "musicclass = calm" in q and "periodic-announce = /var/lib/hotline/sounds/zh/p" in q
    assert "periodic-announce-frequency = 45" in q and "announce-holdtime = yes" in q
    assert "[calm]\nmode = files\ndirectory = /var/lib/hotline/moh/calm" in files["musiconhold.conf"]


@pytest.mark.parametrize(("nodes", "message", "line_of"), [
    ("\n    order: {type: collect, variable: order-no, next: x, on_failure: x}\n    x: {type: hangup}\n",
     "'variable' value 'order-no' is not allowed here", "variable: order-no"),
    ("\n    order: {type: collect, variable: N, min_digits: 5, max_digits: 3, next: x, on_failure: x}"
     "\n    x: {type: hangup}\n", "'max_digits' must not be below 'min_digits'", "max_digits: 3"),
    ("\n    order: {type: transfer, number: 'call-me'}\n", "'number' value 'call-me' is not allowed", "call-me"),
    ("\n    order: {type: voicemail, queue: nope}\n", "queue 'nope' is not defined", "queue: nope"),
    ("\n    order: {type: hours, calendar: nine-to-five, open: order, closed: order}\n",
     "calendar 'nine-to-five' is not defined", "calendar: nine-to-five"),
    ("\n    order:\n      type: route\n      default: order\n      rules:\n"
     "        - {id: r1, if: {shoe_size: 42}, goto: order}\n", "unknown fact 'shoe_size'", "shoe_size"),
    ("\n    order:\n      type: route\n      default: order\n      rules:\n"
     "        - {id: r1, if: {vip: true}, priority: 5}\n", "a rule needs 'goto'", "priority: 5"),
    ("\n    order:\n      type: route\n      default: order\n      rules:\n"
     "        - {id: r1, if: {no_agents: true}, goto: order}\n", "needs {queue: id, value: ...}", "no_agents"),
    ("\n    order:\n      type: route\n      default: order\n      rules:\n"
     "        - {id: r1, if: {vip: yes-please}, goto: order}\n", "'vip' must be true or false", "yes-please"),
    ("\n    order:\n      type: route\n      default: elsewhere\n      rules: []\n",
     "goes to node 'elsewhere', which does not exist", "default: elsewhere"),
    ("\n    order: {type: queue, queue: q, rules: [{id: a, if: {vip: true}, goto: gone}]}\n",
     "goes to node 'gone'", "goto: gone"),
    ("\n    order: {type: teleport}\n", "type must be one of menu, play, collect", "teleport"),
])
def test_node_errors_name_the_line(nodes: str, message: str, line_of: str) -> None:
    text = _custom(nodes=nodes)
    with pytest.raises(InvalidDefinition) as info:
        load_definition(text)
    errors = [e for e in info.value.errors if message in e.message]
    assert errors, info.value.errors
    expected = next(i for i, line in enumerate(text.splitlines(), 1) if line_of in line)
    assert any(e.line == expected for e in errors), (errors, expected)


@pytest.mark.parametrize(("queue_extra", "top", "message"), [
    ("", "", "music-on-hold class 'calm' is not defined"),
    ("announce_position: maybe", EXTRA, "'announce_position' must be true or false"),
    ("announce_frequency: 99999", EXTRA, "'announce_frequency' must be a number from 0 to 3600"),
])
def test_queue_option_errors(queue_extra: str, top: str, message: str) -> None:
    with pytest.raises(InvalidDefinition, match=message):
        load_definition(_custom(queue_extra=queue_extra, top=top))


async def test_prompt_language_follows_the_customer_record_and_language_nodes() -> None:
    defn = load_definition(DEFAULT_PATH)
    flow = compile_hotline(defn, SETTINGS.__class__(
        ami_secret="x", agent_passwords=dict.fromkeys(("1001", "1002", "1003", "1004"), "p"))).flow
    english = FlowRunner(flow, lookup=lambda n: CallerFacts("match", "E1", language="en"))
    english.clock = lambda: datetime(2026, 11, 25, 3, tzinfo=UTC)
    ch = Keys([None, "3"])
    outcome = await english.run(ch, "13712340003")
    assert outcome.target == "complaint"
    assert ch.played == ["/var/lib/hotline/sounds/en/welcome", "/var/lib/hotline/sounds/en/menu",
                         "/var/lib/hotline/sounds/en/connecting"]
    assert ch.variables["CHANNEL(language)"] == "en"  # Asterisk's queue announcements in English too
    chinese = FlowRunner(flow, lookup=lambda n: CallerFacts("match", "Z1", language="zh"))
    chinese.clock = english.clock
    ch = Keys(["3"])
    await chinese.run(ch, "13712340004")
    assert ch.played == ["/var/lib/hotline/sounds/zh/welcome", "/var/lib/hotline/sounds/zh/connecting"]
    assert "CHANNEL(language)" not in ch.variables
    # A language node switches explicitly; prompts without a variant keep the hotline's language.
    switched = Flow(start="en", nodes={"en": Language("en", "en", "bye"), "bye": Hangup("bye", ("a", "b"))},
                    prompts={"a": "zh/a", "b": "zh/b"}, localized={"en": {"a": "en/a"}})
    ch = Keys([])
    await FlowRunner(switched).run(ch, "1")
    assert ch.played == ["en/a", "zh/b"]


@pytest.mark.parametrize(("old", "new", "message"), [
    ('    en: { text: "We are closed now." }', '    fr: { text: "Fermé." }', "'fr' is not one of hotline.languages"),
    ("  languages: [en]", "  languages: [english]", "'english' is not a language code"),
    ('    en: { text: "We are closed now." }', '    en: { text: "" }', "'text' must be non-empty text"),
])
def test_language_errors_name_the_line(old: str, new: str, message: str) -> None:
    text = DEFAULT_PATH.read_text(encoding="utf-8")
    assert old in text
    text = text.replace(old, new, 1)
    with pytest.raises(InvalidDefinition) as info:
        load_definition(text)
    errors = [e for e in info.value.errors if message in e.message]
    assert errors, info.value.errors
    expected = next(i for i, line in enumerate(text.splitlines(), 1) if new.strip() in line)
    assert errors[0].line == expected, (errors, expected)
