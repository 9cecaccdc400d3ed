"""What both HTTP adapters (the client API, client_routes.py, and the peer API, peer_routes.py) share:
reading a JSON object body, and mapping errors to statuses, once:

    UsageError -> 400, AuthError -> 403, NotFoundError -> 404, other KacheryError -> 500,
    anything else -> 500 "internal error" (logged with its traceback, never sent).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from kachery_client.errors import AuthError, KacheryError, NotFoundError, UsageError

log = logging.getLogger(__name__)


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"success": False, "error": message}, status_code=status)


def parse_json_object(raw: bytes, max_bytes: int) -> dict[str, Any]:
    if len(raw) > max_bytes:
        raise UsageError("request body too large")
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        raise UsageError("request body is not JSON") from None
    if not isinstance(body, dict):
        raise UsageError("request body must be a JSON object")
    return body


def response_for(error: Exception, request: Request) -> JSONResponse:
    """The one translation of an exception into an HTTP answer."""
    for kind, status in ((UsageError, 400), (AuthError, 403), (NotFoundError, 404), (KacheryError, 500)):
        if isinstance(error, kind):
            return error_response(status, str(error))
    log.error("%s failed", request.url.path, exc_info=error)
    return error_response(500, "internal error (see the node's log)")
