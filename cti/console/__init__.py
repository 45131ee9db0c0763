"""The web console: static ES modules served by the service itself (no build step, no CDN).

Files are served only from the `static` folder, by exact name (no path ever reaches the
file system from a URL), with a Content-Security-Policy that allows nothing but this
origin: the console renders every server value as text, and the CSP is the second wall
against a hostile caller-ID name. The pages are public; every API they call checks the
token and role on the server (`cti.web.requires`), so the console is never the only gate.
"""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web

from cti.web import whoami

STATIC = Path(__file__).parent / "static"
PREFIX = "/console"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(?:js|css|html|svg)$")
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "media-src 'self'; connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def _file(name: str) -> web.Response:
    path = STATIC / name
    if not _NAME.match(name) or not path.is_file():
        raise web.HTTPNotFound()
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "Content-Security-Policy": CSP,
               "Referrer-Policy": "no-referrer"}
    return web.Response(body=path.read_bytes(), content_type=_TYPES[path.suffix], charset="utf-8", headers=headers)


async def index(request: web.Request) -> web.Response:
    return _file("index.html")


async def asset(request: web.Request) -> web.Response:
    return _file(request.match_info["name"])


async def redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(PREFIX + "/")


def add_routes(app: web.Application) -> None:
    """GET /console/ (the page), /console/{file} (its modules), and GET /whoami for the login."""
    app.router.add_get(PREFIX, redirect)
    app.router.add_get(PREFIX + "/", index)
    app.router.add_get(PREFIX + "/{name}", asset)
    app.router.add_get("/whoami", whoami)
