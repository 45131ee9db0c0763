"""The editing lifecycle against a real Asterisk: reject, publish, roll back, draft, with real calls.

These tests run their own sandbox instance and service (port offset of the session
sandbox + 1000; the throwaway validation Asterisk at + 2000), so publishing never
changes the shared sandbox other tests call into.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from dialplans import configdir
from dialplans.compiler import AsteriskSettings, CompiledHotline, compile_hotline
from dialplans.definition import DEFAULT_PATH, HotlineDefinition
from hotline.dialplan_check import loaded_problems
from hotline.dialplan_publish import DialplanPublisher
from hotline.sandbox import Sandbox
from hotline.service import HotlineService
from tests.conftest import CACHE, PORT_OFFSET
from tests.support.calls import PhoneFactory, carrier_headers, hotline_uri, wait_for
from tests.support.publishing import publishing_service

pytestmark = pytest.mark.asterisk

ORIGINAL = DEFAULT_PATH.read_text(encoding="utf-8")
TEST_CALLER = "13500135000"
OTHER_CALLER = "13800138000"
WORKDAY = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)  # Wednesday 11:00 in Shanghai


def with_billing(text: str) -> str:
    """The good edit: menu key 4 goes to a new billing queue answered by agent 1003."""
    assert '        "0": operator\n' in text
    text = text.replace('        "0": operator\n', '        "0": operator\n        "4": billing\n', 1)
    text = text.replace("ivr:\n", "  billing:\n    name: 账务\n    members: [\"1003\"]\n\nivr:\n", 1)
    return text + "    billing:      { type: queue, queue: billing, prompts: [connecting] }\n"


@dataclass
class Live:
    sandbox: Sandbox
    service: HotlineService
    server: TestServer
    publisher: DialplanPublisher
    admin: str
    supervisor: str

    @property
    def link(self) -> Path:
        return self.sandbox.host(self.sandbox.etc)

    def fingerprint(self) -> dict[str, str]:
        return configdir.fingerprint(self.link)

    async def post(self, path: str, token: str | None = None, **kwargs: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token or self.admin}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.post(self.server.make_url(path), **kwargs) as resp:
                return resp.status, await resp.json()

    async def get(self, path: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.admin}"}) as http:
            async with http.get(self.server.make_url(path)) as resp:
                return resp.status, await resp.json()


@pytest.fixture(scope="module")
async def live(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Live]:
    async with publishing_service(tmp_path_factory.mktemp("publish"), f"pub-{os.getpid()}", PORT_OFFSET + 1000,
                                  PORT_OFFSET + 2000, ORIGINAL, lambda: WORKDAY, CACHE) as stack:
        service = stack.service
        yield Live(stack.sandbox, service, stack.server, stack.publisher, service.tokens.issue("pub-admin", "admin"),
                   service.tokens.issue("pub-supervisor", "supervisor"))


async def restore_original(live: Live) -> None:
    """Each test starts from the original definition being live (and recorded as a version)."""
    await asyncio.to_thread(live.publisher.ensure_adopted)
    if live.publisher.live.text != ORIGINAL or live.publisher.draft is not None:
        await live.publisher.publish(ORIGINAL, author="test", reason="reset")


def _grew(counter: Any, key: str, before: int) -> bool:
    return bool(counter[key] > before)


async def caller_reaches(live: Live, phones: PhoneFactory, number: str, keys: list[str],
                         in_menu: Callable[[], Awaitable[Any]] | None = None) -> str:
    """A real pjsua2 caller dials the hotline and presses `keys`; returns the queue it joined.

    Every key but the last is expected to be invalid in the menu (the IVR counts it); the
    last one must route the call into a queue. A key that lands while a prompt without
    escape digits plays (invalid, timeout) is dropped, so each key is pressed again every
    2 s until its effect shows. `in_menu` runs once the caller is in the menu, before any key.
    """
    stats = live.service.node_stats
    events: list[Any] = []
    unsubscribe = live.service.subscribe(events.append)
    entries = stats.entries["main"]
    phone = await phones(f"caller{number}", username=number)
    try:
        call = await phone.call(hotline_uri(live.sandbox), headers=carrier_headers())
        await call.wait_state("CONFIRMED", timeout=10)
        started = await wait_for(lambda: next((e for e in events if e.kind == "call_started"
                                               and e.call.get("caller_num") == number), None), 10, "call_started")
        # MixMonitor runs right before AGI: then the IVR enters the menu.
        await wait_for(lambda: any(e.kind == "recording_started" and e.linkedid == started.linkedid
                                   for e in events), 10, "the recording (AGI next)")
        await wait_for(lambda: stats.entries["main"] > entries, 10, "the menu")

        def joined() -> Any:
            return next((e for e in events if e.linkedid == started.linkedid and e.kind == "queue_joined"), None)

        if in_menu is not None:
            await in_menu()
        for i, key in enumerate(keys):
            last = i == len(keys) - 1
            effect = joined if last else partial(_grew, stats.invalid, "main", stats.invalid["main"])
            for _attempt in range(10):
                await call.send_dtmf(key)
                try:
                    await wait_for(effect, 2.0, f"the effect of key {key}")
                    break
                except AssertionError:
                    continue
            else:
                raise AssertionError(f"caller {number}: key {key} of {keys} had no effect")
        event = joined()
        await call.hangup()
        return str(event.call.get("queue"))
    finally:
        unsubscribe()


# -- broken edits ------------------------------------------------------------------------------
def _hostile_compiler(defn: HotlineDefinition, settings: AsteriskSettings) -> CompiledHotline:
    """A compiler hook whose output has one broken generated line (a priority that is no number)."""
    compiled = compile_hotline(defn, settings)
    files = dict(compiled.files)
    assert "exten => queue-repair,1," in files["extensions.conf"]
    files["extensions.conf"] = files["extensions.conf"].replace("exten => queue-repair,1,", "exten => queue-repair,x,")
    return replace(compiled, files=files)


@pytest.mark.parametrize("edit", ["missing-node", "missing-prompt-file", "generated-syntax-error"])
async def test_broken_edit_is_rejected_and_live_config_is_unchanged(live: Live, edit: str) -> None:
    await restore_original(live)
    before = live.fingerprint()
    old_files = {p.name: p.read_text() for p in live.link.iterdir()}
    history_before = len(live.publisher.history(1000))
    text = ORIGINAL
    if edit == "missing-node":
        text = ORIGINAL.replace('"3": complaint', '"3": complaints')
        expect = "goes to node 'complaints', which does not exist"
    elif edit == "missing-prompt-file":
        text = ORIGINAL.replace("    text: 正在为您转接，请稍候。", "    file: recorded/connecting.wav")
        expect = "sound file 'recorded/connecting.wav' does not exist"
    else:
        text = with_billing(ORIGINAL)
        live.publisher.compile_fn = _hostile_compiler
        expect = "Invalid priority/label 'x'"
    try:
        status, body = await live.post("/dialplan/publish", json={"definition": text, "reason": edit})
    finally:
        live.publisher.compile_fn = compile_hotline
    assert status == 422, body
    assert body["error_id"] == "invalid-definition" and expect in body["message"], body["message"]
    errors = body["details"]["errors"]
    if edit == "missing-node":
        line = next(n for n, t in enumerate(text.splitlines(), 1) if '"3": complaints' in t)
        assert errors[0]["line"] == line and errors[0]["where"] == "ivr.nodes.main"
    elif edit == "generated-syntax-error":
        # Caught by the throwaway Asterisk: its log and the loaded dialplan both say so.
        assert {e["check"] for e in errors} == {"sandbox-load"}
        assert any("queue-repair: 2 priorities written, Asterisk loaded 1" in e["message"] for e in errors)
    assert live.fingerprint() == before  # byte for byte
    assert await loaded_problems(live.service.ami, old_files) == []
    history = live.publisher.history(1000)
    assert len(history) == history_before + 1 and history[0].status == "rejected" and history[0].reason == edit


async def test_failure_after_apply_rolls_back_byte_for_byte(live: Live) -> None:
    """Skip the sandbox check so the broken line reaches the live Asterisk: the reload check
    catches it, the previous generation is swapped back and reloaded."""
    await restore_original(live)
    before = live.fingerprint()
    old_files = {p.name: p.read_text() for p in live.link.iterdir()}
    flow = live.service.flow
    check, live.publisher.check = live.publisher.check, None
    live.publisher.compile_fn = _hostile_compiler
    try:
        status, body = await live.post("/dialplan/publish", json={"definition": with_billing(ORIGINAL)})
    finally:
        live.publisher.check = check
        live.publisher.compile_fn = compile_hotline
    assert status == 409 and body["error_id"] == "publish-failed", body
    assert body["details"]["step"] == "reload" and "queue-repair: 2 priorities written" in body["message"]
    assert live.fingerprint() == before
    assert await loaded_problems(live.service.ami, old_files) == []
    assert live.service.flow is flow
    failed = live.publisher.history(1)[0]
    assert failed.status == "failed"
    steps = {s["step"]: s for s in failed.log}
    assert steps["restored"]["ok"] is True and steps["restore-reload"]["ok"] is True


def _misrouting_compiler(defn: HotlineDefinition, settings: AsteriskSettings) -> CompiledHotline:
    """A compiler hook whose dialplan is well-formed but sends the billing route to the repair queue."""
    compiled = compile_hotline(defn, settings)
    files = dict(compiled.files)
    if "exten => queue-billing,1,Queue(billing," in files["extensions.conf"]:
        files["extensions.conf"] = files["extensions.conf"].replace(
            "exten => queue-billing,1,Queue(billing,", "exten => queue-billing,1,Queue(repair,")
    return replace(compiled, files=files)


async def test_smoke_call_catches_a_wrong_route_and_rolls_back(live: Live) -> None:
    """The config loads cleanly (the sandbox and the reload checks pass), but the smoke call
    along the new menu key lands in the wrong queue: the publish is rolled back."""
    await restore_original(live)
    before = live.fingerprint()
    flow = live.service.flow
    live.publisher.compile_fn = _misrouting_compiler
    try:
        status, body = await live.post("/dialplan/publish", json={"definition": with_billing(ORIGINAL)})
    finally:
        live.publisher.compile_fn = compile_hotline
    assert status == 409 and body["details"]["step"] == "smoke", body
    assert "the dialplan put the call in queue repair, the IVR chose billing" in body["message"]
    assert live.fingerprint() == before and live.service.flow is flow
    failed = live.publisher.history(1)[0]
    steps = [s["step"] for s in failed.log]
    assert steps[:5] == ["validate", "render-prompts", "write", "reload", "switch-flow"], steps
    assert "smoke" in steps and steps[-2:] == ["restore-reload", "restored"]
    assert failed.log[-1]["ok"] is True


# -- good edit, rollback ------------------------------------------------------------------------
@pytest.mark.timeout(300)  # several publishes and real calls on a shared 2-core machine
async def test_publish_then_rollback_with_real_calls(live: Live, phones: PhoneFactory) -> None:
    await restore_original(live)
    original = live.fingerprint()
    status, body = await live.post("/dialplan/publish", live.supervisor, json={"definition": with_billing(ORIGINAL)})
    assert status == 403 and body["error_id"] == "forbidden"

    status, body = await live.post("/dialplan/diff", data=with_billing(ORIGINAL).encode(),
                                   headers={"Content-Type": "text/yaml"})
    assert status == 200 and '+        "4": billing' in body["diff"]

    status, body = await live.post("/dialplan/publish", json={"definition": with_billing(ORIGINAL),
                                                               "reason": "billing line"})
    assert status == 200, body
    published = body["version"]
    assert published["status"] == "live" and published["author"] == "pub-admin"
    smoke = [s for s in body["steps"] if s["step"] == "smoke"]
    assert smoke and all(s["ok"] for s in smoke), smoke
    assert any(s["digits"] == "4" and s.get("queue_joined") == "billing" for s in smoke), smoke
    assert live.fingerprint() != original
    assert "billing" in live.sandbox.host(live.sandbox.etc).joinpath("queues.conf").read_text()

    # A real caller pressing 4 now reaches the new billing queue.
    assert await caller_reaches(live, phones, OTHER_CALLER, ["4"]) == "billing"

    status, body = await live.post("/dialplan/rollback", json={"reason": "billing not staffed yet"})
    assert status == 200, body
    assert body["version"]["kind"] == "rollback" and body["version"]["status"] == "live"
    assert live.fingerprint() == original  # the previous version's files, byte for byte
    assert live.publisher.live.text == ORIGINAL
    # A real call proves it: 4 is no choice any more (invalid, menu again), 3 reaches complaints.
    invalid = live.service.node_stats.invalid["main"]
    assert await caller_reaches(live, phones, OTHER_CALLER, ["4", "3"]) == "complaint"
    assert live.service.node_stats.invalid["main"] > invalid

    status, body = await live.get("/dialplan/history")
    kinds = [(v["kind"], v["status"]) for v in body["versions"][:2]]
    assert kinds == [("rollback", "live"), ("publish", "superseded")], kinds
    status, full = await live.get(f"/dialplan/versions/{published['id']}")
    assert status == 200 and '+        "4": billing' in full["diff"] and full["definition"] == with_billing(ORIGINAL)

    # Nothing to apply: clear 404s, and the live files stay as they are.
    status, body = await live.post("/dialplan/rollback", json={"version": 999_999})
    assert (status, body["error_id"]) == (404, "version-not-found"), body
    status, body = await live.post("/dialplan/promote", json={"reason": "no draft published"})
    assert (status, body["error_id"]) == (404, "no-draft"), body
    assert live.fingerprint() == original


async def test_call_in_progress_keeps_its_flow(live: Live, phones: PhoneFactory) -> None:
    """A caller already in the menu when the billing line is published stays on the old flow."""
    await restore_original(live)
    published: list[Any] = []

    async def publish_now() -> None:
        published.append(await live.post("/dialplan/publish", json={"definition": with_billing(ORIGINAL)}))

    assert await caller_reaches(live, phones, OTHER_CALLER, ["4", "3"], in_menu=publish_now) == "complaint"
    assert published[0][0] == 200 and published[0][1]["version"]["status"] == "live"
    assert await caller_reaches(live, phones, OTHER_CALLER, ["4"]) == "billing"  # a new call: the new flow


# -- draft mode ---------------------------------------------------------------------------------
@pytest.mark.timeout(300)  # several publishes and real calls on a shared 2-core machine
async def test_draft_reaches_only_test_callers(live: Live, phones: PhoneFactory) -> None:
    await restore_original(live)
    status, body = await live.post("/dialplan/publish", json={
        "definition": with_billing(ORIGINAL), "draft": True, "test_callers": [TEST_CALLER], "reason": "try billing"})
    assert status == 200, body
    assert body["version"]["status"] == "draft" and body["version"]["test_callers"] == [TEST_CALLER]
    assert live.publisher.live.text == ORIGINAL

    # Two real callers at once: the test caller's 4 reaches billing; everyone else's 4 is
    # invalid in the live menu, and their 3 still reaches complaints.
    test_queue, other_queue = await asyncio.gather(
        caller_reaches(live, phones, TEST_CALLER, ["4"]),
        caller_reaches(live, phones, OTHER_CALLER, ["4", "3"]),
    )
    assert (test_queue, other_queue) == ("billing", "complaint")

    status, body = await live.post("/dialplan/promote", json={"reason": "billing is staffed"})
    assert status == 200, body
    assert body["version"]["kind"] == "promote" and body["version"]["status"] == "live"
    assert live.publisher.draft is None and live.service.draft_runner is None
    assert await caller_reaches(live, phones, OTHER_CALLER, ["4"]) == "billing"


# -- the CLI and the validate endpoint -----------------------------------------------------------
async def test_validate_endpoint_and_cli(live: Live, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from hotline.cli import main

    await restore_original(live)
    original = live.fingerprint()
    broken = ORIGINAL.replace('"3": complaint', '"3": complaints')
    status, body = await live.post("/dialplan/validate", data=broken.encode(), headers={"Content-Type": "text/yaml"})
    assert status == 200 and body["ok"] is False and "complaints" in body["errors"][0]["message"]
    status, body = await live.post("/dialplan/validate", json={"definition": with_billing(ORIGINAL)})
    assert status == 200 and body["ok"] is True, body
    assert body["sandbox"]["checked"] == ["boot", "dialplan", "endpoints", "queues", "applications", "log"]

    monkeypatch.setenv("HOTLINE_DATA_DIR", str(live.service.settings.data_dir))
    monkeypatch.setenv("HOTLINE_DEFINITION", str(live.service.settings.definition))
    bad_file, good_file = tmp_path / "bad.yaml", tmp_path / "good.yaml"
    bad_file.write_text(broken, encoding="utf-8")
    good_file.write_text(with_billing(ORIGINAL), encoding="utf-8")
    remote = ["--url", str(live.server.make_url("")), "--token", live.admin]

    assert await asyncio.to_thread(main, ["dialplan", "validate", str(bad_file), "--no-sandbox"]) == 1
    line = next(n for n, t in enumerate(broken.splitlines(), 1) if '"3": complaints' in t)
    assert f"line {line}: ivr.nodes.main: goes to node 'complaints'" in capsys.readouterr().out

    assert await asyncio.to_thread(main, ["dialplan", "publish", str(bad_file), *remote]) == 1
    assert "invalid-definition" in capsys.readouterr().err
    assert live.fingerprint() == original

    assert await asyncio.to_thread(main, ["dialplan", "diff", str(good_file)]) == 0
    assert '+        "4": billing' in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["dialplan", "publish", str(good_file), "--reason", "cli", *remote]) == 0
    published = json.loads(capsys.readouterr().out)["version"]
    assert published["status"] == "live" and published["reason"] == "cli"
    assert live.service.settings.definition.read_text(encoding="utf-8") == with_billing(ORIGINAL)

    adopted = next(v for v in live.publisher.history(1000) if v.kind == "adopt")
    assert await asyncio.to_thread(main, ["dialplan", "rollback", "--version", str(adopted.id), *remote]) == 0
    assert json.loads(capsys.readouterr().out)["version"]["reason"] == f"rollback to version {adopted.id}"
    assert live.fingerprint() == original

    assert await asyncio.to_thread(main, ["dialplan", "history", "--limit", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "live" in lines[0] and "rollback" in lines[0] and "superseded" in lines[1] and "cli" in lines[1]


# -- the version table on PostgreSQL -------------------------------------------------------------
@pytest.mark.postgres
def test_version_store_postgres() -> None:
    from tests.support.postgres import postgres_server
    from tests.unit.test_dialplan_validate import exercise_version_store

    with postgres_server() as url:
        exercise_version_store(url)
