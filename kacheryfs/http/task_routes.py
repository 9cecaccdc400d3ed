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

from kachery_client.errors import NotFoundError, UsageError
from kachery_client.uri import check_sha1
from kacheryfs.config import is_channel_name
from kacheryfs.http import schemas as s
from kacheryfs.http.errors import error_response, response_for
from kacheryfs.node import Node
from kacheryfs.tasks.urls import RESULT_PATH_PREFIX

# The base URL the current JSON request reached us by; set by client_routes for every JSON request.
request_base_url: ContextVar[str] = ContextVar("request_base_url", default="http://127.0.0.1")
MAX_RESULT_BYTES = 256 * 1024 * 1024
DEFAULT_REQUEST_WAIT_MSEC = 1000


def _seconds(msec: float | None, default_msec: float = 0) -> float:
    return (default_msec if msec is None else msec) / 1000.0


async def register_task_functions(node: Node, body: s.RegisterTaskFunctions) -> dict[str, Any]:
    regs: list[tuple[str, str, str]] = [(f.channelName, f.taskFunctionId, f.taskFunctionType)
                                        for f in body.taskFunctions]
    tasks = await node.tasks.register(functions=regs, backend_id=body.backendId,
                                      session_id=body.backendSessionId, timeout=_seconds(body.timeoutMsec))
    return {"success": True, "requestedTasks": tasks}


async def request_task(node: Node, body: s.RequestTask) -> dict[str, Any]:
    return await node.tasks.request(
        base_url=request_base_url.get(), channel=body.channelName, function_id=body.taskFunctionId,
        function_type=body.taskFunctionType, kwargs=body.taskKwargs, backend_id=body.backendId,
        timeout=_seconds(body.timeoutMsec, DEFAULT_REQUEST_WAIT_MSEC))


async def wait_for_task_result(node: Node, body: s.WaitForTaskResult) -> dict[str, Any]:
    # taskResultUrl is ignored: the original client sends null for actions (docs/PROTOCOL.md section 12)
    return await node.tasks.wait(base_url=request_base_url.get(), channel=body.channelName,
                                 task_id=body.taskId, timeout=_seconds(body.timeoutMsec))


async def update_task_status(node: Node, body: s.UpdateTaskStatus) -> dict[str, Any]:
    # extension: "resultJson" (the result's JSON text) instead of a PUT to a signed URL
    result = body.resultJson
    await node.tasks.update_status(channel=body.channelName, task_id=body.taskId, status=body.status,
                                   error_message=body.errorMessage,
                                   result=None if result is None else result.encode())
    return {"success": True}


async def create_signed_task_result_upload_url(node: Node, body: s.CreateTaskResultUploadUrl) -> dict[str, Any]:
    url = node.tasks.create_upload_url(base_url=request_base_url.get(), channel=body.channelName,
                                       task_hash=body.taskId, size=body.size)
    return {"success": True, "signedUrl": url}


JSON_HANDLERS: dict[str, tuple[type, Any]] = {
    "/task/registerTaskFunctions": (s.RegisterTaskFunctions, register_task_functions),
    "/task/requestTask": (s.RequestTask, request_task),
    "/task/waitForTaskResult": (s.WaitForTaskResult, wait_for_task_result),
    "/task/updateTaskStatus": (s.UpdateTaskStatus, update_task_status),
    "/task/createSignedTaskResultUploadUrl": (s.CreateTaskResultUploadUrl, create_signed_task_result_upload_url),
}


# ---- result URLs --------------------------------------------------------------------------

def _result_location(request: Request) -> tuple[str, str]:
    p = request.path_params
    channel, task_hash = p["channel"], check_sha1(p["task_hash"])
    if not is_channel_name(channel):
        raise NotFoundError("malformed task result path")
    if (p["a"], p["b"], p["c"]) != (task_hash[0:2], task_hash[2:4], task_hash[4:6]):
        raise NotFoundError("malformed task result path")
    return channel, task_hash


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
        return error_response(400, "the client went away mid-body")
    except Exception as e:
        return response_for(e, request)
    return JSONResponse({"success": True})


async def get_task_result(request: Request) -> Response:
    node: Node = request.app.state.node
    try:
        channel, task_hash = _result_location(request)
        node.tasks.urls.check_read(channel, task_hash, request.query_params.get("token", ""))
        data = await node.tasks.results.read(channel, task_hash)
    except Exception as e:
        return response_for(e, request)
    return Response(data, media_type="application/json")


_PATH = RESULT_PATH_PREFIX + "{channel}/{a}/{b}/{c}/{task_hash}"
RESULT_ROUTES = [Route(_PATH, put_task_result, methods=["PUT"]), Route(_PATH, get_task_result, methods=["GET"])]
