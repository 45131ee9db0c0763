"""The test-call scheduler: a schedule never overlaps itself when a call outlasts its
interval, and a schedule deleted while its call runs raises no alert. Its REST
endpoints refuse bad schedules with one error shape and store nothing.

The runner is replaced by a gate the test opens: what is under test is the scheduling,
not the call (real scheduled calls run in tests/integration/test_testcall_ops.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.typedefs import Handler
from sqlalchemy.orm import Session, sessionmaker

import hotline.service  # noqa: F401 - registers every table on the shared metadata
from cti.auth import Principal
from cti.db import create_schema, make_engine, session_factory
from cti.web import PRINCIPAL
from dialplans.definition import DEFAULT_PATH, load_definition
from ivr.testcall.scenario import Scenario
from ivr.testcall.service import TestCalls
from ivr.testcall.web import add_routes

SCENARIO = 'name: hang-up\nnumber: "4000"\nsteps:\n  - hangup\n'


class GatedCalls(TestCalls):
    """TestCalls whose runs wait for the test to finish them, with the outcome it picks."""

    def __init__(self, sessions: sessionmaker[Session], work_dir: Path) -> None:
        flow = load_definition(DEFAULT_PATH).flow
        super().__init__(sessions, lambda: flow, work_dir, prompt_files=dict, sip_host="127.0.0.1",
                         sip_port=5060, number="4000")
        self.started: asyncio.Queue[asyncio.Future[bool]] = asyncio.Queue()
        self.posted: list[dict[str, Any]] = []

    async def run(self, scenario: Scenario, scenario_yaml: str = "", trigger: str = "api") -> dict[str, Any]:
        gate: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        await self.started.put(gate)
        passed = await gate
        return {"run_id": None, "scenario": scenario.name, "passed": passed,
                "failures": [] if passed else ["prompt welcome not heard"]}

    async def alert(self, schedule_id: int, name: str, result: dict[str, Any], webhook: str | None) -> None:
        self.posted.append({"schedule_id": schedule_id, **result})


@pytest.fixture
async def calls(tmp_path: Path) -> Any:
    # A database file: the scheduler reads it from a worker thread while the test writes.
    engine = make_engine(f"sqlite:///{tmp_path / 'hotline.sqlite3'}")
    create_schema(engine)
    tc = GatedCalls(session_factory(engine), tmp_path)
    tc.min_interval = 0
    await tc.start()
    yield tc
    await tc.stop()
    engine.dispose()


async def _no_start(tc: GatedCalls, within: float) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(tc.started.get(), within)


async def test_a_slow_run_is_not_overlapped_by_its_own_schedule(calls: GatedCalls) -> None:
    sched = calls.add_schedule("slow", SCENARIO, 0, None, "qa")
    calls.schedules_changed()
    first = await asyncio.wait_for(calls.started.get(), 5)
    # Interval 0: without the guard a new call would start on every pass.
    await _no_start(calls, 0.3)
    first.set_result(False)
    second = await asyncio.wait_for(calls.started.get(), 5)  # due again once the first ended
    assert [p["schedule_id"] for p in calls.posted] == [sched["id"]]
    second.set_result(True)
    third = await asyncio.wait_for(calls.started.get(), 5)
    assert len(calls.posted) == 1  # a passing run raises no alert
    third.set_result(True)


async def test_schedules_run_side_by_side(calls: GatedCalls) -> None:
    calls.add_schedule("a", SCENARIO, 0, None, "qa")
    calls.add_schedule("b", SCENARIO, 0, None, "qa")
    calls.schedules_changed()
    gates = [await asyncio.wait_for(calls.started.get(), 5) for _ in range(2)]
    await _no_start(calls, 0.3)
    for gate in gates:
        gate.set_result(True)


async def test_deleted_during_its_call_raises_no_alert_and_does_not_run_again(calls: GatedCalls) -> None:
    sched = calls.add_schedule("doomed", SCENARIO, 0, None, "qa")
    calls.schedules_changed()
    gate = await asyncio.wait_for(calls.started.get(), 5)
    assert calls.store.disable_schedule(sched["id"])
    calls.schedules_changed()
    gate.set_result(False)
    await asyncio.wait_for(calls.scheduled_runs_idle(), 5)
    await _no_start(calls, 0.3)
    assert calls.posted == []
    assert sched["id"] not in calls._next_due  # the loop keeps nothing of a deleted schedule


async def test_bad_schedules_are_refused_over_rest_and_nothing_is_stored(calls: GatedCalls) -> None:
    calls.min_interval = 60

    @web.middleware
    async def as_qa(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[PRINCIPAL] = Principal("qa-1", "qa")
        return await handler(request)

    app = web.Application(middlewares=[as_qa])
    add_routes(app, calls)
    good = {"name": "nightly", "scenario": SCENARIO, "interval_seconds": 3600}
    async with TestClient(TestServer(app)) as http:
        for body, error_id, words in (
            ({**good, "interval_seconds": 59}, "invalid-schedule", "at least 60 seconds"),
            ({**good, "interval_seconds": "3600"}, "invalid-schedule", "integer"),
            ({**good, "interval_seconds": True}, "invalid-schedule", "integer"),
            ({**good, "webhook_url": "ftp://qa.example/alert"}, "invalid-schedule", "http(s) URL"),
            ({**good, "webhook_url": 7}, "invalid-schedule", "text"),
            ({**good, "name": ""}, "invalid-schedule", "1-64 characters"),
            ({**good, "name": "x" * 65}, "invalid-schedule", "1-64 characters"),
            ({**good, "scenario": "number: 4000\nsteps: [dance]\n"}, "invalid-scenario", "invalid test-call"),
            ({**good, "scenario": ""}, "invalid-scenario", "scenario"),
        ):
            resp = await http.post("/testcalls/schedules", json=body)
            assert resp.status == 400, (body, await resp.text())
            data = await resp.json()
            assert data["error_id"] == error_id and words in data["message"], (body, data)
        resp = await http.post("/testcalls/schedules", data=b"{nightly", headers={"Content-Type": "application/json"})
        assert resp.status == 400 and (await resp.json())["error_id"] == "invalid-json"
        resp = await http.delete("/testcalls/schedules/99")
        assert resp.status == 404 and (await resp.json())["error_id"] == "schedule-not-found"
        resp = await http.delete("/testcalls/schedules/x1")
        assert resp.status == 404
        assert calls.store.schedules() == []
        resp = await http.post("/testcalls/schedules", json=good)
        assert resp.status == 201, await resp.text()
        assert [s.name for s in calls.store.schedules()] == ["nightly"]
    assert calls.started.empty()  # an hour's interval: nothing ran
