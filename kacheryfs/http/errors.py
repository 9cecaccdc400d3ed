"""The HTTP edge's one error policy (client and peer API): an exception -> a status and a kind.

    kind            error                                   status
    invalid         UsageError (incl. a body that fails      400
                    its schema, http/schemas.py)
    auth            AuthError                                403
    not-found       NotFoundError                            404
    integrity       IntegrityError                           502   sources served bad bytes
    source-failed   TransferError                            502   every source failed
    local-storage   LocalStorageError, or an OSError         507   this node's disk refused
                    ENOSPC/EDQUOT/EROFS/EIO from a write
    error           other KacheryError                       500
    internal        anything else                            500   "internal error", traceback
                                                                   logged, never sent

An ExceptionGroup (a trio nursery's) is judged by its first deliberate error. Bodies are
`{"success": false, "error": <message>, "kind": <kind>}`; /store and /loadFile keep the shapes the
original client needs (docs/PROTOCOL.md 4.1, 4.3) but use the same kinds.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse

from kachery_client.errors import (
    AuthError,
    IntegrityError,
    KacheryError,
    LocalStorageError,
    NotFoundError,
    TransferError,
    UsageError,
)
from kachery_client.storage_errors import local_storage_error
from kacheryfs.exception_groups import first_error

log = logging.getLogger(__name__)

INTERNAL = "internal error (see the node's log)"
_POLICY: tuple[tuple[type[KacheryError], str, int], ...] = (
    (UsageError, "invalid", 400),
    (AuthError, "auth", 403),
    (NotFoundError, "not-found", 404),
    (IntegrityError, "integrity", 502),
    (TransferError, "source-failed", 502),
    (LocalStorageError, "local-storage", 507),
    (KacheryError, "error", 500),
)


def deliberate(error: BaseException) -> KacheryError | None:
    """The KacheryError an exception (or group) stands for; None for an unexpected one."""
    error = first_error(error)
    if isinstance(error, KacheryError):
        return error
    return local_storage_error(error)


def kind_and_status(error: KacheryError | None) -> tuple[str, int]:
    for cls, kind, status in _POLICY:
        if isinstance(error, cls):
            return kind, status
    return "internal", 500


def error_response(status: int, message: str, kind: str = "invalid") -> JSONResponse:
    return JSONResponse({"success": False, "error": message, "kind": kind}, status_code=status)


def response_for(error: BaseException, request: Request) -> JSONResponse:
    """The one translation of an exception into an HTTP answer."""
    known = deliberate(error)
    kind, status = kind_and_status(known)
    if known is None:
        log.error("%s failed", request.url.path, exc_info=error)
        return error_response(status, INTERNAL, kind)
    return error_response(status, str(known), kind)
