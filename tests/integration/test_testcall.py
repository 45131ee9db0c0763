"""QA test calls against the real sandbox hotline: pjsua2 test caller, real IVR, real
queue, auto-answering agent phones; prompts checked on what the caller heard."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from cti.db import CallRecord
from dialplans.definition import HotlineDefinition
from hotline.sandbox import Sandbox
from hotline.service import HotlineService
from ivr.testcall.generator import generate, menu_choices
from ivr.testcall.scenario import ScenarioError, load_scenario
from recordings.vad import analyze_wav
from tests.support.calls import PhoneFactory, agent_phone

pytestmark = pytest.mark.asterisk
SHANGHAI = ZoneInfo("Asia/Shanghai")
OPEN = datetime(2026, 11, 25, 10, 0, tzinfo=SHANGHAI)  # a Wednesday: open around the clock
CLOSED = datetime(2026, 10, 2, 10, 0, tzinfo=SHANGHAI)  # National Day holiday
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "testcall"


@pytest.fixture
def open_hours(service: HotlineService) -> Iterator[None]:
    before = service.runner.clock
    service.runner.clock = lambda: OPEN
    try:
        yield
    finally:
        service.runner.clock = before


def _scenario(service: HotlineService, text: str) -> Any:
    return service.testcalls.parse(text, "test")


REPAIR = """
name: repair-question
number: "4000"
caller_id: "13912345678"
thresholds: {{max_first_prompt: 5, max_queue_wait: 20, max_time_to_agent: 40}}
steps:
  - expect_prompt: welcome
  - expect_prompt: menu
  - press: "1"
  - expect_prompt: connecting
  - wait_agent: {{within: 20}}
  - play: {wav}
  - stay: 1
  - hangup
