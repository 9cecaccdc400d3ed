"""The peer API: what other nodes of a channel may ask this one (HTTP adapter, like client_routes.py).

    POST /peer/stat            {"sha1"} -> {"found", "size", "manifestSha1"}   (local blobs only)
    POST /peer/feed/messages   signed feed messages, a long poll (feeds/replication.py)
    POST /peer/task/request, /peer/task/wait   tasks for this node's backends (tasks/forwarding.py);
                               a request carries a one-time "nonce": a replay is refused (403)
    GET  /peer/blob/<sha1>     the blob's bytes; `Range: bytes=a-b` -> 206 with those bytes
    POST /peer/<feature path>  JSON endpoints that feature modules (feeds, tasks) add to
                               PEER_JSON_ROUTES as (schema, `async handler(node, channel, peer_id, body)`)

Every request is signed by the asking node (security/peer_auth.py); a node that is not a member of a
channel this node serves gets 403. A peer serves only what it holds: it never fetches on
another node's behalf, so requests cannot loop between nodes.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kachery_client.errors import KacheryError
from kachery_client.uri import check_sha1
from kacheryfs.feeds.replication import serve_feed_messages
from kacheryfs.feeds.store import check_feed_id, check_subfeed_hash
from kacheryfs.http import schemas as s
from kacheryfs.http.errors import error_response, response_for
from kacheryfs.http.request_metrics import RequestMetrics
from kacheryfs.http.streaming import StreamedResponse
from kacheryfs.node import Node
from kacheryfs.security.peer_auth import check_request
from kacheryfs.tasks.forwarding import serve_task_request, serve_task_wait

log = logging.getLogger(__name__)

PeerHandler = Callable[[Node, str, str, Any], Awaitable[dict[str, Any]]]
MAX_BODY = 64 * 1024 * 1024
BLOCK = 4 << 20
_RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")


async def stat(node: Node, channel: str, peer: str, body: s.PeerStat) -> dict[str, Any]:
    sha1 = check_sha1(body.sha1)
    path = await trio.to_thread.run_sync(node.store.locate, sha1)
    if path is None:
        return {"found": False}
    size = (await trio.to_thread.run_sync(path.stat)).st_size
    if body.needManifest:
        manifest = await node.manifest_for(sha1)
    else:
        # The asker has the manifest: answer the one recorded, never a pass over the whole blob.
        manifest = await trio.to_thread.run_sync(_recorded_manifest, node, sha1)
    return {"found": True, "size": size, "manifestSha1": manifest}


def _recorded_manifest(node: Node, sha1: str) -> str | None:
    known = node.index.manifest_for(sha1)
    return known if known is not None and node.store.has(known) else None


async def feed_messages(node: Node, channel: str, peer: str, body: s.PeerFeedMessages) -> dict[str, Any]:
    return await serve_feed_messages(node.feeds, check_feed_id(body.feedId), check_subfeed_hash(body.subfeedHash),
                                     body.position, body.waitMsec)


async def task_request(node: Node, channel: str, peer: str, body: s.PeerTaskRequest) -> dict[str, Any]:
    node.peer_nonces.accept(peer, body.nonce)         # it may run an action: never twice
    return await serve_task_request(node.tasks, channel, body.functionId, body.functionType, body.kwargs,
                                    body.timeoutMsec)


async def task_wait(node: Node, channel: str, peer: str, body: s.PeerTaskWait) -> dict[str, Any]:
    return await serve_task_wait(node.tasks, channel, body.taskId, body.taskHash, body.functionType,
                                 body.timeoutMsec)


PEER_JSON_ROUTES: dict[str, tuple[type, PeerHandler]] = {
    "/peer/stat": (s.PeerStat, stat),
    "/peer/feed/messages": (s.PeerFeedMessages, feed_messages),
    "/peer/task/request": (s.PeerTaskRequest, task_request),
    "/peer/task/wait": (s.PeerTaskWait, task_wait),
}


def _peer_json_endpoint(route: tuple[type, PeerHandler]) -> Callable[[Request], Awaitable[Response]]:
    schema, handler = route

    async def endpoint(request: Request) -> Response:
        node: Node = request.app.state.node
        try:
            raw = await s.read_body(request, MAX_BODY)
            channel, peer = check_request(node.config, request.headers, "POST", request.url.path, raw)
            body: Any = s.decode(raw, schema, MAX_BODY)
            return JSONResponse(await handler(node, channel, peer, body))
        except Exception as e:
            return response_for(e, request)
    return endpoint


async def blob(request: Request) -> Response:
    node: Node = request.app.state.node
    try:
        check_request(node.config, request.headers, "GET", request.url.path)
        sha1 = check_sha1(request.path_params["sha1"])
    except KacheryError as e:
        return response_for(e, request)
    path = await trio.to_thread.run_sync(node.store.locate, sha1)
    if path is None:
        return error_response(404, f"sha1://{sha1} is not on this node", "not-found")
    size = (await trio.to_thread.run_sync(path.stat)).st_size
    start, end, status = 0, size, 200
    header = request.headers.get("range")
    if header is not None:
        m = _RANGE_RE.match(header.strip())
        if not m:
            return error_response(416, f"unsupported Range {header!r}")
        start = int(m.group(1))
        end = min(int(m.group(2)) + 1, size) if m.group(2) else size
        if start >= end:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
        status = 206

    async def blocks() -> AsyncIterator[bytes]:
        with open(path, "rb") as f:
            pos = start
            while pos < end:
                data = await trio.to_thread.run_sync(os.pread, f.fileno(), min(BLOCK, end - pos), pos)
                if not data:
                    return
                pos += len(data)
                node.stats.bytes_sent += len(data)
                if node.peer_serve_limit is not None:
                    await node.peer_serve_limit.take(len(data))
                yield data

    headers = {"Content-Length": str(end - start), "Accept-Ranges": "bytes"}
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    return StreamedResponse(blocks(), status_code=status, headers=headers,
                             media_type="application/octet-stream")


def peer_routes() -> list[Route]:
    routes = [Route(path, _peer_json_endpoint(h), methods=["POST"]) for path, h in PEER_JSON_ROUTES.items()]
    routes.append(Route("/peer/blob/{sha1}", blob, methods=["GET"]))
    return routes


def make_peer_app(node: Node) -> Any:
    """The peer API alone, for the `peer_listen` address (the client API stays on loopback)."""
    from starlette.applications import Starlette
    app = Starlette(routes=peer_routes())
    app.state.node = node
    return RequestMetrics(app)
