"""Definition parsing, the one escaping function, and golden config files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dialplans.compiler import MODULES, AsteriskSettings, compile_hotline
from dialplans.definition import DEFAULT_PATH, InvalidDefinition, load_definition
from dialplans.escaping import UnsafeValue, escape
from ivr.model import Menu, QueueRoute

GOLDEN = Path(__file__).parent.parent / "fixtures" / "golden"
SETTINGS = AsteriskSettings(
    ami_secret="golden-secret",
    agent_passwords={"1001": "pw1001", "1002": "pw1002", "1003": "pw1003", "1004": "pw1004"},
)


def test_default_definition_loads() -> None:
    defn = load_definition(DEFAULT_PATH)
    main = defn.flow.nodes["main"]
    assert isinstance(main, Menu)
    assert dict(main.choices) == {"1": "repair", "2": "installation", "3": "complaint", "0": "operator"}
    assert isinstance(defn.flow.nodes["repair"], QueueRoute)
    assert defn.queues["operator"].members == ("1001", "1002", "1003", "1004")
    assert defn.numbers == ("4000", "4008001234")


@pytest.mark.parametrize("name", sorted(compile_hotline(load_definition(DEFAULT_PATH), SETTINGS).files))
def test_golden_files(name: str) -> None:
    """Compiled config is byte-identical to the reviewed golden copy (UPDATE_GOLDEN=1 rewrites)."""
    text = compile_hotline(load_definition(DEFAULT_PATH), SETTINGS).files[name]
    golden = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")


def test_compile_is_deterministic_and_resolves_prompts() -> None:
    defn = load_definition(DEFAULT_PATH)
    a = compile_hotline(defn, SETTINGS)
    b = compile_hotline(defn, SETTINGS)
    assert a.files == b.files
    assert a.flow.sound("welcome") == "/var/lib/hotline/sounds/zh/welcome"
    assert len(MODULES) == len(set(MODULES))


def _broken(old: str, new: str) -> str:
    text = DEFAULT_PATH.read_text(encoding="utf-8")
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("old", "new", "message", "line_of"),
    [
        ('"1": repair', '"1": repairs', "goes to node 'repairs', which does not exist", '"1": repairs'),
        ("queue: complaint,", "queue: complain,", "queue 'complain' is not defined", "queue: complain,"),
        ("prompts: [welcome, menu]", "prompts: [welcome, menus]", "prompt 'menus' is not defined",
         "prompts: [welcome, menus]"),
        ('members: ["1001", "1002"]\n  installation', 'members: ["1001", "9999"]\n  installation',
         "member '9999' is not a defined agent", 'members: ["1001", "9999"]'),
        ('"0": operator', '"x": operator', "choice 'x' is not one DTMF digit", '"x": operator'),
        ("strategy: ringall", "strategy: ringsome", "strategy must be one of", "strategy: ringsome"),
    ],
)
def test_errors_name_the_line(old: str, new: str, message: str, line_of: str) -> None:
    text = _broken(old, new)
    with pytest.raises(InvalidDefinition) as info:
        load_definition(text)
    errors = info.value.errors
    assert any(message in e.message for e in errors), errors
    expected_line = next(i for i, line in enumerate(text.splitlines(), 1) if line_of in line)
    assert any(e.line == expected_line for e in errors if message in e.message), (errors, expected_line)


def test_yaml_syntax_error_has_position() -> None:
    with pytest.raises(InvalidDefinition) as info:
        load_definition("version: 1\nhotline: [unclosed\n")
    assert info.value.errors[0].line is not None
    assert info.value.errors[0].where == "yaml"


def test_duplicate_key_is_an_error() -> None:
    with pytest.raises(InvalidDefinition, match="duplicate key"):
        load_definition(_broken('"2": installation', '"1": installation'))


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\x00b"])
@pytest.mark.parametrize("position", ["identifier", "value", "quoted", "dialplan"])
def test_escape_refuses_line_breaks(bad: str, position: str) -> None:
    with pytest.raises(UnsafeValue):
        escape(bad, position)  # type: ignore[arg-type]


def test_escape_positions() -> None:
    assert escape("repair", "identifier") == "repair"
    with pytest.raises(UnsafeValue):
        escape("rep air", "identifier")
    with pytest.raises(UnsafeValue):
        escape("x;y", "identifier")
    assert escape("a;b", "value") == "a\\;b"
    assert escape('Li "Na"; \\', "quoted") == 'Li \\"Na\\"\\; \\\\'
    assert escape("a,b$x(y)", "dialplan") == "a\\,b\\$x\\(y\\)"


def test_hostile_display_name_cannot_break_pjsip_conf() -> None:
    text = _broken("name: 李娜", 'name: "Evil\\" ; [carrier]\\ntype = endpoint"')
    with pytest.raises((InvalidDefinition, UnsafeValue)):
        compile_hotline(load_definition(text), SETTINGS)
    text = _broken("name: 李娜", "name: 'Evil\" ; [carrier] type = endpoint'")
    conf = compile_hotline(load_definition(text), SETTINGS).files["pjsip.conf"]
    line = next(x for x in conf.splitlines() if x.startswith("callerid") and "<1001>" in x)
    assert line == 'callerid = "Evil\\" \\; [carrier] type = endpoint" <1001>'
    assert conf.count("[carrier]\n") == 2  # the two real carrier sections, nothing injected
