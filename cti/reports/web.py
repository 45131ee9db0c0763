"""HTTP endpoints of the reports.

    GET  /reports/{summary|queues|agents|volume}?month=YYYY-MM | ?from=YYYY-MM-DD[&to=...]
         [&format=csv]                          supervisor, admin
    GET  /reports/statements/{agent}?month=YYYY-MM[&format=csv]
                                                supervisor, admin; an agent: only their own
    POST /reports/import                        admin: import the configured Asterisk log directory
    POST /reports/import/{queue_log|cdr}        admin: import the request body (the file's text)

Reports read the database (blocking): every call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from cti.reports.dataset import PeriodError
from cti.reports.importer import import_cdr, import_queue_log
from cti.reports.rules import RulesError
from cti.reports.service import ReportService
from cti.reports.views import REPORTS, to_csv
from cti.web import APIError, principal_of, requires

REPORT_SERVICE: web.AppKey[ReportService] = web.AppKey("report_service", ReportService)
READERS = ("supervisor", "admin")
MAX_UPLOAD_BYTES = 256 * 1024 * 1024


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def _respond(request: web.Request, body: dict[str, Any], filename: str) -> web.Response:
    fmt = request.query.get("format", "json")
    if fmt == "csv":
        return web.Response(text=to_csv(body), content_type="text/csv", charset="utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{filename}.csv"'})
    if fmt != "json":
        raise APIError(400, "invalid-format", "format is json or csv", {"format": fmt[:16]})
    return web.json_response(body, dumps=_dumps)


def _period(request: web.Request, service: ReportService) -> Any:
    q = request.query
    try:
        return service.period(q.get("month"), q.get("from"), q.get("to"))
    except (PeriodError, RulesError) as exc:
        raise APIError(400, "invalid-period", str(exc), {"expected": "month=YYYY-MM or from=YYYY-MM-DD[&to=...]"}) \
            from None


@requires(*READERS)
async def get_report(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in REPORTS:
        raise APIError(404, "report-not-found", f"no report {name[:32]!r}", {"reports": sorted(REPORTS)})
    service = request.app[REPORT_SERVICE]
    period = _period(request, service)
    body = await asyncio.to_thread(service.report, name, period)
    return _respond(request, body, f"{name}-{period.label}")


async def get_statement(request: web.Request) -> web.Response:
    agent = request.match_info["agent"]
    principal = principal_of(request)
    if principal.role not in (*READERS, "agent") or not principal.sees_agent(agent):
        raise APIError(403, "forbidden", "agents may read only their own statement", {"agent": agent[:32]})
    month = request.query.get("month", "")
    service = request.app[REPORT_SERVICE]
    try:
        service.period(month)
    except (PeriodError, RulesError) as exc:
        raise APIError(400, "invalid-period", str(exc), {"expected": "month=YYYY-MM"}) from None
    body = await asyncio.to_thread(service.statement, agent, month)
    return _respond(request, body, f"statement-{agent}-{month}")


@requires("admin")
async def import_logs(request: web.Request) -> web.Response:
    service = request.app[REPORT_SERVICE]
    if service.log_dir is None:
        raise APIError(409, "no-log-dir", "this service has no Asterisk log directory configured; "
                       "POST the files to /reports/import/queue_log and /reports/import/cdr")
    results = await asyncio.to_thread(service.import_logs)
    return web.json_response({"imports": [r.to_dict() for r in results]}, dumps=_dumps)


@requires("admin")
async def import_upload(request: web.Request) -> web.Response:
    kind = request.match_info["kind"]
    importer = {"queue_log": import_queue_log, "cdr": import_cdr}.get(kind)
    if importer is None:
        raise APIError(404, "not-found", "import queue_log or cdr", {"kind": kind[:32]})
    body = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        body += chunk
        if len(body) > MAX_UPLOAD_BYTES:
            raise APIError(413, "import-too-large", "file too large for HTTP; use `hotline report import`")
    service = request.app[REPORT_SERVICE]
    result = await asyncio.to_thread(importer, service.sessions, bytes(body), f"upload:{kind}")
    return web.json_response(result.to_dict(), dumps=_dumps, status=200)


def add_routes(app: web.Application) -> None:
    """Register the report endpoints; the app must hold a ReportService under `REPORT_SERVICE`."""
    app.router.add_get("/reports/statements/{agent}", get_statement)
    app.router.add_post("/reports/import", import_logs)
    app.router.add_post("/reports/import/{kind}", import_upload)
    app.router.add_get("/reports/{name}", get_report)


__all__ = ["REPORT_SERVICE", "add_routes"]
