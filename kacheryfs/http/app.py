"""The client API's ASGI app: routes from client_routes, feed_routes, task_routes and peer_routes,
wrapped in the client auth check.

Translation only. Errors are mapped once, by http.errors.response_for:
    UsageError -> 400, AuthError -> 403, NotFoundError -> 404, other KacheryError -> 500,
    anything else -> 500 "internal error" (logged with its traceback, never sent).
Auth (docs/PROTOCOL.md section 2) is a pure ASGI wrapper around the app: every request but GET /probe
must carry the current or previous client auth code, else 403 with the original's texts. The status
page, /metrics and the gateway (GET and HEAD only, access.is_open_read) pass without it and apply
their own rule (access.py). Outermost, request_metrics.RequestMetrics counts every answer by route
template.
"""

from __future__ import annotations

from typing import Any

import trio
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from kacheryfs.http import gateway, status_page
from kacheryfs.http.access import Access, is_open_read
from kacheryfs.http.client_routes import (
    JSON_ROUTES,
    download_file_data,
    halt,
    json_endpoint,
    load_file,
    stats,
    store,
)
from kacheryfs.http.data_routes import verify
from kacheryfs.http.peer_routes import peer_routes
from kacheryfs.http.request_metrics import RequestMetrics
from kacheryfs.http.status_data import StatusSource
from kacheryfs.http.task_routes import RESULT_ROUTES as TASK_RESULT_ROUTES
from kacheryfs.node import Node
from kacheryfs.tasks.urls import RESULT_PATH_PREFIX as TASK_RESULT_PREFIX

AUTH_HEADER = b"kachery-client-auth-code"
EXTRA_CODES_KEY = "_other_client_auth_codes"
EXTRA_CODES_CACHE_SECONDS = 5.0

class ClientAuthWrapper:
    """Every request but GET /probe carries a valid client auth code (docs/PROTOCOL.md section 2)."""

    def __init__(self, app: Any, node: Node):
        self.app = app
        self.node = node
        self._extra_codes: set[str] = set()
        self._extra_read_at = -float("inf")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.node.stats.requests += 1
            # Peer requests carry node signatures instead (peer_routes.py checks them); task
            # result URLs carry their own token (kachery-client 1.2.0 sends no auth header there).
            if not (scope["method"] == "GET" and scope["path"] == "/probe") and not is_open_read(scope) \
                    and not scope["path"].startswith(("/peer/", TASK_RESULT_PREFIX)):
                code = dict(scope["headers"]).get(AUTH_HEADER)
                message = None
                if code is None:
                    message = ("Missing client auth code in daemon request. "
                               "You probably need to upgrade kachery-daemon or kachery.")
                elif not (self.node.auth.accepts(code.decode("latin-1"))
                          or await self._is_extra_code(code.decode("latin-1"))):
                    message = "Incorrect or invalid client authorization code."
                if message is not None:
                    await PlainTextResponse(message, status_code=403, media_type="text/html")(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _is_extra_code(self, code: str) -> bool:
        """Codes an operator lists in the mutable "_other_client_auth_codes" (docs/PROTOCOL.md section 2),
        for clients on other machines, which cannot read the rotating client-auth file."""
        now = trio.current_time()
        if now - self._extra_read_at > EXTRA_CODES_CACHE_SECONDS:
            found, value = await trio.to_thread.run_sync(self.node.mutables.get, EXTRA_CODES_KEY)
            self._extra_codes = {c for c in value if isinstance(c, str) and len(c) >= 8} \
                if found and isinstance(value, list) else set()
            self._extra_read_at = now
        return code in self._extra_codes


def make_app(node: Node, halt_event: trio.Event, extra_routes: list[Route] | None = None,
             host: str = "127.0.0.1") -> Any:
    """The ASGI app; GET /halt sets `halt_event`, which asks the daemon to stop. `host` is the
    address the node listens on: it decides who may see the status page, metrics and gateway."""
    routes = [Route(path, json_endpoint(h), methods=["POST"]) for path, h in JSON_ROUTES.items()]
    routes += [
        Route("/probe", json_endpoint(JSON_ROUTES["/probe"]), methods=["GET"]),
        Route("/store", store, methods=["POST"]),
        Route("/loadFile", load_file, methods=["POST"]),
        Route("/downloadFileData", download_file_data, methods=["POST"]),
        Route("/stats", stats, methods=["GET"]),
        Route("/halt", halt, methods=["GET"]),
        Route("/kacheryfs/verify", verify, methods=["POST"]),
        *peer_routes(),
        *TASK_RESULT_ROUTES,
        *status_page.ROUTES,
        *gateway.ROUTES,
        *(extra_routes or []),
    ]
    app = Starlette(routes=routes)
    app.state.node = node
    app.state.halt = halt_event
    app.state.access = Access(node, host)
    app.state.status = StatusSource(node)
    return RequestMetrics(ClientAuthWrapper(app, node))
