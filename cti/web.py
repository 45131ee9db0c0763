"""HTTP plumbing shared by every endpoint: error shape, token auth with roles, the CTI websocket.

Errors: {"status", "error_id" (kebab-case), "message", "details"}; one class per
condition. Auth: `Authorization: Bearer <token>` (or `?token=` where a browser
cannot set headers, i.e. the websocket). Roles are declared on handlers with
`@requires(...)`; a handler without a declaration needs any valid token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import WSMsgType, web

from cti.auth import ROLES, Principal, TokenStore
from cti.stream import EventHub

log = logging.getLogger(__name__)

TOKENS: web.AppKey[TokenStore] = web.AppKey("tokens", TokenStore)
HUB: web.AppKey[EventHub] = web.AppKey("hub", EventHub)
SNAPSHOT: web.AppKey[Callable[[Principal], dict[str, Any]]] = web.AppKey("snapshot")
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)
PUBLIC_PATHS = frozenset({"/status", "/console"})
#: The console's static files (the page logs in with a token; its API calls are checked).
PUBLIC_PREFIXES = ("/console/",)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)


class APIError(web.HTTPException):
    """An API error in the one shape every endpoint uses."""

    def __init__(self, status: int, error_id: str, message: str, details: dict[str, Any] | None = None) -> None:
        self.status_code = status
        super().__init__(
            text=json.dumps({"status": status, "error_id": error_id, "message": message, "details": details or {}},
                            ensure_ascii=False),
            content_type="application/json",
        )


def requires(*roles: str) -> Callable[[H], H]:
    """Declare which roles may call a handler."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {unknown}")

    def mark(handler: H) -> H:
        handler.hotline_roles = roles  # type: ignore[attr-defined]
        return handler

    return mark


def principal_of(request: web.Request) -> Principal:
    principal = request.get(PRINCIPAL)
    if not isinstance(principal, Principal):
        raise APIError(401, "unauthenticated", "a valid API token is required")
    return principal


def _token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[7:].strip()
    return request.query.get("token")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        if request.path not in PUBLIC_PATHS and not request.path.startswith(PUBLIC_PREFIXES):
            principal = request.app[TOKENS].check(_token(request))
            if principal is None:
                raise APIError(401, "unauthenticated", "a valid API token is required")
            roles = getattr(handler, "hotline_roles", None)
            if roles is not None and principal.role not in roles:
                raise APIError(403, "forbidden", f"role {principal.role} may not use this endpoint",
                               {"allowed_roles": list(roles)})
            request[PRINCIPAL] = principal
        return await handler(request)
    except APIError:
        raise
    except web.HTTPException as exc:
        if exc.status_code < 400:
            raise
        # Router errors (404, 405) in the same shape as ours.
        error_id = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        raise APIError(exc.status_code, error_id, exc.reason) from None


async def whoami(request: web.Request) -> web.Response:
    """GET /whoami: who this token is (the console picks its pages; the server still checks each call)."""
    principal = principal_of(request)
    return web.json_response({"user": principal.user, "role": principal.role, "agent": principal.agent})


async def websocket(request: web.Request) -> web.StreamResponse:
    """GET /ws[?since=SEQ]: a snapshot (or the missed events), then live events."""
    principal = principal_of(request)
    hub = request.app[HUB]
    since_raw = request.query.get("since")
    since: int | None = None
    if since_raw is not None:
        if not since_raw.isdigit():
            raise APIError(400, "invalid-since", "since must be a sequence number", {"since": since_raw})
        since = int(since_raw)
    ws = web.WebSocketResponse(heartbeat=20.0)
    await ws.prepare(request)
    # Subscribe and read the history with no await in between: nothing is lost or doubled.
    sub = hub.subscribe(principal)
    backlog = hub.since(since, principal) if since is not None else None
    reader = asyncio.create_task(_drain_client(ws))
    try:
        if backlog is None:
            snapshot = request.app[SNAPSHOT](principal)
            await ws.send_json({"v": 1, "seq": hub.last_seq, "type": "snapshot", "at": None, "linkedid": None,
                                "agent": principal.agent, "data": {**snapshot, "replay": since is not None}})
        else:
            for event in backlog:
                await ws.send_json(event.to_json())
        while True:
            getter = asyncio.ensure_future(sub.queue.get())
            done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if reader in done:
                getter.cancel()
                break
            live = getter.result()
            if live is None:
                if sub.lagged:
                    await ws.send_json({"v": 1, "seq": hub.last_seq, "type": "lagged", "at": None, "linkedid": None,
                                        "agent": None, "data": {"reconnect_with_since": True}})
                break
            await ws.send_json(live.to_json())
    finally:
        hub.unsubscribe(sub)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await ws.close()
    return ws


async def _drain_client(ws: web.WebSocketResponse) -> None:
    """Clients only listen; read until they close so we notice a gone client at once."""
    async for msg in ws:
        if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
            break