"""


async def test_scenario_passes_against_default_hotline(
    sandbox: Sandbox, service: HotlineService, service_server: TestServer, definition: HotlineDefinition,
    phones: PhoneFactory, speech_wav: Path, tokens: dict[str, str], open_hours: None, tmp_path: Path,
) -> None:
    agents = list(await asyncio.gather(*(agent_phone(phones, sandbox, definition, a, auto_answer=True)
                                        for a in ("1001", "1002"))))
    # API scenarios play WAVs from the test-call media folder only.
    media = service.testcalls.work_dir / "media"
    media.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(speech_wav, media / "question.wav")
    with pytest.raises(ScenarioError, match="must be inside the test-call media folder"):
        service.testcalls.parse(REPAIR.format(wav=speech_wav))
    text = REPAIR.format(wav="question.wav")
    result = await service.testcalls.run(_scenario(service, text), text, "pytest")

    assert result["passed"], result["failures"]
    prompts = [s for s in result["steps"] if s["kind"] == "expect_prompt"]
    assert [s["prompt"] for s in prompts] == ["welcome", "menu", "connecting"]
    assert all(s["ok"] and s["score"] >= 0.8 for s in prompts), prompts
    # The prompts were heard in order, one after the other.
    onsets = [s["onset_in_recording"] for s in prompts]
    assert onsets == sorted(onsets)
    tracker, measures, phone = result["tracker"], result["measures"], result["phone"]
    assert tracker["queue"] == "repair" and tracker["agent"] in ("1001", "1002")
    assert tracker["menu_choice"] == "1" and tracker["outcome"] == "answered"
    assert tracker["test_tag"] == result["run_id"]
    # Waits from AMI (tracker) agree with the phone's own view of the same call.
    assert 0 <= measures["queue_wait"] < 20
    assert 0 < measures["time_to_first_prompt"] < 5
    assert measures["time_to_agent"] > measures["queue_wait"]
    assert abs(measures["time_to_agent"] - phone["time_to_agent"]) < 1.0, (measures, phone)
    # The queue was joined after "connecting" began (its prompt plays before Queue()).
    connecting = prompts[2]
    assert measures["time_to_agent"] - measures["queue_wait"] >= connecting["heard_at"] - 0.5

    # The agent really heard the scripted question.
    answered = next(a for a in agents if a.name == f"agent{tracker['agent']}")
    assert answered.calls and answered.calls[-1].incoming

    # Stored: the result (REST, qa role), the heard audio, and the call flagged as a test call.
    await service.flush()
    with service.sessions() as session:
        record = session.get(CallRecord, tracker["linkedid"])
        assert record is not None and record.is_test_call is True and record.test_tag == result["run_id"]
    heard = Path(result["heard_audio"])
    assert analyze_wav(heard).has_speech
    if os.environ.get("HOTLINE_RECORD_FIXTURES") == "1":
        shutil.copyfile(heard, FIXTURES / "heard_repair.wav")
    headers = {"Authorization": f"Bearer {tokens['qa']}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(service_server.make_url(f"/testcalls/{result['run_id']}")) as resp:
            assert resp.status == 200
            stored = await resp.json()
        assert stored["status"] == "passed" and stored["linkedid"] == tracker["linkedid"]
        assert stored["result"]["measures"] == measures
        async with http.get(service_server.make_url(f"/testcalls/{result['run_id']}/audio")) as resp:
            assert resp.status == 200 and resp.content_type == "audio/wav"
            assert (await resp.read()) == await asyncio.to_thread(heard.read_bytes)
        # A QA reviewer scores the agent's handling, linked to the call.
        form = {"scores": {"greeting": 4, "solution": 3, "courtesy": 5}, "comment": "polite, slow to solve"}
        async with http.post(service_server.make_url(f"/testcalls/{result['run_id']}/reviews"), json=form) as resp:
            assert resp.status == 201
            review = await resp.json()
        assert review["total"] == 12 and review["linkedid"] == tracker["linkedid"] and review["reviewer"] == "test-qa"
        bad = {"scores": {"greeting": 9, "mood": 1}}
        async with http.post(service_server.make_url(f"/testcalls/{result['run_id']}/reviews"), json=bad) as resp:
            assert resp.status == 400
            assert len((await resp.json())["details"]["problems"]) == 2
    # Agents may not see test-call results.
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {tokens['agent1001']}"}) as http:
        async with http.get(service_server.make_url(f"/testcalls/{result['run_id']}")) as resp:
            assert resp.status == 403


async def test_swapped_prompt_fails_with_clear_reason(
    sandbox: Sandbox, service: HotlineService, open_hours: None,
) -> None:
    """The sandbox plays the menu where the welcome belongs: the test call must fail on it."""
    welcome = sandbox.sounds_dir / "zh" / "welcome.wav"
    saved = welcome.read_bytes()
    shutil.copyfile(sandbox.sounds_dir / "zh" / "menu.wav", welcome)
    try:
        text = ('name: swapped\nnumber: "4000"\nsteps:\n  - expect_prompt: {prompt: welcome, within: 3}\n'
                '  - expect_prompt: menu\n  - hangup\n')
        result = await service.testcalls.run(_scenario(service, text), text, "pytest")
    finally:
        welcome.write_bytes(saved)
    assert not result["passed"]
    first, second = result["steps"][0], result["steps"][1]
    assert first["ok"] is False and first["score"] < 0.5, first
    assert "prompt welcome not heard" in first["detail"] and "wrong or missing prompt" in first["detail"]
    assert any("step 0 (expect_prompt): prompt welcome not heard" in f for f in result["failures"])
    # What did play (the menu, twice) is still recognised: the check is specific, not blind.
    assert second["ok"] is True and second["score"] >= 0.8


async def test_no_agent_in_time_fails_with_clear_reason(
    sandbox: Sandbox, service: HotlineService, definition: HotlineDefinition, phones: PhoneFactory,
    open_hours: None,
) -> None:
    # Agents are logged in (so no overflow rule fires) but nobody picks up.
    await asyncio.gather(*(agent_phone(phones, sandbox, definition, a) for a in ("1001", "1002")))
    text = ('name: slow-agents\nnumber: "4000"\nsteps:\n  - expect_prompt: welcome\n  - expect_prompt: menu\n'
            '  - press: "2"\n  - expect_prompt: connecting\n  - wait_agent: {within: 4}\n  - hangup\n')
    result = await service.testcalls.run(_scenario(service, text), text, "pytest")
    assert not result["passed"]
    wait = next(s for s in result["steps"] if s["kind"] == "wait_agent")
    assert wait["ok"] is False and wait["detail"] == "no agent answered within 4 s (queue installation)"
    assert result["tracker"]["queue"] == "installation" and result["tracker"]["agent"] is None
    assert result["tracker"]["outcome"] != "answered"


async def test_generated_scenarios_cover_every_menu_path(
    sandbox: Sandbox, service: HotlineService, definition: HotlineDefinition, phones: PhoneFactory,
    open_hours: None,
) -> None:
    flow = service.flow
    generated = generate(flow, definition.numbers[0], agent_within=40)
    assert generated.menu_choices() == menu_choices(flow) == {("main", d) for d in "0123"}
    # Every generated file reads back as the same scenario.
    for s in generated.scenarios:
        again = load_scenario(s.name, text=s.to_yaml(), prompt_ids=set(flow.prompts))
        assert again.steps == s.steps and again.path == s.path
    await asyncio.gather(*(agent_phone(phones, sandbox, definition, a, auto_answer=True)
                           for a in ("1001", "1002", "1003", "1004")))
    open_paths = [s for s in generated.scenarios if "hours:closed" not in s.assumes]
    results = await asyncio.gather(*(service.testcalls.run(s, s.to_yaml(), "pytest") for s in open_paths))
    for scenario, result in zip(open_paths, results, strict=True):
        assert result["passed"], (scenario.name, result["failures"])
    queues = {r["scenario"]: r["tracker"]["queue"] for r in results}
    assert queues == {"path-0": "operator", "path-1": "repair", "path-2": "installation", "path-3": "complaint"}
    # The after-hours path (holiday): closed prompt, then the voicemail greeting.
    closed = [s for s in generated.scenarios if "hours:closed" in s.assumes]
    assert [s.prompts for s in closed] == [["closed", "leave_message"]]
    service.runner.clock = lambda: CLOSED
    result = await service.testcalls.run(closed[0], closed[0].to_yaml(), "pytest")
    assert result["passed"], result["failures"]


async def test_test_tag_header_is_copied_sanitised(
    sandbox: Sandbox, service: HotlineService, phones: PhoneFactory, open_hours: None,
) -> None:
    """X-Hotline-Test reaches the tracker as HOTLINE_TEST: '-', '.', '_' kept (FILTER needs
    '\\-' for that), dialplan and shell metacharacters dropped."""
    from cti import channel_vars as cv
    from tests.support.calls import carrier_headers, hotline_uri, wait_for

    events: list[Any] = []
    unsubscribe = service.subscribe(events.append)
    sent = {"13600000001": "qa-run.1_x", "13600000002": "a;b$(c)|d`e'f\"g h,i-j"}
    want = {"13600000001": "qa-run.1_x", "13600000002": "abcdefghi-j"}
    try:
        callers = await asyncio.gather(*(phones(f"tag{num}", username=num) for num in sent))
        calls = await asyncio.gather(*(p.call(hotline_uri(sandbox), headers=carrier_headers({cv.TEST_HEADER: tag}))
                                       for p, tag in zip(callers, sent.values(), strict=True)))

        def tags() -> dict[str, str] | None:
            seen = {e.call["caller_num"]: e.call["test_tag"] for e in events
                    if e.kind == "recording_started" and e.call["caller_num"] in sent}
            return seen if len(seen) == len(sent) else None

        got = await wait_for(tags, 15, "both calls' tags")
        await asyncio.gather(*(c.hangup() for c in calls))
    finally:
        unsubscribe()
    assert got == want
