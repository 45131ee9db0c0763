"""Every validate check on one broken definition each: the message names the node and the line."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from dialplans.compiler import AsteriskSettings, CompiledHotline, compile_hotline
from dialplans.definition import DEFAULT_PATH, HotlineDefinition
from dialplans.validate import Finding, validate_text

BASE = """\
version: 1
hotline:
  numbers: ["4000"]
  failsafe_queue: operator
  failsafe_prompt: sorry
prompts:
  welcome: {text: hello}
  sorry: {text: sorry}
agents:
  "1001": {name: Li}
queues:
  repair: {members: ["1001"]}
  operator: {members: ["1001"]}
ivr:
  start: main
  nodes:
    main:
      type: menu
      prompts: [welcome]
      choices:
        "1": repair
        "0": operator
      on_exhausted: operator
    repair: {type: queue, queue: repair}
    operator: {type: queue, queue: operator}
"""


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing `needle`."""
    for n, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return n
    raise AssertionError(f"{needle!r} not in text")


def only(findings: list[Finding], check: str) -> Finding:
    matching = [f for f in findings if f.check == check]
    assert len(matching) == 1, findings
    return matching[0]


def test_base_and_default_hotline_are_valid() -> None:
    assert validate_text(BASE).ok, validate_text(BASE).text()
    report = validate_text(DEFAULT_PATH.read_text(encoding="utf-8"), prompts_dir=DEFAULT_PATH.parent)
    assert report.ok, report.text()
    assert report.compiled is not None and "extensions.conf" in report.compiled.files


def test_schema_error_keeps_the_file_position() -> None:
    text = BASE.replace('"1": repair', '"1": repairs')
    report = validate_text(text)
    assert not report.ok
    finding = only(report.errors, "schema")
    assert finding.line == line_of(text, '"1": repairs')
    assert "repairs" in finding.message and finding.where == "ivr.nodes.main"


def test_unreachable_node() -> None:
    text = BASE + "    orphan: {type: hangup}\n"
    finding = only(validate_text(text).errors, "unreachable")
    assert finding.where == "ivr.nodes.orphan" and finding.line == line_of(text, "orphan:")
    assert "'orphan' cannot be reached from the start node 'main'" in finding.message


def test_dead_end_menu_without_exhausted_target() -> None:
    text = BASE.replace("on_exhausted: operator", 'on_exhausted: ""')
    finding = only(validate_text(text).errors, "dead-end")
    assert finding.where == "ivr.nodes.main" and finding.line == line_of(text, 'on_exhausted: ""')
    assert "after the last retry the caller goes nowhere" in finding.message


def test_dead_end_play_going_nowhere() -> None:
    text = BASE.replace('"0": operator', '"0": notice') + '    notice: {type: play, prompts: [welcome], next: ""}\n'
    finding = only(validate_text(text).errors, "dead-end")
    assert finding.where == "ivr.nodes.notice" and finding.line == line_of(text, "notice: {type: play")
    assert "'notice' is a dead end" in finding.message


def test_loop_with_no_exit() -> None:
    text = BASE.replace('"0": operator', '"0": ping') + (
        "    ping: {type: play, prompts: [welcome], next: pong}\n"
        "    pong: {type: play, prompts: [welcome], next: ping}\n")
    finding = only(validate_text(text).errors, "loop-no-exit")
    assert finding.where == "ivr.nodes.ping" and finding.line == line_of(text, "ping: {type")
    assert "ping -> pong -> ping" in finding.message


def test_menu_loop_with_an_exit_is_fine() -> None:
    text = BASE.replace('"0": operator', '"0": operator\n        "9": main')
    assert validate_text(text).ok


def test_missing_sound_file(tmp_path: Path) -> None:
    (tmp_path / "welcome.wav").write_bytes(b"RIFF")
    text = BASE.replace("welcome: {text: hello}", "welcome: {file: welcome.wav}").replace(
        "sorry: {text: sorry}", "sorry: {file: recorded/sorry.wav}")
    finding = only(validate_text(text, prompts_dir=tmp_path).errors, "missing-sound")
    assert finding.where == "prompts.sorry" and finding.line == line_of(text, "recorded/sorry.wav")
    assert "'recorded/sorry.wav' does not exist" in finding.message


def test_duplicate_digit_names_the_menu_and_both_lines() -> None:
    text = BASE.replace('"0": operator', '"0": operator\n        1: operator')
    report = validate_text(text)
    finding = only(report.errors, "duplicate-digit")
    first, again = line_of(text, '"1": repair'), line_of(text, "1: operator")
    assert finding.where == "ivr.nodes.main.choices" and finding.line == again
    assert f"digit '1' is given twice (lines {first} and {again})" in finding.message
    assert not report.ok and len(report.errors) == 1  # the loader's own copy is not repeated


