"""REST for recordings: search, metadata + analysis, streaming with Range, case library, holds.

Only supervisor, qa and admin tokens get in (agents are refused by `@requires`).
URLs carry recording *ids*, never paths: the file is found through the index row
and `RecordingIndex.resolve`, which follows symlinks before checking that the file
is inside the recordings root; the file is then opened with O_NOFOLLOW and checked
to be a regular file. Every play or download needs a `reason` and writes an access
log row (who, when, which leg, why, which bytes) before the first byte is sent.
"""

from __future__ import annotations

import asyncio
import os
import stat
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from cti.web import APIError, principal_of, requires
from recordings.catalog import CASE_KINDS, STATUS_PURGED, SetFilter, set_view
from recordings.index import Recording
from recordings.recorder import Recorder

RECORDER: web.AppKey[Recorder] = web.AppKey("recorder", Recorder)
VIEWERS = ("supervisor", "qa", "admin")
CHUNK = 64 * 1024


class RangeNotSatisfiable(ValueError):
    """The Range names no byte of the file (answered with 416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One byte range ``(first, last)`` inclusive from a Range header, or None for the whole file.

    Forms: ``bytes=A-B``, ``bytes=A-``, ``bytes=-N`` (last N bytes). A header we do not
    understand, or a multi-range request, is ignored (RFC 9110 allows serving the whole
    representation); a syntactically valid range beyond the end raises RangeNotSatisfiable.
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition("-")
    if not dash or not (first_s.isdigit() or first_s == "") or not (last_s.isdigit() or last_s == ""):
        return None
    if first_s == "":
        if last_s == "" or int(last_s) == 0:
            raise RangeNotSatisfiable(header)
        length = min(int(last_s), size)
        if size == 0:
            raise RangeNotSatisfiable(header)
        return size - length, size - 1
    first = int(first_s)
    last = size - 1 if last_s == "" else min(int(last_s), size - 1)
    if last_s != "" and int(last_s) < first:
        return None  # invalid: ignore the header
    if first >= size:
        raise RangeNotSatisfiable(header)
    return first, last


def _recorder(request: web.Request) -> Recorder:
    return request.app[RECORDER]


def _recording_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isdigit() or len(raw) > 12:
        raise APIError(404, "recording-not-found", "recordings are addressed by numeric id", {"id": raw})
    return int(raw)


def _when(name: str, raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise APIError(400, "invalid-filter", f"{name} must be an ISO date or date-time", {name: raw}) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def filter_from_query(query: Any) -> SetFilter:
    flagged_raw = query.get("flagged")
    flagged = None
    if flagged_raw is not None:
        if flagged_raw not in ("true", "false", "1", "0"):
            raise APIError(400, "invalid-filter", "flagged must be true or false", {"flagged": flagged_raw})
        flagged = flagged_raw in ("true", "1")
    case = query.get("case")
    if case is not None and case not in (*CASE_KINDS, "any"):
        raise APIError(400, "invalid-filter", f"case must be one of {(*CASE_KINDS, 'any')}", {"case": case})
    limit_raw = query.get("limit", "100")
    if not limit_raw.isdigit():
        raise APIError(400, "invalid-filter", "limit must be a number", {"limit": limit_raw})
    return SetFilter(agent=query.get("agent"), queue=query.get("queue"), customer=query.get("customer"),
                     since=_when("since", query.get("since")), until=_when("until", query.get("until")),
                     flagged=flagged, outcome=query.get("outcome"), case=case, limit=int(limit_raw))


@requires(*VIEWERS)
async def list_recordings(request: web.Request) -> web.Response:
    """GET /recordings?agent=&queue=&customer=&since=&until=&flagged=&outcome=&case=&limit="""
    f = filter_from_query(request.query)
    sets = await asyncio.to_thread(_recorder(request).catalog.search, f)
    return web.json_response({"recordings": sets})


@requires(*VIEWERS)
async def library(request: web.Request) -> web.Response:
    """GET /recordings/library[?case=praise|complaint]: the QA case library."""
    case = request.query.get("case", "any")
    if case not in (*CASE_KINDS, "any"):
        raise APIError(400, "invalid-filter", f"case must be one of {(*CASE_KINDS, 'any')}", {"case": case})
    sets = await asyncio.to_thread(_recorder(request).catalog.search, SetFilter(case=case, limit=1000))
    return web.json_response({"library": sets})


async def _set_of(request: web.Request) -> tuple[int, dict[str, Any]]:
    rid = _recording_id(request)
    found = await asyncio.to_thread(_recorder(request).catalog.set_of, rid)
    if found is None:
        raise APIError(404, "recording-not-found", f"no recording {rid}", {"id": rid})
    return rid, set_view(*found)


@requires(*VIEWERS)
async def get_recording(request: web.Request) -> web.Response:
    """GET /recordings/{id}: the leg, its call's recording set and the analysis."""
    rid, view = await _set_of(request)
    return web.json_response({"id": rid, "leg": next(leg for leg in view["legs"] if leg["id"] == rid), "call": view})


