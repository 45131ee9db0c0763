"""HTTP API for surveys. Create/trigger: supervisor, admin. Read: qa, supervisor, admin.

    POST   /surveys/campaigns                    {name, trigger, survey?, rules?}   201 campaign
    GET    /surveys/campaigns                    campaigns
    GET    /surveys/campaigns/{name}             status: jobs by state, close reasons, attempt outcomes
    PATCH  /surveys/campaigns/{name}             {rules: {max_concurrent: 4, ...}}  the changed rules only
    GET    /surveys/campaigns/{name}/jobs        every job with its attempt audit, answers, follow-up
    GET    /surveys/campaigns/{name}/results     one row per answer (?format=csv for a CSV file)
    POST   /surveys/campaigns/{name}/orders      a closed service order (JSON) or many (text/csv)
    GET    /surveys/suppression                  the do-not-call list (number, reason, added_at)
    POST   /surveys/suppression                  {number, reason}    (shared do-not-call list)
    DELETE /surveys/suppression/{number}
    GET    /surveys/followups                    follow-up tasks (low scores, callback requests)
    GET    /surveys/praise                       praise totals by agent
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from cti.web import APIError, requires
from ivr.survey.store import SurveyError, SurveyStore

SURVEY_STORE: web.AppKey[SurveyStore] = web.AppKey("survey_store", SurveyStore)
WRITERS = ("supervisor", "admin")
READERS = ("qa", "supervisor", "admin")
MAX_CSV_BYTES = 8 * 1024 * 1024


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


async def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except SurveyError as exc:
        message = str(exc)
        status, error_id = (404, "campaign-not-found") if message.startswith("no campaign") else (400, "invalid-survey")
        raise APIError(status, error_id, message) from None


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise APIError(400, "invalid-json", "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise APIError(400, "invalid-json", "the body must be a JSON object")
    return body


@requires(*WRITERS)
async def create_campaign(request: web.Request) -> web.Response:
    body = await _json(request)
    rules = body.get("rules") or {}
    if not isinstance(rules, dict):
        raise APIError(400, "invalid-survey", "rules must be an object")
    row = await _call(request.app[SURVEY_STORE].create_campaign, str(body.get("name") or ""),
                      str(body.get("trigger") or "manual"), str(body.get("survey") or "default"), rules)
    return web.json_response(row, status=201, dumps=_dumps)


@requires(*READERS)
async def list_campaigns(request: web.Request) -> web.Response:
    return web.json_response({"campaigns": await _call(request.app[SURVEY_STORE].campaigns)}, dumps=_dumps)


@requires(*READERS)
async def campaign_status(request: web.Request) -> web.Response:
    return web.json_response(await _call(request.app[SURVEY_STORE].status, request.match_info["name"]), dumps=_dumps)


@requires(*WRITERS)
async def update_campaign(request: web.Request) -> web.Response:
    body = await _json(request)
    rules = body.get("rules")
    if not isinstance(rules, dict):
        raise APIError(400, "invalid-survey", "rules must be an object")
    row = await _call(request.app[SURVEY_STORE].update_rules, request.match_info["name"], rules)
    return web.json_response(row, dumps=_dumps)


@requires(*READERS)
async def campaign_jobs(request: web.Request) -> web.Response:
    jobs = await _call(request.app[SURVEY_STORE].jobs, request.match_info["name"])
    return web.json_response({"jobs": jobs}, dumps=_dumps)


@requires(*READERS)
async def campaign_results(request: web.Request) -> web.Response:
    store, name = request.app[SURVEY_STORE], request.match_info["name"]
    if request.query.get("format") == "csv":
        text = await _call(store.results_csv, name)
        return web.Response(text=text, content_type="text/csv",
                            headers={"Content-Disposition": f'attachment; filename="survey-{name}.csv"'})
    return web.json_response({"results": await _call(store.results, name)}, dumps=_dumps)


@requires(*WRITERS)
async def order_closed(request: web.Request) -> web.Response:
    store, name = request.app[SURVEY_STORE], request.match_info["name"]
    if request.content_type in ("text/csv", "application/csv"):
        body = await request.content.read(MAX_CSV_BYTES + 1)
        if len(body) > MAX_CSV_BYTES:
            raise APIError(413, "import-too-large", "CSV larger than 8 MiB")
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise APIError(400, "invalid-survey", "the CSV must be UTF-8") from None
        return web.json_response(await _call(store.import_orders_csv, name, text), dumps=_dumps)
    result = await _call(store.on_order_closed, name, await _json(request))
    return web.json_response({"job": result.job_id, "status": result.status, "reason": result.reason},
                             status=201 if result.status == "queued" else 200, dumps=_dumps)


@requires(*WRITERS)
async def add_suppression(request: web.Request) -> web.Response:
    body = await _json(request)
    number = await _call(request.app[SURVEY_STORE].suppress, str(body.get("number") or ""),
                         str(body.get("reason") or ""))
    return web.json_response({"number": number, "suppressed": True}, status=201)


@requires(*READERS)
async def list_suppression(request: web.Request) -> web.Response:
    return web.json_response({"suppressed": await _call(request.app[SURVEY_STORE].suppressed)}, dumps=_dumps)


@requires(*WRITERS)
async def remove_suppression(request: web.Request) -> web.Response:
    removed = await _call(request.app[SURVEY_STORE].unsuppress, request.match_info["number"])
    return web.json_response({"removed": removed})


@requires(*READERS)
async def followups(request: web.Request) -> web.Response:
    return web.json_response({"followups": await _call(request.app[SURVEY_STORE].followups)}, dumps=_dumps)


@requires(*READERS)
async def praise(request: web.Request) -> web.Response:
    return web.json_response({"praise": await _call(request.app[SURVEY_STORE].praise_totals)}, dumps=_dumps)


def add_routes(app: web.Application, store: SurveyStore) -> None:
    app[SURVEY_STORE] = store
    app.router.add_post("/surveys/campaigns", create_campaign)
    app.router.add_get("/surveys/campaigns", list_campaigns)
    app.router.add_get("/surveys/campaigns/{name}", campaign_status)
    app.router.add_patch("/surveys/campaigns/{name}", update_campaign)
    app.router.add_get("/surveys/campaigns/{name}/jobs", campaign_jobs)
    app.router.add_get("/surveys/campaigns/{name}/results", campaign_results)
    app.router.add_post("/surveys/campaigns/{name}/orders", order_closed)
    app.router.add_get("/surveys/suppression", list_suppression)
    app.router.add_post("/surveys/suppression", add_suppression)
    app.router.add_delete("/surveys/suppression/{number}", remove_suppression)
    app.router.add_get("/surveys/followups", followups)
    app.router.add_get("/surveys/praise", praise)