def test_duplicate_yaml_key_anywhere() -> None:
    text = BASE.replace("  repair: {members: [\"1001\"]}", "  repair: {members: [\"1001\"]}\n  repair: {}")
    finding = only(validate_text(text).errors, "duplicate-key")
    assert finding.where == "queues" and finding.line == line_of(text, "  repair: {}")
    assert "key 'repair' is given twice" in finding.message


def test_queue_without_members() -> None:
    text = BASE.replace('repair: {members: ["1001"]}', "repair: {members: []}")
    finding = only(validate_text(text).errors, "queue-no-members")
    assert finding.where == "queues.repair" and finding.line == line_of(text, "repair: {members: []}")
    assert "queue 'repair' has no members" in finding.message


def test_compile_failure_is_reported() -> None:
    def hostile(defn: HotlineDefinition, settings: AsteriskSettings) -> CompiledHotline:
        from dataclasses import replace

        return compile_hotline(defn, replace(settings, ami_bind="127.0.0.1; evil"))

    report = validate_text(BASE, compile_fn=hostile)
    finding = only(report.errors, "compile")
    assert "not a safe identifier" in finding.message and not report.ok


def test_not_yaml_at_all() -> None:
    report = validate_text("version: 1\nhotline: [unclosed\n")
    assert not report.ok
    assert report.errors[0].check == "schema" and report.errors[0].line is not None


@pytest.mark.parametrize("check", ["unreachable", "dead-end", "loop-no-exit", "duplicate-digit", "queue-no-members"])
def test_text_report_names_the_check(check: str) -> None:
    broken = {
        "unreachable": BASE + "    orphan: {type: hangup}\n",
        "dead-end": BASE.replace("on_exhausted: operator", 'on_exhausted: ""'),
        "loop-no-exit": BASE.replace('"0": operator', '"0": a') + "    a: {type: play, prompts: [], next: a}\n",
        "duplicate-digit": BASE.replace('"0": operator', '"0": operator\n        "0": repair'),
        "queue-no-members": BASE.replace('repair: {members: ["1001"]}', "repair: {members: []}"),
    }[check]
    text = validate_text(broken).text()
    assert text.startswith("invalid hotline definition:") and f"[{check}]" in text and "line " in text


# -- atomic config generations (dialplans.configdir) ------------------------------------------
def test_config_generations_swap_atomically_and_back(tmp_path: Path) -> None:
    from dialplans import configdir

    link = tmp_path / "etc" / "hotline"
    link.mkdir(parents=True)
    (link / "extensions.conf").write_text("old\n")
    configdir.adopt(link)  # a plain directory becomes generation 1 behind the link
    assert link.is_symlink() and (link / "extensions.conf").read_text() == "old\n"
    before = configdir.fingerprint(link)
    first = configdir.current_generation(link)

    new = configdir.write_generation(link, {"extensions.conf": "new\n", "queues.conf": "q\n"})
    assert configdir.fingerprint(link) == before  # written, not live yet
    assert configdir.activate(link, new) == first
    assert (link / "extensions.conf").read_text() == "new\n" and (link / "queues.conf").is_file()
    assert not os.path.isabs(os.readlink(link))  # relative: valid inside the chroot too

    assert first is not None
    configdir.activate(link, first)
    assert configdir.fingerprint(link) == before
    with pytest.raises(configdir.ConfigDirError):
        configdir.write_generation(link, {"../escape.conf": ""})


def test_prune_keeps_the_live_generation(tmp_path: Path) -> None:
    from dialplans import configdir

    link = tmp_path / "hotline"
    live = configdir.install(link, {"a.conf": "1\n"})
    for n in range(4):
        configdir.write_generation(link, {"a.conf": f"{n}\n"})
    configdir.prune(link, keep=2)
    kept = sorted(p.name for p in configdir.generations_dir(link).iterdir())
    assert live.name in kept and len(kept) == 3
    configdir.remove(link)
    assert not link.exists() and not configdir.generations_dir(link).exists()


# -- smoke-call planning (hotline.dialplan_publish) ---------------------------------------------
def test_smoke_plan_walks_the_changed_menu_choice() -> None:
    from dialplans.definition import load_definition
    from hotline.dialplan_publish import plan_smoke

    old = load_definition(BASE)
    new = load_definition(BASE.replace('"0": operator', '"0": operator\n        "4": billing')
                          + "    billing: {type: queue, queue: repair}\n")
    plans = plan_smoke(old.flow, new.flow, old, new)
    assert [(p.digits, p.nodes, p.expect) for p in plans] == [(("4",), ("main", "billing"), "billing")]
    # Nothing changed: one call along the shortest keyed path to a route.
    same = plan_smoke(old.flow, old.flow, old, old)
    assert len(same) == 1 and same[0].digits == ("1",) and same[0].expect == "repair"


