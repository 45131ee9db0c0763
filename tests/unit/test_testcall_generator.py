"""Scenario generation from the hotline definition: every menu choice is covered; what DTMF
cannot drive is an explicit assumption or an explicit skip."""

from __future__ import annotations

from typing import Any

from dialplans.definition import DEFAULT_PATH, load_definition
from ivr.model import Collect, Flow, Hangup, Hours, Lookup, Menu, Play, QueueRoute, Route, Rule
from ivr.testcall.generator import generate, menu_choices
from ivr.testcall.scenario import Step, load_scenario


def test_default_hotline_every_menu_choice_has_a_scenario() -> None:
    defn = load_definition(DEFAULT_PATH)
    gen = generate(defn.flow, defn.numbers[0])
    assert gen.menu_choices() == menu_choices(defn.flow)
    assert menu_choices(defn.flow) == {("main", d) for d in defn.flow.nodes["main"].choices}  # type: ignore[union-attr]
    repair = next(s for s in gen.scenarios if s.path == ("main:1",))
    assert [s.kind for s in repair.steps] == ["expect_prompt", "expect_prompt", "press", "expect_prompt",
                                              "wait_agent", "stay", "hangup"]
    assert repair.prompts == ["welcome", "menu", "connecting"]
    assert "hours:open" in repair.assumes
    # Rules that depend on caller data or queue state are listed, not silently dropped.
    assert any(k.node == "operator" and "open-repair" in k.reason for k in gen.skipped)
    for s in gen.scenarios:
        assert load_scenario(s.name, text=s.to_yaml(), prompt_ids=set(defn.prompts)).steps == s.steps


def _flow() -> Flow:
    nodes: dict[str, Any] = {
        "open": Hours("open", calendar=None, open="lookup", closed="bye"),  # type: ignore[arg-type]
        "lookup": Lookup("lookup", next="main"),
        "main": Menu("main", ("hello",), {"1": "sub", "2": "account", "9": "main", "0": "route"}),
        "sub": Menu("sub", ("submenu",), {"1": "q1", "2": "info"}),
        "info": Play("info", ("facts",), next="bye"),
        "account": Collect("account", ("enter",), variable="ACCOUNT", next="q1", on_failure="bye", min_digits=4),
        "route": Route("route", rules=(Rule("vip", (), goto="q1"),), default="q1"),
        "q1": QueueRoute("q1", "repair", ("wait",)),
        "bye": Hangup("bye", ("goodbye",)),
    }
    return Flow(start="open", nodes=nodes)


def test_nested_menus_loops_collect_and_hours() -> None:
    gen = generate(_flow(), "4000")
    paths = {s.path: s for s in gen.scenarios}
    assert set(paths) == {("main:1", "sub:1"), ("main:1", "sub:2"), ("main:2",), ("main:0",), ()}
    # Every digit of every menu is pressed somewhere; the loop back (9) is reported.
    assert gen.menu_choices() | {("main", "9")} == menu_choices(_flow())
    assert any(k.path == ("main:9",) and "loops back" in k.reason for k in gen.skipped)
    collect = paths[("main:2",)]
    assert Step("press", digits="1111#") in collect.steps and "collect:ACCOUNT=1111" in collect.assumes
    info = paths[("main:1", "sub:2")]
    assert info.prompts == ["hello", "submenu", "facts", "goodbye"] and info.steps[-1].kind == "expect_hangup"
    closed = paths[()]
    assert closed.assumes == ("hours:closed",) and closed.name == "path-direct-closed"
    assert any(k.node == "route" and "rule vip" in k.reason for k in gen.skipped)


def test_unknown_node_types_are_skipped_with_a_reason() -> None:
    class Survey:  # a node type added later that the generator does not know
        id = "survey"

    flow = Flow(start="main", nodes={"main": Menu("main", ("m",), {"1": "survey"}),
                                     "survey": Survey()})  # type: ignore[dict-item]
    gen = generate(flow, "4000")
    assert gen.scenarios == []
    assert gen.skipped[0].node == "survey" and "Survey is not known" in gen.skipped[0].reason
