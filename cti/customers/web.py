"""HTTP endpoints for customer lookups, cards and CSV imports.

    GET  /customers/lookup?number=...  200 Lookup JSON; 400 invalid-phone-number / missing-number
    GET  /customers/{id}               200 card JSON; 404 customer-not-found
    POST /customers/import             text/csv body; 200 ImportReport; 400 invalid-import with
                                       details.errors = [{row, column, message}, ...]

The store blocks (database), so every call runs in a worker thread: a slow query
must not stall the event loop that also carries AMI events and websockets.
Errors use the service's one shape (`cti.web.APIError`). Authorization is the
application's middleware's job.
"""

from __future__ import annotations

import asyncio
import json
import re

from aiohttp import web

from cti.customers.importer import CustomerImportError, import_csv
from cti.customers.store import CustomerStore
from cti.web import APIError, requires

CUSTOMER_STORE: web.AppKey[CustomerStore] = web.AppKey("customer_store", CustomerStore)

#: Largest CSV accepted over HTTP (about 200,000 customers); bigger files go through the CLI.
MAX_IMPORT_BYTES = 64 * 1024 * 1024
CSV_TYPES = frozenset({"text/csv", "application/csv", "text/plain"})
#: Errors returned in one response; the count says how many there were in all.
MAX_REPORTED_ERRORS = 10_000
_ID = re.compile(r"[0-9]{1,10}")


async def lookup(request: web.Request) -> web.Response:
    """GET /customers/lookup?number=13800138000"""
    number = request.query.get("number")
    if number is None or not number.strip():
        raise APIError(400, "missing-number", "query parameter 'number' is required")
    result = await asyncio.to_thread(request.app[CUSTOMER_STORE].lookup, number)
    if result.status == "invalid":
        raise APIError(400, "invalid-phone-number", f"not a phone number: {result.reason}",
                       {"number": number[:64], "reason": result.reason})
    return web.json_response(result.to_dict(), dumps=_dumps)


async def get_customer(request: web.Request) -> web.Response:
    """GET /customers/{id}"""
    raw = request.match_info["id"]
    card = None
    if _ID.fullmatch(raw):
        card = await asyncio.to_thread(request.app[CUSTOMER_STORE].card, int(raw))
    if card is None:
        raise APIError(404, "customer-not-found", f"no customer with id {raw[:32]}", {"id": raw[:32]})
    return web.json_response(card.to_dict(), dumps=_dumps)


@requires("admin")
async def import_customers(request: web.Request) -> web.Response:
    """POST /customers/import with the CSV file as the body; all rows or none are imported."""
    if request.content_type not in CSV_TYPES:
        raise APIError(415, "unsupported-media-type", "send the CSV file with Content-Type: text/csv",
                       {"content_type": request.content_type})
    if request.content_length is not None and request.content_length > MAX_IMPORT_BYTES:
        raise _too_large()
    body = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        body += chunk
        if len(body) > MAX_IMPORT_BYTES:
            raise _too_large()
    store = request.app[CUSTOMER_STORE]
    try:
        report = await asyncio.to_thread(import_csv, bytes(body), store.sessions, store.default_region)
    except CustomerImportError as exc:
        errors = exc.errors
        raise APIError(400, "invalid-import", f"{len(errors)} error(s) in the file, nothing was imported", {
            "error_count": len(errors),
            "errors": [e.to_dict() for e in errors[:MAX_REPORTED_ERRORS]],
        }) from None
    return web.json_response(report.to_dict())


def _too_large() -> APIError:
    return APIError(413, "import-too-large", f"the file is larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MiB",
                    {"max_bytes": MAX_IMPORT_BYTES})


def _dumps(value: object) -> str:
    # Names and addresses stay readable in the payload (and in logs of it).
    return json.dumps(value, ensure_ascii=False)


def add_routes(app: web.Application) -> None:
    """Register the customer endpoints; the app must hold a store under `CUSTOMER_STORE`."""
    app.router.add_get("/customers/lookup", lookup)
    app.router.add_post("/customers/import", import_customers)
    app.router.add_get("/customers/{id}", get_customer)