# -- the version store (hotline.dialplan_versions), SQLite here, PostgreSQL in integration ------
def exercise_version_store(url: str) -> None:
    """Every version kept with author, reason, diff; exactly one live; drafts retired."""
    from cti.db import create_schema, make_engine, session_factory
    from hotline import dialplan_versions as dv

    engine = make_engine(url)
    create_schema(engine)
    try:
        store = dv.VersionStore(session_factory(engine))
        first = store.add(author="system", reason="adopt", kind="adopt", status="applying", definition=BASE,
                          diff="", base_version=None)
        store.make_live(first.id)
        edit = BASE.replace("hello", "您好")
        second = store.add(author="李娜", reason="问候语", kind="publish", status="applying", definition=edit,
                           diff=dv.unified_diff(BASE, edit), base_version=first.id)
        store.make_live(second.id)
        draft = store.add(author="李娜", reason="try", kind="draft", status=dv.DRAFT, definition=edit, diff="",
                          base_version=second.id, test_callers=("13500135000",))
        rejected = store.add(author="x", reason="bad", kind="publish", status=dv.REJECTED, definition="x", diff="",
                             base_version=second.id, error=[{"check": "schema", "line": 3}])
        live = store.live()
        assert live is not None and live.id == second.id and live.author == "李娜"
        assert "+  welcome: {text: 您好}" in live.diff and live.sha256 == dv.sha256(edit)
        previous = store.previous_live(second.id)
        assert previous is not None and previous.id == first.id and previous.status == dv.SUPERSEDED
        current_draft = store.draft()
        assert current_draft is not None and current_draft.test_callers == ("13500135000",)
        store.retire_drafts()
        assert store.draft() is None and store.get(draft.id).status == dv.DRAFT_RETIRED  # type: ignore[union-attr]
        assert [v.id for v in store.history()] == [rejected.id, draft.id, second.id, first.id]
        assert store.get(rejected.id).error == [{"check": "schema", "line": 3}]  # type: ignore[union-attr]
    finally:
        engine.dispose()


def test_version_store_sqlite(tmp_path: Path) -> None:
    exercise_version_store(f"sqlite:///{tmp_path / 'versions.sqlite3'}")


# -- the smoke-call channel wrapper (hotline.smoke) ----------------------------------------------
class _LoopbackChannel:
    """An AGI channel whose caller 'presses' exactly the keys the smoke driver sends."""

    def __init__(self) -> None:
        self.keys: asyncio.Queue[str] = asyncio.Queue()
        self.variables: dict[str, str] = {"HOTLINE_SMOKE": "tok"}
        self.hung_up = False
        self.env = type("Env", (), {"channel": "Local/s@hotline-00000001;2", "caller_id_num": "hotline-smoke"})()

    async def get_variable(self, name: str) -> str | None:
        return self.variables.get(name)

    async def stream_file(self, name: str, escape_digits: str = "") -> str | None:
        if not escape_digits:
            return None
        try:
            return await asyncio.wait_for(self.keys.get(), 2)
        except TimeoutError:
            return None

    async def wait_for_digit(self, timeout_ms: int) -> str | None:
        return await self.stream_file("", "0123456789")

    async def set_variable(self, name: str, value: str) -> None:
        self.variables[name] = value

    async def hangup(self) -> None:
        self.hung_up = True


@pytest.mark.parametrize(("action", "hung_up"), [("queue", False), ("transfer", True), ("voicemail", True)])
async def test_smoke_channel_presses_planned_keys_and_never_dials_out(action: str, hung_up: bool) -> None:
    from cti import channel_vars as cv
    from hotline.smoke import SmokeRegistry
    from ivr.model import Flow

    channel = _LoopbackChannel()
    pressed: list[tuple[str, str]] = []

    async def press(name: str, key: str) -> None:
        pressed.append((name, key))
        await channel.keys.put(key)

    registry = SmokeRegistry()
    registry.press_key = press
    run = registry.expect("tok", ("4", "2"))
    flow = Flow(start="main", nodes={})
    wrapped = await registry.attach(channel, flow)
    assert wrapped is not channel and run.flow is flow
    assert await wrapped.stream_file("welcome", "0123456789") == "4"
    assert await wrapped.stream_file("invalid") is None  # no escape digits: no key sent
    assert await wrapped.wait_for_digit(5000) == "2"
    assert run.pending == [] and [k for _, k in pressed] == ["4", "2"]
    assert pressed[0][0] == "Local/s@hotline-00000001;2"
    await wrapped.set_variable(cv.ACTION, action)
    assert run.decided.is_set() and channel.variables[cv.TEST_TAG] == "smoke-tok"
    assert channel.hung_up is hung_up
    # Any other call passes through untouched.
    other = _LoopbackChannel()
    other.variables = {}
    assert await registry.attach(other, flow) is other
