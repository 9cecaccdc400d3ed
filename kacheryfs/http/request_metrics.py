"""kacheryfs_http_requests_total: the outermost ASGI wrapper of both HTTP apps (client API, and the
peer API when it has its own address), counting each answer by method, route template and status.

The route template is Starlette's matched route (`scope["route"]`, e.g. `/sha1/{sha1}/{name:path}`),
never the raw path, so hashes and names never become label values; a request answered before
routing (refused by the client auth check) counts as `unmatched`.
"""

from __future__ import annotations

from typing import Any

from kacheryfs import metrics


class RequestMetrics:
    """kacheryfs_http_requests_total by method, route template (never the raw path) and status."""

    METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"})

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def send_and_note(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")         # set by Starlette's router on a match
            metrics.HTTP_REQUESTS.labels(scope["method"] if scope["method"] in self.METHODS else "other",
                                         getattr(route, "path", "unmatched"), str(status or "none")).inc()
