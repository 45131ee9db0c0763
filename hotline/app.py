"""aiohttp application factory: the service's HTTP API and its background services."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from dialplans.compiler import compile_hotline
from dialplans.definition import HotlineDefinition
from hotline.service import HotlineService
from hotline.settings import Settings
from ivr.model import Flow

log = logging.getLogger(__name__)

SERVICE: web.AppKey[HotlineService] = web.AppKey("service", HotlineService)


class APIError(web.HTTPException):
    """One error shape for every endpoint: status, message, kebab-case error_id, details."""

    def __init__(self, status: int, error_id: str, message: str, details: dict[str, Any] | None = None) -> None:
        self.status_code = status
        super().__init__(
            text=web.json_response({"status": status, "error_id": error_id, "message": message,
                                    "details": details or {}}).text,
            content_type="application/json",
        )


def flow_for(defn: HotlineDefinition, sounds_dir: str) -> Flow:
    """The runnable flow with prompt ids resolved to sound files as Asterisk sees them."""
    from dialplans.compiler import AsteriskSettings

    return compile_hotline(defn, AsteriskSettings(ami_secret="-", agent_passwords={a: "-" for a in defn.agents},
                                                  sounds_dir=sounds_dir)).flow


async def get_status(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE].status())


async def list_calls(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    live = [c.to_dict() for c in service.tracker.calls.values()]
    recent = [c.to_dict() for c in list(service.tracker.finished.values())[-100:]]
    return web.json_response({"live": live, "recent": recent})


async def get_call(request: web.Request) -> web.Response:
    linkedid = request.match_info["linkedid"]
    view = request.app[SERVICE].call_view(linkedid)
    if view is None:
        raise APIError(404, "call-not-found", f"no call with linkedid {linkedid}", {"linkedid": linkedid})
    return web.json_response(view)


async def get_call_recordings(request: web.Request) -> web.Response:
    linkedid = request.match_info["linkedid"]
    return web.json_response({"linkedid": linkedid, "recordings": request.app[SERVICE].recordings_view(linkedid)})


async def get_ivr_stats(request: web.Request) -> web.Response:
    stats = request.app[SERVICE].node_stats
    nodes = sorted(set(stats.entries) | set(stats.timeouts) | set(stats.invalid))
    return web.json_response({
        node: {"entries": stats.entries[node], "timeouts": stats.timeouts[node], "invalid": stats.invalid[node],
               "seconds": round(stats.seconds[node], 3),
               "choices": {d: n for (nid, d), n in stats.choices.items() if nid == node}}
        for node in nodes
    })


def create_app(settings: Settings, flow: Flow) -> web.Application:
    app = web.Application()
    service = HotlineService(settings, flow)
    app[SERVICE] = service

    async def run_service(app: web.Application) -> AsyncIterator[None]:
        await service.start()
        yield
        await service.stop()

    app.cleanup_ctx.append(run_service)
    app.router.add_get("/status", get_status)
    app.router.add_get("/calls", list_calls)
    app.router.add_get("/calls/{linkedid}", get_call)
    app.router.add_get("/calls/{linkedid}/recordings", get_call_recordings)
    app.router.add_get("/ivr/stats", get_ivr_stats)
    return app
