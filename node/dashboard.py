"""The dashboard's routes: static files served by the node itself (no CDN)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).parent / "static"


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


def add_dashboard(app: web.Application) -> None:
    if (STATIC / "index.html").exists():
        app.router.add_get("/", index)
        app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
