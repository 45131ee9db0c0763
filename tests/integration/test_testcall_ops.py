"""Launching test calls: the CLI (own AMI session), REST for the QA role, and a periodic
schedule whose failure is POSTed to a webhook. Real calls into the sandbox hotline."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from dialplans.definition import HotlineDefinition
from hotline.sandbox import Sandbox
from hotline.service import HotlineService
from tests.integration.test_testcall import open_hours  # noqa: F401 - fixture

pytestmark = pytest.mark.asterisk
REPO = Path(__file__).resolve().parents[2]
WELCOME_ONLY = 'name: welcome-only\nnumber: "4000"\nsteps:\n  - expect_prompt: welcome\n  - hangup\n'
WRONG_PROMPT = 'name: wrong-prompt\nnumber: "4000"\nsteps:\n  - expect_prompt: {prompt: sorry, within: 2}\n  - hangup\n'


async def _cli(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "hotline.cli", *args, cwd=REPO, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_run_prints_json_and_exits_by_result(
    sandbox: Sandbox, service: HotlineService, definition: HotlineDefinition, tmp_path: Path,
    open_hours: None,  # noqa: F811
) -> None:
    secret = str(sandbox.load_or_create_secrets(definition)["ami_secret"])
    env = {**os.environ, "HOTLINE_DATA_DIR": str(tmp_path / "data"), "HOTLINE_AMI_SECRET": secret,
           "HOTLINE_AMI_PORT": str(sandbox.ports.ami), "HOTLINE_SIP_PORT": str(sandbox.ports.sip)}
    files = {}
    for name, text in (("good", WELCOME_ONLY), ("bad", WRONG_PROMPT), ("broken", "number: 4000\nsteps: [fly]\n")):
        files[name] = tmp_path / f"{name}.yaml"
        files[name].write_text(text)
    good, bad, broken = await asyncio.gather(*(_cli(["testcall", "run", str(files[n])], env)
                                               for n in ("good", "bad", "broken")))
    assert good[0] == 0 and good[1], good[2][-3000:]
    result = json.loads(good[1])
    assert result["passed"] is True and result["steps"][0]["prompt"] == "welcome"
    # The CLI's own AMI session matched the call by its tag.
    assert result["tracker"]["test_tag"] == result["run_id"] and result["tracker"]["linkedid"]
    assert bad[0] == 1 and bad[1], bad[2][-3000:]  # a failed call's JSON, not a crash
    failed = json.loads(bad[1])
    assert failed["passed"] is False and "prompt sorry not heard" in failed["failures"][0]
    assert broken[0] == 2 and "unknown step 'fly'" in broken[2]


async def test_rest_launch_for_qa(
    service: HotlineService, service_server: TestServer, tokens: dict[str, str],
    open_hours: None,  # noqa: F811
) -> None:
    async with aiohttp.ClientSession() as http:
        async def post(token: str, body: Any) -> tuple[int, Any]:
            async with http.post(service_server.make_url("/testcalls"), json=body,
                                 headers={"Authorization": f"Bearer {tokens[token]}"}) as resp:
                return resp.status, await resp.json()

        status, body = await post("supervisor", {"scenario": WELCOME_ONLY})
        assert status == 403
        status, body = await post("qa", {"scenario": "number: 4000\nsteps:\n  - expect_prompt: nope\n"})
        assert status == 400 and body["error_id"] == "invalid-scenario"
        assert "prompt 'nope' is not in the hotline definition" in body["details"]["errors"][0]
        status, body = await post("qa", {"scenario": "generated:path-9"})
        assert status == 404 and "path-1" in body["details"]["generated"]
        status, launched = await post("qa", {"scenario": WELCOME_ONLY})
        assert status == 202 and launched["status"] == "running"
        result = await service.testcalls.wait(launched["run_id"])
        assert result is not None and result["status"] == "passed", result
        async with http.get(service_server.make_url("/testcalls"),
                            headers={"Authorization": f"Bearer {tokens['supervisor']}"}) as resp:
            listed = (await resp.json())["results"]
        assert launched["run_id"] in [r["run_id"] for r in listed]
        assert next(r for r in listed if r["run_id"] == launched["run_id"])["trigger"] == "api:test-qa"
        async with http.get(service_server.make_url("/testcalls/generated"),
                            headers={"Authorization": f"Bearer {tokens['qa']}"}) as resp:
            generated = await resp.json()
        assert {s["name"] for s in generated["scenarios"]} >= {"path-0", "path-1", "path-2", "path-3"}
        assert all(k["reason"] for k in generated["skipped"])


async def test_failing_schedule_posts_an_alert(
    service: HotlineService, service_server: TestServer, tokens: dict[str, str],
    open_hours: None,  # noqa: F811
) -> None:
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def hook(request: web.Request) -> web.Response:
        await received.put(await request.json())
        return web.json_response({"ok": True})

    hook_app = web.Application()
    hook_app.router.add_post("/alert", hook)
    hook_server = TestServer(hook_app, host="127.0.0.1", port=0)
    await hook_server.start_server()
    service.testcalls.min_interval = 1
    headers = {"Authorization": f"Bearer {tokens['qa']}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            body = {"name": "wrong-prompt-check", "scenario": WRONG_PROMPT, "interval_seconds": 1,
                    "webhook_url": str(hook_server.make_url("/alert"))}
            async with http.post(service_server.make_url("/testcalls/schedules"), json=body) as resp:
                assert resp.status == 201, await resp.text()
                schedule = await resp.json()
            alert = await asyncio.wait_for(received.get(), 60)
            async with http.delete(service_server.make_url(f"/testcalls/schedules/{schedule['id']}")) as resp:
                assert resp.status == 200
            bad = {**body, "scenario": "number: 4000\nsteps: [dance]\n"}
            async with http.post(service_server.make_url("/testcalls/schedules"), json=bad) as resp:
                assert resp.status == 400 and (await resp.json())["error_id"] == "invalid-scenario"
    finally:
        service.testcalls.min_interval = 60
        # A run still in flight at the delete ends without an alert; the service lives on
        # for the rest of the session, so nothing of this schedule may outlive the test.
        await asyncio.wait_for(service.testcalls.scheduled_runs_idle(), 60)
        await hook_server.close()
    assert alert["event"] == "testcall_failed" and alert["schedule"] == "wrong-prompt-check"
    assert "prompt sorry not heard" in alert["failures"][0]
    stored = await service.testcalls.wait(alert["run_id"])
    assert stored is not None and stored["status"] == "failed" and stored["trigger"] == f"schedule:{schedule['id']}"
    logged = [a for a in service.testcalls.alerts if a["run_id"] == alert["run_id"]]
    assert logged and logged[0]["delivery"]["status"] == 200
