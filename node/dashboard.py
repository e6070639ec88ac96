"""The dashboard's routes: the single-page app in ``node/static`` served by the node itself (no CDN).

``/`` answers ``index.html``; ``/static/`` serves the script, the stylesheet and the icon. Every
dashboard response carries a Content-Security-Policy that allows only this origin's own scripts,
styles and API (no inline script, no eval, no third-party anything), so even a rendering bug could not
run a script smuggled into a job name or a memo; the app itself never parses chain data as HTML.
Assets are sent with ``Cache-Control: no-cache``: browsers revalidate them (ETag / Last-Modified),
so a node upgrade shows the new dashboard at the next load.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).parent / "static"

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def is_dashboard_path(path: str) -> bool:
    return path == "/" or path.startswith("/static/")


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if is_dashboard_path(request.path):
        response.headers.update(SECURITY_HEADERS)


def add_dashboard(app: web.Application) -> None:
    if (STATIC / "index.html").exists():
        app.router.add_get("/", index)
        app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
        app.on_response_prepare.append(add_security_headers)
