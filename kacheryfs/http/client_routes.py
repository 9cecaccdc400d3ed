"""Handlers of the client API (docs/PROTOCOL.md section 4, plus our extensions): parse, call the Node, answer.

JSON endpoints are `async handler(node, body) -> dict` in JSON_ROUTES; the feed and task route
modules add theirs to that table. Streaming endpoints (/store, /loadFile, /downloadFileData) take
the Request. Errors are mapped once, by http.errors.response_for.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import trio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from kachery_client.errors import KacheryError, NotFoundError, UsageError
from kachery_client.store import BlobWriter
from kachery_client.uri import check_name, check_sha1
from kacheryfs.content.fetcher import NotOnAnySource
from kacheryfs.feeds.mutables import is_private_key
from kacheryfs.http.data_routes import DATA_ROUTES
from kacheryfs.http.errors import error_response, parse_json_object, response_for
from kacheryfs.http.feed_routes import FEED_ROUTES
from kacheryfs.http.task_routes import JSON_HANDLERS as TASK_HANDLERS
from kacheryfs.http.task_routes import request_base_url
from kacheryfs.node import VERSION, Node

log = logging.getLogger(__name__)

MAX_JSON_BODY = 256 * 1024 * 1024       # the original's 100 kB limit was a defect (8)
STORE_BATCH = 4 * 1024 * 1024           # bytes gathered before each hand-off to a thread
STORE_QUEUE = 2                         # batches waiting for the writer thread
PROGRESS_INTERVAL = 2.0
_CHANNEL_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")

Handler = Callable[[Node, dict[str, Any]], Awaitable[dict[str, Any]]]

# ---- body validation ----------------------------------------------------------------------

def field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], required: bool = True) -> Any:
    value = body.get(name)
    if value is None:
        if required:
            raise UsageError(f"missing field {name!r}")
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UsageError(f"field {name!r} has the wrong type")
    return value


def file_key_sha1(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    key = field(body, "fileKey", dict)
    return check_sha1(field(key, "sha1", str)), key


# ---- JSON endpoints -----------------------------------------------------------------------

async def probe(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    return {"success": True, "daemonVersion": VERSION, "nodeId": node.node_id,
            "kacheryStorageDir": str(node.storage_dir)}


async def link_file(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    path = field(body, "localFilePath", str)
    size = field(body, "size", int)
    mtime = field(body, "mtime", (int, float))
    if not path.startswith("/"):
        raise UsageError(f"localFilePath must be absolute: {path!r}")
    blob = await trio.to_thread.run_sync(lambda: node.store.link(path, size, float(mtime)))
    for recorded in (blob.sha1, blob.manifest_sha1):
        if recorded:
            await trio.to_thread.run_sync(node.lifecycle.stored, recorded)
    return {"success": True, "error": None, "sha1": blob.sha1, "manifestSha1": blob.manifest_sha1}


async def added(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    """Ours: a client sharing the storage dir added blobs itself ({"blobs": [{"sha1", "name",
    "manifestSha1"}]}, or one {"sha1", "name"}): record their names and manifests."""
    notices = body["blobs"] if "blobs" in body else [body]
    if not isinstance(notices, list) or not all(isinstance(n, dict) for n in notices):
        raise UsageError("blobs must be a list of objects")
    missing = []
    for notice in notices:
        sha1 = check_sha1(field(notice, "sha1", str))
        manifest = field(notice, "manifestSha1", str, required=False)
        if not await node.adopt(sha1, field(notice, "name", str, required=False),
                                check_sha1(manifest) if manifest else None):
            missing.append(sha1)
            continue
        node.stats.blobs_stored += 1
    if missing:
        raise NotFoundError(f"not in the store: {', '.join('sha1://' + m for m in missing)}")
    return {"success": True}


async def upload(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    """Ours: put a stored blob into a channel's bucket (`kachery-store --upload CHANNEL`)."""
    sha1 = check_sha1(field(body, "sha1", str))
    uploaded = await node.upload(sha1, field(body, "channel", str))
    return {"success": True, "uploaded": uploaded}


