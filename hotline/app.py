"""aiohttp application factory: the service's HTTP API, websocket and background services."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from cti.console import add_routes as add_console_routes
from cti.customers.web import CUSTOMER_STORE
from cti.customers.web import add_routes as add_customer_routes
from cti.monitor import add_routes as add_monitor_routes
from cti.reports.web import REPORT_SERVICE
from cti.reports.web import add_routes as add_report_routes
from cti.web import HUB, SNAPSHOT, TOKENS, APIError, auth_middleware, principal_of, requires, websocket
from dialplans.compiler import AsteriskSettings, compile_hotline
from dialplans.definition import HotlineDefinition
from hotline.dialplan_web import add_routes as add_dialplan_routes
from hotline.reports import report_service
from hotline.service import HotlineService
from hotline.settings import Settings
from ivr.model import Flow
from ivr.survey.web import add_routes as add_survey_routes
from ivr.testcall.web import add_routes as add_testcall_routes
from recordings.web import add_routes as add_recording_routes

log = logging.getLogger(__name__)

SERVICE: web.AppKey[HotlineService] = web.AppKey("service", HotlineService)
WATCHERS = ("supervisor", "qa", "admin")


def flow_for(defn: HotlineDefinition, sounds_dir: str) -> Flow:
    """The runnable flow with prompt ids resolved to sound files as Asterisk sees them."""
    settings = AsteriskSettings(ami_secret="-", agent_passwords=dict.fromkeys(defn.agents, "-"), sounds_dir=sounds_dir)
    return compile_hotline(defn, settings).flow


async def get_status(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE].status())


async def list_calls(request: web.Request) -> web.Response:
    """Live and recent calls; an agent sees only calls they took or were offered."""
    service = request.app[SERVICE]
    principal = principal_of(request)
    live = [c.to_dict() for c in service.tracker.calls.values()
            if principal.sees_agent(c.agent) or (principal.agent is not None and principal.agent in c.ringing)]
    recent = [c.to_dict() for c in list(service.tracker.finished.values())[-100:] if principal.sees_agent(c.agent)]
    return web.json_response({"live": live, "recent": recent, **service.freshness()})


async def get_call(request: web.Request) -> web.Response:
    linkedid = request.match_info["linkedid"]
    view = request.app[SERVICE].call_view(linkedid)
    # An agent asking for someone else's call learns nothing, not even that it exists.
    if view is None or not principal_of(request).sees_agent(view.get("agent")):
        raise APIError(404, "call-not-found", f"no call with linkedid {linkedid}", {"linkedid": linkedid})
    return web.json_response(view)


@requires(*WATCHERS)
async def get_call_recordings(request: web.Request) -> web.Response:
    linkedid = request.match_info["linkedid"]
    return web.json_response({"linkedid": linkedid, "recordings": request.app[SERVICE].recordings_view(linkedid)})


@requires(*WATCHERS)
async def get_queues(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    return web.json_response({"queues": service.queues_view(), **service.freshness()})


@requires(*WATCHERS)
async def get_agents(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    return web.json_response({"agents": service.agents_view(), **service.freshness()})


@requires(*WATCHERS)
async def get_ivr_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE].node_stats.to_dict())


def create_app(settings: Settings, flow: Flow) -> web.Application:
    app = web.Application(middlewares=[auth_middleware])
    service = HotlineService(settings, flow)
    app[SERVICE] = service
    app[TOKENS] = service.tokens
    app[HUB] = service.hub
    app[SNAPSHOT] = service.snapshot
    app[CUSTOMER_STORE] = service.customers

    async def run_service(app: web.Application) -> AsyncIterator[None]:
        await service.start()
        yield
        await service.stop()

    app.cleanup_ctx.append(run_service)
    app.router.add_get("/status", get_status)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/calls", list_calls)
    app.router.add_get("/calls/{linkedid}", get_call)
    app.router.add_get("/calls/{linkedid}/recordings", get_call_recordings)
    app.router.add_get("/queues", get_queues)
    app.router.add_get("/agents", get_agents)
    app.router.add_get("/ivr/stats", get_ivr_stats)
    add_customer_routes(app)
    add_dialplan_routes(app)
    add_testcall_routes(app, service.testcalls)
    add_monitor_routes(app, service.monitor)
    add_recording_routes(app, service.recorder)
    add_survey_routes(app, service.surveys.store)
    app[REPORT_SERVICE] = report_service(settings, service.engine, service.sessions)
    # Each queue's wrap-up time (the definition's, as in queues.conf): AMI never reports it.
    service.tracker.queue_wrapup.update({q: int(s) for q, s in app[REPORT_SERVICE].rules.wrapup_seconds.items()})
    add_report_routes(app)
    add_console_routes(app)
    return app


__all__: list[Any] = ["SERVICE", "create_app", "flow_for"]
