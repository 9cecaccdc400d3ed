"""HTTP handlers for tasks (docs/PROTOCOL.md section 10) over the node's TaskHub.

JSON endpoints (in client_routes.JSON_ROUTES, client-auth protected):
    /task/registerTaskFunctions, /task/requestTask, /task/waitForTaskResult,
    /task/updateTaskStatus, /task/createSignedTaskResultUploadUrl
Result URLs (RESULT_ROUTES; exempt from the client auth header, the URL carries its own token,
because kachery-client 1.2.0 PUTs and GETs these URLs without its auth header):
    PUT /taskResults/<channel>/aa/bb/cc/<taskHash>?kind=&size=&expires=&signature=
        only with a signature the node issued through createSignedTaskResultUploadUrl (which needs
        the client auth code); the body must have exactly the signed size and be JSON.
    GET /taskResults/<channel>/aa/bb/cc/<taskHash>?token=<read token>
        only with the read token handed out in taskResultUrl (again only to authenticated
        clients). Tokens are HMACs under a key derived from the node's private key, so URLs of
        stored pure-calculation results stay valid across restarts. Extra query parameters (the
        original client's `cb=$...` cache buster) are ignored.
URLs name this node as the client reached it (the request's Host), e.g. http://127.0.0.1:<port>.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kachery_client.errors import AuthError, KacheryError, NotFoundError, UsageError
from kachery_client.uri import check_sha1
from kacheryfs.node import Node
from kacheryfs.tasks.hub import check_name
from kacheryfs.tasks.urls import RESULT_PATH_PREFIX

# The base URL the current JSON request reached us by; set by client_routes for every JSON request.
request_base_url: ContextVar[str] = ContextVar("request_base_url", default="http://127.0.0.1")
MAX_RESULT_BYTES = 256 * 1024 * 1024
DEFAULT_REQUEST_WAIT_MSEC = 1000


def _msec(body: dict[str, Any], name: str, default: float) -> float:
    value = body.get(name, default)
    if value is None:
        value = default
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise UsageError(f"{name} must be a non-negative number of milliseconds")
    return float(value) / 1000.0


def _str(body: dict[str, Any], name: str, required: bool = True) -> Any:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise UsageError(f"field {name!r} must be a string")
    return value


async def register_task_functions(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    functions = body.get("taskFunctions")
    if not isinstance(functions, list):
        raise UsageError("taskFunctions must be a list")
    regs = []
    for f in functions:
        if not isinstance(f, dict):
            raise UsageError("each of taskFunctions must be an object")
        regs.append((_str(f, "channelName"), _str(f, "taskFunctionId"), _str(f, "taskFunctionType")))
    tasks = await node.tasks.register(functions=regs, backend_id=_str(body, "backendId", False),
                                      session_id=_str(body, "backendSessionId", False),
                                      timeout=_msec(body, "timeoutMsec", 0))
    return {"success": True, "requestedTasks": tasks}


async def request_task(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    if "taskKwargs" not in body:
        raise UsageError("missing field 'taskKwargs'")
    return await node.tasks.request(
        base_url=request_base_url.get(), channel=_str(body, "channelName"),
        function_id=_str(body, "taskFunctionId"), function_type=_str(body, "taskFunctionType"), kwargs=body.get("taskKwargs"),
        backend_id=_str(body, "backendId", False), timeout=_msec(body, "timeoutMsec", DEFAULT_REQUEST_WAIT_MSEC))


async def wait_for_task_result(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    # taskResultUrl is ignored: the original client sends null for actions (docs/PROTOCOL.md section 12)
    return await node.tasks.wait(base_url=request_base_url.get(), channel=_str(body, "channelName"),
                                 task_id=_str(body, "taskId"), timeout=_msec(body, "timeoutMsec", 0))


async def update_task_status(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    # extension: "resultJson" (the result's JSON text) instead of a PUT to a signed URL
    result = _str(body, "resultJson", False)
    await node.tasks.update_status(channel=_str(body, "channelName"), task_id=_str(body, "taskId"),
                                   status=_str(body, "status"), error_message=_str(body, "errorMessage", False),
                                   result=None if result is None else result.encode())
    return {"success": True}


async def create_signed_task_result_upload_url(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    size = body.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise UsageError("size must be a non-negative integer")
    url = node.tasks.create_upload_url(base_url=request_base_url.get(), channel=_str(body, "channelName"),
                                       task_hash=_str(body, "taskId"), size=size)
    return {"success": True, "signedUrl": url}


JSON_HANDLERS = {
    "/task/registerTaskFunctions": register_task_functions,
    "/task/requestTask": request_task,
    "/task/waitForTaskResult": wait_for_task_result,
    "/task/updateTaskStatus": update_task_status,
    "/task/createSignedTaskResultUploadUrl": create_signed_task_result_upload_url,
}


# ---- result URLs --------------------------------------------------------------------------

def _result_location(request: Request) -> tuple[str, str]:
    p = request.path_params
    channel, task_hash = check_name(p["channel"], "channel name"), check_sha1(p["task_hash"])
    if (p["a"], p["b"], p["c"]) != (task_hash[0:2], task_hash[2:4], task_hash[4:6]):
        raise NotFoundError("malformed task result path")
    return channel, task_hash


def _error(e: KacheryError) -> Response:
    status = 403 if isinstance(e, AuthError) else 404 if isinstance(e, NotFoundError) \
        else 400 if isinstance(e, UsageError) else 500
    return JSONResponse({"success": False, "error": str(e)}, status_code=status)


async def put_task_result(request: Request) -> Response:
    node: Node = request.app.state.node
    try:
        channel, task_hash = _result_location(request)
        kind, size = node.tasks.urls.check_upload(channel, task_hash, dict(request.query_params))
        length = request.headers.get("content-length")
        if length is None or not length.isdigit() or int(length) != size or size > MAX_RESULT_BYTES:
            raise UsageError(f"the upload must be exactly the signed {size} bytes, with a Content-Length")
        data = await request.body()
        if len(data) != size:
            raise UsageError(f"received {len(data)} bytes, the URL was signed for {size}")
        await node.tasks.results.put(channel, task_hash, kind, data)
    except ClientDisconnect:
        return JSONResponse({"success": False, "error": "the client went away mid-body"}, status_code=400)
    except KacheryError as e:
        return _error(e)
    return JSONResponse({"success": True})


async def get_task_result(request: Request) -> Response:
    node: Node = request.app.state.node
    try:
        channel, task_hash = _result_location(request)
        node.tasks.urls.check_read(channel, task_hash, request.query_params.get("token", ""))
        data = await node.tasks.results.read(channel, task_hash)
    except KacheryError as e:
        return _error(e)
    return Response(data, media_type="application/json")


_PATH = RESULT_PATH_PREFIX + "{channel}/{a}/{b}/{c}/{task_hash}"
RESULT_ROUTES = [Route(_PATH, put_task_result, methods=["PUT"]), Route(_PATH, get_task_result, methods=["GET"])]
