"""REST for the editing lifecycle (admin role only); the CLI uses the same endpoints.

    POST /dialplan/validate   body: the definition (YAML text, or JSON {"definition"}); ?sandbox=0 skips
                              the throwaway Asterisk. 200 {"ok", "errors": [{check, where, line, message}]}
    POST /dialplan/diff       body as validate; 200 {"diff"} against the live version
    POST /dialplan/publish    JSON {"definition", "reason", "draft": false, "test_callers": []}
                              200 {"version", "steps"}; 422 invalid-definition (details.errors);
                              409 publish-failed (applied, a check failed, previous version restored)
    POST /dialplan/rollback   JSON {"version": N (default: the previous live one), "reason"}
    POST /dialplan/promote    JSON {"reason"}: the published draft goes live for everyone
    GET  /dialplan/history    ?limit=50; 200 {"versions": [...]}
    GET  /dialplan/versions/{id}   one version with its diff, definition and step log
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any

from aiohttp import web

from cti.web import APIError, principal_of, requires
from dialplans.validate import DefinitionRejected
from hotline.dialplan_publish import DialplanPublisher, NothingToDo, PublishFailed, PublishResult

#: Set by whoever knows where the live Asterisk config lives (hotline run/serve --sandbox, tests).
PUBLISHER: web.AppKey[DialplanPublisher] = web.AppKey("dialplan_publisher", DialplanPublisher)
MAX_DEFINITION_BYTES = 1024 * 1024
# publish/rollback/promote run shielded: a client that disconnects mid-publish must not
# cancel it between the config swap and its checks (the publisher restores on any failure).


def _publisher(request: web.Request) -> DialplanPublisher:
    publisher = request.app.get(PUBLISHER)
    if publisher is None:
        raise APIError(503, "publishing-unavailable",
                       "this service was started without a live Asterisk config to publish to "
                       "(run it with --sandbox, or hotline run)")
    return publisher


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_DEFINITION_BYTES:
        raise APIError(413, "definition-too-large", f"the body is larger than {MAX_DEFINITION_BYTES} bytes")
    raw = await request.read()
    if len(raw) > MAX_DEFINITION_BYTES:
        raise APIError(413, "definition-too-large", f"the body is larger than {MAX_DEFINITION_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise APIError(400, "invalid-body", "the body must be UTF-8") from None
    if request.content_type == "application/json":
        try:
            body = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise APIError(400, "invalid-body", f"invalid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise APIError(400, "invalid-body", "the JSON body must be an object")
        return body
    return {"definition": text}


def _definition(body: dict[str, Any]) -> str:
    text = body.get("definition")
    if not isinstance(text, str) or not text.strip():
        raise APIError(400, "missing-definition", "give the hotline definition (YAML text)")
    return text


def _rejected(exc: DefinitionRejected) -> APIError:
    return APIError(422, "invalid-definition", str(exc), {"errors": [e.to_dict() for e in exc.report.errors]})


def _failed(exc: PublishFailed) -> APIError:
    return APIError(409, "publish-failed", str(exc), {"step": exc.step, "version": exc.version})


@requires("admin")
async def validate(request: web.Request) -> web.Response:
    body = await _body(request)
    report = await _publisher(request).validate(_definition(body), sandbox=request.query.get("sandbox") != "0")
    return web.json_response(report.to_dict())


@requires("admin")
async def diff(request: web.Request) -> web.Response:
    body = await _body(request)
    return web.json_response({"diff": _publisher(request).diff(_definition(body))})


@requires("admin")
async def publish(request: web.Request) -> web.Response:
    body = await _body(request)
    callers = body.get("test_callers", [])
    if not isinstance(callers, list) or not all(isinstance(c, str) and c.strip() for c in callers):
        raise APIError(400, "invalid-test-callers", "test_callers must be a list of caller numbers")
    draft = bool(body.get("draft", False))
    if draft and not callers:
        raise APIError(400, "invalid-test-callers", "a draft needs at least one test-caller number")
    return await _applied(_publisher(request).publish(
        _definition(body), author=principal_of(request).user, reason=str(body.get("reason", "")),
        draft=draft, test_callers=tuple(c.strip() for c in callers)))


@requires("admin")
async def rollback(request: web.Request) -> web.Response:
    body = await _body(request) if request.can_read_body else {}
    version = body.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise APIError(400, "invalid-version", "version must be a version number")
    return await _applied(_publisher(request).rollback(
        author=principal_of(request).user, reason=str(body.get("reason", "")), to_version=version),
        not_found="version-not-found")


@requires("admin")
async def promote(request: web.Request) -> web.Response:
    body = await _body(request) if request.can_read_body else {}
    return await _applied(_publisher(request).promote(
        author=principal_of(request).user, reason=str(body.get("reason", ""))), not_found="no-draft")


async def _applied(change: Awaitable[PublishResult], not_found: str = "") -> web.Response:
    """Run a publish / rollback / promote to its end, even if the admin's request is
    cancelled (a half-run apply is what the publisher exists to prevent), and map its
    refusals to API errors."""
    try:
        result = await asyncio.shield(change)
    except NothingToDo as exc:
        if not not_found:
            raise
        raise APIError(404, not_found, str(exc)) from None
    except DefinitionRejected as exc:
        raise _rejected(exc) from None
    except PublishFailed as exc:
        raise _failed(exc) from None
    return web.json_response(result.to_dict())


@requires("admin")
async def history(request: web.Request) -> web.Response:
    raw = request.query.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise APIError(400, "invalid-limit", "limit must be a number from 1 to 1000")
    versions = await asyncio.to_thread(_publisher(request).history, int(raw))
    return web.json_response({"versions": [v.to_dict() for v in versions]})


@requires("admin")
async def get_version(request: web.Request) -> web.Response:
    raw = request.match_info["id"]
    view = await asyncio.to_thread(_publisher(request).store.get, int(raw)) if raw.isdigit() else None
    if view is None:
        raise APIError(404, "version-not-found", f"no version {raw[:16]}")
    return web.json_response(view.to_dict(full=True))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/dialplan/validate", validate)
    app.router.add_post("/dialplan/diff", diff)
    app.router.add_post("/dialplan/publish", publish)
    app.router.add_post("/dialplan/rollback", rollback)
    app.router.add_post("/dialplan/promote", promote)
    app.router.add_get("/dialplan/history", history)
    app.router.add_get("/dialplan/versions/{id}", get_version)