async def mutable_get(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    key = body.get("key")
    if is_private_key(key):
        raise UsageError("feed private keys are not readable through the API")
    found, value = await trio.to_thread.run_sync(node.mutables.get, key)
    return {"success": True, "found": found, "value": value if found else ""}


async def mutable_set(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    update = body.get("update", True)
    if not isinstance(update, bool):
        raise UsageError("field 'update' must be true or false")
    if is_private_key(body.get("key")):
        raise UsageError("feed private keys are not writable through the API")
    ok = await trio.to_thread.run_sync(node.mutables.set, body.get("key"), body.get("value"), update)
    return {"success": ok}


async def mutable_delete(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    if is_private_key(body.get("key")):
        raise UsageError("feed private keys are not writable through the API")
    return {"success": await trio.to_thread.run_sync(node.mutables.delete, body.get("key"))}


def not_supported(feature: str) -> Handler:
    async def handler(node: Node, body: dict[str, Any]) -> dict[str, Any]:
        raise KacheryError(f"{feature} are not supported by this node yet")
    return handler


JSON_ROUTES: dict[str, Handler] = {
    "/probe": probe,
    "/linkFile": link_file,
    "/kacheryfs/added": added,
    "/kacheryfs/upload": upload,
    "/mutable/get": mutable_get,
    "/mutable/set": mutable_set,
    "/mutable/delete": mutable_delete,
    "/createSignedFileUploadUrl": not_supported("bucket uploads through signed URLs"),
    **FEED_ROUTES,
    **TASK_HANDLERS,
    **DATA_ROUTES,
}


def json_endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        node: Node = request.app.state.node
        try:
            body = parse_json_object(await request.body(), MAX_JSON_BODY)
            request_base_url.set(str(request.base_url).rstrip("/"))    # for handlers that hand out URLs
            return JSONResponse(await handler(node, body))
        except Exception as e:
            return response_for(e, request)
    return endpoint


# ---- streaming endpoints ------------------------------------------------------------------

async def store(request: Request) -> Response:
    """POST /store: the raw body, hashed while it arrives; never parsed as JSON (defect 9)."""
    node: Node = request.app.state.node
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        return PlainTextResponse("Missing Content-Length in header", status_code=411)
    name = request.headers.get("x-kachery-name")
    try:
        if name is not None:
            check_name(name)
    except UsageError as e:
        return error_response(400, str(e))
    writer: BlobWriter = await trio.to_thread.run_sync(node.store.writer)
    try:
        await _receive_into(request, writer)
        if writer.size != int(length):
            raise UsageError(f"received {writer.size} bytes, Content-Length said {length}")
        blob = await trio.to_thread.run_sync(writer.commit)
    except ClientDisconnect:
        return error_response(400, "the client went away mid-body")
    except (UsageError, KacheryError) as e:
        return JSONResponse({"success": False, "error": str(e), "sha1": None, "manifestSha1": None})
    finally:
        writer.abort()      # no-op after commit; removes the temp file otherwise (incl. cancellation)
    node.stats.bytes_received += blob.size
    node.stats.blobs_stored += 1
    await node.record_stored(blob.sha1, name, blob.manifest_sha1)
    return JSONResponse({"success": True, "error": None, "sha1": blob.sha1, "manifestSha1": blob.manifest_sha1})


async def _receive_into(request: Request, writer: BlobWriter) -> None:
    """Body -> writer, receiving the next batch while a worker thread hashes and writes the last
    (at most STORE_QUEUE batches in flight: memory stays bounded)."""
    send, receive = trio.open_memory_channel[bytearray](STORE_QUEUE)

    async def write_batches() -> None:
        async with receive:
            async for batch in receive:
                await trio.to_thread.run_sync(writer.write, batch)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write_batches)
        async with send:
            batch = bytearray()
            async for chunk in request.stream():
                batch += chunk
                if len(batch) >= STORE_BATCH:
                    await send.send(batch)
                    batch = bytearray()
            if batch:
                await send.send(batch)


def _frame(obj: dict[str, Any]) -> bytes:
    data = json.dumps(obj, separators=(",", ":")).encode()
    return str(len(data)).encode() + b"#" + data


async def load_file(request: Request) -> Response:
    """POST /loadFile: make a blob local, answering with a length-prefixed frame stream (4.3)."""
    node: Node = request.app.state.node
    try:
        body = json.loads(await request.body())
        sha1, key = file_key_sha1(body)
        manifest = key.get("manifestSha1")
        manifest = check_sha1(manifest) if manifest else None
        channel = body.get("channelName")
        if channel is not None and not (isinstance(channel, str) and 3 <= len(channel) <= 40
                                        and _CHANNEL_RE.match(channel)):
            raise UsageError("invalid channelName")
        chunk_of = key.get("chunkOf")
    except (ValueError, UsageError, AttributeError):
        return Response(_frame({"type": "error", "error": "Invalid api load file request"}))

    async def frames() -> AsyncIterator[bytes]:
        yield _frame({"type": "progress", "bytesLoaded": 0, "bytesTotal": 0})
        last = time.monotonic()
        pending: list[tuple[int, int]] = []

        def progress(done: int, total: int) -> None:
            pending.append((done, total))

        try:
            if chunk_of and await trio.to_thread.run_sync(node.store.locate, sha1) is None:
                path = await _slice_chunk(node, sha1, chunk_of)
            else:
                path = await node.ensure(sha1, manifest, progress)
        except KacheryError as e:
            message = "Unable to find file" if isinstance(e, NotFoundError) else str(e)
            if isinstance(e, NotOnAnySource):       # the prefix old clients know, then who was asked
                message += f": {e}"
            yield _frame({"type": "error", "error": message})
            return
        if pending and time.monotonic() - last >= 0:
            done, total = pending[-1]
            yield _frame({"type": "progress", "bytesLoaded": done, "bytesTotal": total})
        yield _frame({"type": "finished", "localFilePath": str(path)})

    return StreamingResponse(frames())


async def _slice_chunk(node: Node, sha1: str, chunk_of: Any) -> Any:
    """A chunk asked for by its parent's range (fixes the original's defect 15)."""
    if not isinstance(chunk_of, dict):
        raise UsageError("invalid chunkOf")
    parent = check_sha1(field(field(chunk_of, "fileKey", dict), "sha1", str))
    start, end = field(chunk_of, "startByte", int), field(chunk_of, "endByte", int)
    parent_path = await node.ensure(parent)

    def copy_range() -> Any:
        with open(parent_path, "rb") as f, node.store.writer(expected_sha1=sha1) as w:
            f.seek(start)
            w.write(f.read(end - start))
            w.commit()
        return node.store.path_for(sha1)
    return await trio.to_thread.run_sync(copy_range)


async def download_file_data(request: Request) -> Response:
    """POST /downloadFileData: raw bytes [startByte, endByte) of a stored blob (4.4)."""
    node: Node = request.app.state.node
    try:
        body = json.loads(await request.body())
        sha1, _ = file_key_sha1(body)
        start, end = body.get("startByte"), body.get("endByte")
        path = await trio.to_thread.run_sync(node.store.require, sha1)
        size = path.stat().st_size
        if start is None or end is None:
            start, end = 0, size
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= size):
            raise UsageError(f"invalid byte range [{start}, {end}) for a file of {size} bytes")
    except ValueError:
        return error_response(400, "request body is not JSON")
    except UsageError as e:
        return error_response(400, str(e))
    except NotFoundError as e:
        return error_response(404, str(e))

    async def blocks() -> AsyncIterator[bytes]:
        with open(path, "rb") as f:
            f.seek(start)
            left = end - start
            while left > 0:
                block = await trio.to_thread.run_sync(f.read, min(left, 4 << 20))
                if not block:
                    break
                left -= len(block)
                node.stats.bytes_sent += len(block)
                yield block

    return StreamingResponse(blocks(), headers={"Content-Length": str(end - start)},
                             media_type="application/octet-stream")


async def stats(request: Request) -> Response:
    node: Node = request.app.state.node
    s = node.stats
    return JSONResponse({"success": True, "format": "json", "stats": {
        "nodeId": node.node_id, "totalBytesSent": s.bytes_sent, "totalBytesReceived": s.bytes_received,
        "totalMessagesSent": 0, "storageDir": str(node.storage_dir), "requests": s.requests,
        "blobsStored": s.blobs_stored,
        "channels": [{"name": c.name, "roles": list(c.roles), "peers": len(c.peers), "members": len(c.members),
                      "bucket": c.bucket.describe() if c.bucket else None} for c in node.config.channels]}})


async def halt(request: Request) -> Response:
    request.app.state.halt.set()
    return JSONResponse({"success": True})
