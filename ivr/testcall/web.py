"""REST for QA test calls: launch, results (+ the heard audio), reviews, schedules.

    POST /testcalls                      qa, admin      {"scenario": YAML text | "generated:<name>", "wait": bool}
    GET  /testcalls                      qa, supervisor, admin
    GET  /testcalls/generated            qa, supervisor, admin   scenarios for every menu path
    GET  /testcalls/{run_id}             qa, supervisor, admin
    GET  /testcalls/{run_id}/audio       qa, supervisor, admin   what the test caller heard (WAV)
    POST /testcalls/{run_id}/reviews     qa, admin      {"scores": {criterion: 0..5}, "comment": ""}
    GET  /testcalls/{run_id}/reviews     qa, supervisor, admin
    POST /testcalls/schedules            qa, admin      {"name", "scenario", "interval_seconds", "webhook_url"}
    GET  /testcalls/schedules            qa, supervisor, admin
    DELETE /testcalls/schedules/{id}     qa, admin
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web

from cti.web import APIError, principal_of, requires
from ivr.testcall.scenario import ScenarioError
from ivr.testcall.service import TestCalls
from ivr.testcall.store import CRITERIA, MAX_SCORE, ReviewError

TESTCALLS: web.AppKey[TestCalls] = web.AppKey("testcalls", TestCalls)
READERS = ("qa", "supervisor", "admin")
WRITERS = ("qa", "admin")


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise APIError(400, "invalid-json", "the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise APIError(400, "invalid-json", "the request body must be a JSON object")
    return body


def _scenario_text(tc: TestCalls, body: dict[str, Any]) -> tuple[str, str]:
    text = body.get("scenario")
    if not isinstance(text, str) or not text.strip():
        raise APIError(400, "invalid-scenario", "give 'scenario': YAML text or 'generated:<name>'")
    if text.startswith("generated:"):
        wanted = text.split(":", 1)[1]
        for s in tc.generated().scenarios:
            if s.name == wanted:
                return s.to_yaml(), wanted
        raise APIError(404, "scenario-not-found", f"no generated scenario {wanted!r}",
                       {"generated": [s.name for s in tc.generated().scenarios]})
    return text, "request"


def _parse(tc: TestCalls, text: str, source: str) -> Any:
    try:
        return tc.parse(text, source)
    except ScenarioError as exc:
        raise APIError(400, "invalid-scenario", str(exc).splitlines()[0], {"errors": exc.errors}) from None


@requires(*WRITERS)
async def launch(request: web.Request) -> web.Response:
    tc = request.app[TESTCALLS]
    body = await _json(request)
    text, source = _scenario_text(tc, body)
    scenario = _parse(tc, text, source)
    user = principal_of(request).user
    run_id = await tc.launch(scenario, text, f"api:{user}")
    if body.get("wait"):
        result = await tc.wait(run_id)
        return web.json_response(result, status=200)
    return web.json_response({"run_id": run_id, "status": "running"}, status=202)


@requires(*READERS)
async def list_results(request: web.Request) -> web.Response:
    tc = request.app[TESTCALLS]
    rows = await asyncio.to_thread(tc.store.results, 100, request.query.get("scenario"))
    return web.json_response({"results": rows})


@requires(*READERS)
async def generated(request: web.Request) -> web.Response:
    gen = request.app[TESTCALLS].generated()
    return web.json_response({
        "scenarios": [{"name": s.name, "path": list(s.path), "yaml": s.to_yaml()} for s in gen.scenarios],
        "skipped": [{"path": list(k.path), "node": k.node, "reason": k.reason} for k in gen.skipped]})


async def _result(request: web.Request) -> dict[str, Any]:
    run_id = request.match_info["run_id"]
    row = await asyncio.to_thread(request.app[TESTCALLS].store.get, run_id)
    if row is None:
        raise APIError(404, "testcall-not-found", f"no test call {run_id}", {"run_id": run_id})
    return row


@requires(*READERS)
async def get_result(request: web.Request) -> web.Response:
    row = await _result(request)
    row.pop("heard_path", None)
    return web.json_response(row)


@requires(*READERS)
async def get_audio(request: web.Request) -> web.StreamResponse:
    row = await _result(request)
    path = row.get("heard_path")
    tc = request.app[TESTCALLS]
    # Only files the runner wrote, under its own folder, are ever served.
    if not path or not await asyncio.to_thread(_servable, Path(path), tc.work_dir):
        raise APIError(404, "audio-not-found", "no recording for this test call", {"run_id": row["run_id"]})
    return web.FileResponse(path, headers={"Content-Type": "audio/wav"})


def _servable(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve()) and path.is_file()


@requires(*WRITERS)
async def add_review(request: web.Request) -> web.Response:
    run_id = request.match_info["run_id"]
    body = await _json(request)
    comment = body.get("comment", "")
    if not isinstance(comment, str):
        raise APIError(400, "invalid-review", "comment must be text")
    try:
        review = await asyncio.to_thread(request.app[TESTCALLS].store.add_review, run_id,
                                         principal_of(request).user, body.get("scores"), comment)
    except ReviewError as exc:
        raise APIError(400, "invalid-review", str(exc), {"problems": exc.problems, "criteria": list(CRITERIA),
                                                          "max_score": MAX_SCORE}) from None
    if review is None:
        raise APIError(404, "testcall-not-found", f"no test call {run_id}", {"run_id": run_id})
    return web.json_response(review, status=201)


@requires(*READERS)
async def list_reviews(request: web.Request) -> web.Response:
    await _result(request)
    rows = await asyncio.to_thread(request.app[TESTCALLS].store.reviews, request.match_info["run_id"])
    return web.json_response({"reviews": rows, "criteria": list(CRITERIA), "max_score": MAX_SCORE})


@requires(*WRITERS)
async def add_schedule(request: web.Request) -> web.Response:
    tc = request.app[TESTCALLS]
    body = await _json(request)
    text, _ = _scenario_text(tc, body)
    name = body.get("name")
    interval = body.get("interval_seconds")
    webhook = body.get("webhook_url")
    if not isinstance(name, str) or not name or len(name) > 64:
        raise APIError(400, "invalid-schedule", "name must be 1-64 characters")
    if isinstance(interval, bool) or not isinstance(interval, int):
        raise APIError(400, "invalid-schedule", "interval_seconds must be an integer")
    if webhook is not None and not isinstance(webhook, str):
        raise APIError(400, "invalid-schedule", "webhook_url must be text")
    try:
        view = await asyncio.to_thread(tc.add_schedule, name, text, interval, webhook, principal_of(request).user)
    except ScenarioError as exc:
        raise APIError(400, "invalid-scenario", str(exc).splitlines()[0], {"errors": exc.errors}) from None
    except ValueError as exc:
        raise APIError(400, "invalid-schedule", str(exc)) from None
    tc.schedules_changed()
    return web.json_response(view, status=201)


@requires(*READERS)
async def list_schedules(request: web.Request) -> web.Response:
    tc = request.app[TESTCALLS]
    rows = await asyncio.to_thread(tc.store.schedules)
    return web.json_response({"schedules": [r.view() for r in rows], "alerts": tc.alerts[-20:]})


@requires(*WRITERS)
async def delete_schedule(request: web.Request) -> web.Response:
    tc = request.app[TESTCALLS]
    raw = request.match_info["schedule_id"]
    if not raw.isdigit() or not await asyncio.to_thread(tc.store.disable_schedule, int(raw)):
        raise APIError(404, "schedule-not-found", f"no schedule {raw}")
    tc.schedules_changed()
    return web.json_response({"id": int(raw), "enabled": False})


def add_routes(app: web.Application, testcalls: TestCalls) -> None:
    app[TESTCALLS] = testcalls
    r = app.router
    r.add_post("/testcalls", launch)
    r.add_get("/testcalls", list_results)
    r.add_get("/testcalls/generated", generated)
    r.add_post("/testcalls/schedules", add_schedule)
    r.add_get("/testcalls/schedules", list_schedules)
    r.add_delete("/testcalls/schedules/{schedule_id}", delete_schedule)
    r.add_get("/testcalls/{run_id}", get_result)
    r.add_get("/testcalls/{run_id}/audio", get_audio)
    r.add_post("/testcalls/{run_id}/reviews", add_review)
    r.add_get("/testcalls/{run_id}/reviews", list_reviews)