def _open_regular(path: str) -> tuple[int, int]:
    """Open without following a final symlink; refuse anything but a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path} is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


@requires(*VIEWERS)
async def stream_audio(request: web.Request) -> web.StreamResponse:
    """GET /recordings/{id}/audio?reason=...[&download=1]: the WAV, with HTTP Range support."""
    rid = _recording_id(request)
    reason = (request.query.get("reason") or "").strip()
    if not reason:
        raise APIError(400, "reason-required", "say why you play or download this recording (?reason=...)")
    recorder = _recorder(request)
    row: Recording | None = await asyncio.to_thread(recorder.catalog.leg, rid)
    if row is None:
        raise APIError(404, "recording-not-found", f"no recording {rid}", {"id": rid})
    if row.status == STATUS_PURGED:
        raise APIError(410, "recording-purged", f"recording {rid} was purged by the retention policy", {"id": rid})
    try:
        # realpath() and open() touch the disk: both in the worker thread, off the loop.
        fd, size = await asyncio.to_thread(lambda: _open_regular(str(recorder.index.resolve(row.path))))
    except ValueError:
        raise APIError(403, "recording-path-refused", f"recording {rid} does not resolve inside the recordings "
                       "folder", {"id": rid}) from None
    except FileNotFoundError:
        raise APIError(404, "recording-file-missing", f"recording {rid} is indexed but its file is gone",
                       {"id": rid}) from None
    except OSError:
        raise APIError(403, "recording-path-refused", f"recording {rid} is not a regular file", {"id": rid}) from None
    try:
        try:
            byte_range = parse_range(request.headers.get("Range"), size)
        except RangeNotSatisfiable:
            error = APIError(416, "range-not-satisfiable", f"the file has {size} bytes", {"size": size})
            error.headers["Content-Range"] = f"bytes */{size}"
            raise error from None
        principal = principal_of(request)
        download = request.query.get("download") in ("1", "true")
        await asyncio.to_thread(
            recorder.catalog.log_access, recording=row, user=principal.user, role=principal.role,
            action="download" if download else "play", reason=reason,
            byte_range=None if byte_range is None else f"{byte_range[0]}-{byte_range[1]}", at=datetime.now(UTC))
        first, last = byte_range if byte_range is not None else (0, size - 1)
        resp = web.StreamResponse(status=206 if byte_range is not None else 200)
        resp.content_type = "audio/wav"
        resp.content_length = max(0, last - first + 1)
        resp.headers["Accept-Ranges"] = "bytes"
        resp.headers["Cache-Control"] = "no-store"
        disposition = "attachment" if download else "inline"
        resp.headers["Content-Disposition"] = f'{disposition}; filename="recording-{rid}-{row.leg}.wav"'
        if byte_range is not None:
            resp.headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        await resp.prepare(request)
        offset = first
        while offset <= last:
            chunk = await asyncio.to_thread(os.pread, fd, min(CHUNK, last - offset + 1), offset)
            if not chunk:
                break
            await resp.write(chunk)
            offset += len(chunk)
        await resp.write_eof()
        return resp
    finally:
        os.close(fd)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise APIError(400, "invalid-json", "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise APIError(400, "invalid-json", "the body must be a JSON object")
    return body


@requires(*VIEWERS)
async def mark_case(request: web.Request) -> web.Response:
    """POST /recordings/{id}/case {"case": "praise"|"complaint"|null, "note": "..."}"""
    rid = _recording_id(request)
    body = await _json_body(request)
    kind, note = body.get("case"), body.get("note", "")
    if not isinstance(note, str) or (kind is not None and not isinstance(kind, str)):
        raise APIError(400, "invalid-case", "case and note must be strings")
    principal = principal_of(request)
    try:
        await asyncio.to_thread(_recorder(request).catalog.mark_case, rid, kind, note, principal.user,
                                datetime.now(UTC))
    except LookupError:
        raise APIError(404, "recording-not-found", f"no recording {rid}", {"id": rid}) from None
    except ValueError as exc:
        raise APIError(400, "invalid-case", str(exc), {"allowed": list(CASE_KINDS)}) from None
    _, view = await _set_of(request)
    return web.json_response(view)


@requires("supervisor", "admin")
async def legal_hold(request: web.Request) -> web.Response:
    """POST /recordings/{id}/hold {"hold": true, "reason": "..."}: keep the call whatever retention says."""
    rid = _recording_id(request)
    body = await _json_body(request)
    hold, reason = body.get("hold"), body.get("reason", "")
    if not isinstance(hold, bool) or not isinstance(reason, str):
        raise APIError(400, "invalid-hold", "hold must be true or false and reason a string")
    try:
        await asyncio.to_thread(_recorder(request).catalog.set_legal_hold, rid, hold, reason)
    except LookupError:
        raise APIError(404, "recording-not-found", f"no recording {rid}", {"id": rid}) from None
    except ValueError as exc:
        raise APIError(400, "invalid-hold", str(exc)) from None
    _, view = await _set_of(request)
    return web.json_response(view)


@requires("supervisor", "admin")
async def access_log(request: web.Request) -> web.Response:
    """GET /recordings/{id}/access: who played or downloaded this leg, when and why."""
    rid = _recording_id(request)
    rows = await asyncio.to_thread(_recorder(request).catalog.access_log, rid)
    return web.json_response({"id": rid, "access": rows})


def add_routes(app: web.Application, recorder: Recorder) -> None:
    """Register the recording endpoints (ids are digits only: no path ever reaches a handler)."""
    app[RECORDER] = recorder
    app.router.add_get("/recordings", list_recordings)
    app.router.add_get("/recordings/library", library)
    app.router.add_get("/recordings/{id}", get_recording)
    app.router.add_get("/recordings/{id}/audio", stream_audio)
    app.router.add_get("/recordings/{id}/access", access_log)
    app.router.add_post("/recordings/{id}/case", mark_case)
    app.router.add_post("/recordings/{id}/hold", legal_hold)
