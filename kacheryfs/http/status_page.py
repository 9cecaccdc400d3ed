"""The status page (GET / and /ui/), its JSON (GET /ui/status.json) and GET /metrics.

The page is one Jinja2 template (templates/status.html, with its CSS and a little plain
JavaScript inlined: no build step, nothing from a CDN). It is complete as served; then the script
polls /ui/status.json every POLL_MS and redraws storage, transfers (progress bar, rate, source),
channels and recent errors in place, so a person watches a transfer without reloading.
`kacheryfs status --watch` reads the same JSON (http/status_data.py builds it).

Who may look: http/access.py. Translation only: the snapshot comes from status_data.
"""

from __future__ import annotations

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from kacheryfs import metrics
from kacheryfs.http.access import Access
from kacheryfs.http.errors import error_response
from kacheryfs.http.status_data import StatusSource
from kacheryfs.status_view import human_bytes

POLL_MS = 1000
_templates = jinja2.Environment(loader=jinja2.PackageLoader("kacheryfs.http", "templates"),
                                autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined)
_templates.filters["bytes"] = human_bytes


def _refused(request: Request) -> Response | None:
    access: Access = request.app.state.access
    return None if access.may_view(request) else error_response(403, access.refusal())


async def page(request: Request) -> Response:
    if (refused := _refused(request)) is not None:
        return refused
    status: StatusSource = request.app.state.status
    snapshot = await status.snapshot()
    html = _templates.get_template("status.html").render(s=snapshot, poll_ms=POLL_MS)
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


async def status_json(request: Request) -> Response:
    if (refused := _refused(request)) is not None:
        return refused
    status: StatusSource = request.app.state.status
    return JSONResponse(await status.snapshot(), headers={"Cache-Control": "no-store"})


async def metrics_endpoint(request: Request) -> Response:
    if (refused := _refused(request)) is not None:
        return refused
    status: StatusSource = request.app.state.status
    await status.totals()            # storage gauges from the running totals (one query)
    return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)


ROUTES = [
    Route("/", page, methods=["GET"]),
    Route("/ui/", page, methods=["GET"]),
    Route("/ui/status.json", status_json, methods=["GET"]),
    Route("/metrics", metrics_endpoint, methods=["GET"]),
]

