"""Handlers of the client API (docs/PROTOCOL.md section 4, plus our extensions): parse, call the Node, answer.

JSON endpoints are `async handler(node, body) -> dict` in JSON_ROUTES; the feed and task route
modules add theirs to that table. Streaming endpoints (/store, /loadFile, /downloadFileData) take
the Request. Errors are mapped once, by http.errors.response_for.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import trio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from kachery_client.errors import NotFoundError, UsageError
from kachery_client.storage_errors import storage_errors
from kachery_client.store import BlobWriter
from kachery_client.uri import check_name, check_sha1
from kacheryfs import metrics
from kacheryfs.content.fetcher import Transfer
from kacheryfs.exception_groups import first_error
from kacheryfs.feeds.mutables import is_private_key
from kacheryfs.http import schemas as s
from kacheryfs.http.data_routes import DATA_ROUTES
from kacheryfs.http.disconnect import ClientGone, unless_disconnected
from kacheryfs.http.errors import INTERNAL, deliberate, error_response, kind_and_status, response_for
from kacheryfs.http.feed_routes import FEED_ROUTES
from kacheryfs.http.range_response import RangeResponse
from kacheryfs.http.streaming import StreamedResponse
from kacheryfs.http.task_routes import JSON_HANDLERS as TASK_HANDLERS
from kacheryfs.http.task_routes import request_base_url
from kacheryfs.node import VERSION, Node

log = logging.getLogger(__name__)

STORE_BATCH = 4 * 1024 * 1024           # bytes gathered before each hand-off to a thread
STORE_QUEUE = 2                         # batches waiting for the writer thread
SMALL_STORE = 1024 * 1024               # bodies up to this size are stored in one thread hop
PROGRESS_INTERVAL = 2.0

Handler = Callable[[Node, Any], Awaitable[dict[str, Any]]]
Route = tuple[type, Handler]            # (the body's schema, the handler of the decoded body)


# ---- JSON endpoints -----------------------------------------------------------------------

async def probe(node: Node, body: s.AnyObject) -> dict[str, Any]:
    return {"success": True, "daemonVersion": VERSION, "nodeId": node.node_id,
            "kacheryStorageDir": str(node.storage_dir)}


async def link_file(node: Node, body: s.LinkFile) -> dict[str, Any]:
    path = body.localFilePath
    if not path.startswith("/"):
        raise UsageError(f"localFilePath must be absolute: {path!r}")
    with storage_errors():
        blob = await trio.to_thread.run_sync(lambda: node.store.link(path, body.size, body.mtime))
    for recorded in (blob.sha1, blob.manifest_sha1):
        if recorded:
            await trio.to_thread.run_sync(node.lifecycle.stored, recorded)
    return {"success": True, "error": None, "sha1": blob.sha1, "manifestSha1": blob.manifest_sha1}


async def added(node: Node, body: s.Added) -> dict[str, Any]:
    """Ours: a client sharing the storage dir added blobs itself ({"blobs": [{"sha1", "name",
    "manifestSha1"}]}, or one {"sha1", "name"}): record their names and manifests."""
    missing = []
    for notice in body.notices():
        sha1 = check_sha1(notice.sha1)
        manifest = check_sha1(notice.manifestSha1) if notice.manifestSha1 else None
        if not await node.adopt(sha1, notice.name, manifest):
            missing.append(sha1)
            continue
        node.stats.blobs_stored += 1
    if missing:
        raise NotFoundError(f"not in the store: {', '.join('sha1://' + m for m in missing)}")
    return {"success": True}


async def upload(node: Node, body: s.Upload) -> dict[str, Any]:
    """Ours: put a stored blob into a channel's bucket (`kachery-store --upload CHANNEL`)."""
    return {"success": True, "uploaded": await node.upload(check_sha1(body.sha1), body.channel)}


async def mutable_get(node: Node, body: s.MutableKey) -> dict[str, Any]:
    if is_private_key(body.key):
        raise UsageError("feed private keys are not readable through the API")
    found, value = await trio.to_thread.run_sync(node.mutables.get, body.key)
    return {"success": True, "found": found, "value": value if found else ""}


async def mutable_set(node: Node, body: s.MutableSet) -> dict[str, Any]:
    if is_private_key(body.key):
        raise UsageError("feed private keys are not writable through the API")
    ok = await trio.to_thread.run_sync(node.mutables.set, body.key, body.value, body.update)
    return {"success": ok}


async def mutable_delete(node: Node, body: s.MutableKey) -> dict[str, Any]:
    if is_private_key(body.key):
        raise UsageError("feed private keys are not writable through the API")
    return {"success": await trio.to_thread.run_sync(node.mutables.delete, body.key)}


async def create_signed_file_upload_url(node: Node, body: s.AnyObject) -> dict[str, Any]:
    """Not served: the answer docs/PROTOCOL.md 4.7 asks of a node without the cloud (the client
    raises on it); a 200, since nothing failed on this side (section 15)."""
    return {"success": False, "alreadyUploaded": False,
            "error": "bucket uploads through signed URLs are not supported by this node; "
                     "use kachery-store --upload CHANNEL"}


JSON_ROUTES: dict[str, Route] = {
    "/probe": (s.AnyObject, probe),
    "/linkFile": (s.LinkFile, link_file),
    "/kacheryfs/added": (s.Added, added),
    "/kacheryfs/upload": (s.Upload, upload),
    "/mutable/get": (s.MutableKey, mutable_get),
    "/mutable/set": (s.MutableSet, mutable_set),
    "/mutable/delete": (s.MutableKey, mutable_delete),
    "/createSignedFileUploadUrl": (s.AnyObject, create_signed_file_upload_url),
    **FEED_ROUTES,
    **TASK_HANDLERS,
    **DATA_ROUTES,
}


def json_endpoint(route: Route) -> Callable[[Request], Awaitable[Response]]:
    schema, handler = route

    async def endpoint(request: Request) -> Response:
        node: Node = request.app.state.node
        try:
            body: Any = s.decode(await s.read_body(request), schema)
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
    writer: BlobWriter | None = None
    try:
        with storage_errors():
            if int(length) <= SMALL_STORE:     # store_json and friends: received whole, one thread hop
                body = await request.body()
                if len(body) != int(length):
                    raise UsageError(f"received {len(body)} bytes, Content-Length said {length}")
                blob = await node.store_small(body, name)      # stored and recorded in one hop
            else:
                writer = await trio.to_thread.run_sync(node.store.writer)
                await _receive_into(request, writer)
                if writer.size != int(length):
                    raise UsageError(f"received {writer.size} bytes, Content-Length said {length}")
                blob = await trio.to_thread.run_sync(writer.commit)
                await node.record_stored(blob.sha1, name, blob.manifest_sha1)
    except Exception as e:
        if isinstance(first_error(e), ClientDisconnect):
            return error_response(400, "the client went away mid-body")
        known = deliberate(e)
        if known is None:
            return response_for(e, request)
        kind, status = kind_and_status(known)
        # The original's shape (200, success false) except for a full disk, which says 507.
        return JSONResponse({"success": False, "error": str(known), "sha1": None, "manifestSha1": None,
                             "kind": kind}, status_code=507 if kind == "local-storage" else 200)
    finally:
        if writer is not None:
            writer.abort()  # no-op after commit; removes the temp file otherwise (incl. cancellation)
    node.stats.bytes_received += blob.size
    node.stats.blobs_stored += 1
    metrics.count_stored("http", blob.size)
    return JSONResponse({"success": True, "error": None, "sha1": blob.sha1, "manifestSha1": blob.manifest_sha1})


async def _receive_into(request: Request, writer: BlobWriter) -> None:
    """Body -> writer, receiving the next batch while a worker thread hashes and writes the last
    (at most STORE_QUEUE batches in flight: memory stays bounded)."""
    send, receive = trio.open_memory_channel[bytearray](STORE_QUEUE)

    refused: list[BaseException] = []          # what stopped the writer (a full disk, ...)

    async def write_batches() -> None:
        async with receive:
            async for batch in receive:
                try:
                    await trio.to_thread.run_sync(writer.write, batch)
                except BaseException as e:
                    refused.append(e)
                    raise

    try:
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
    except (trio.BrokenResourceError, BaseExceptionGroup):
        # The body may see only the closed channel: the writer's own error is what happened.
        if refused:
            raise refused[0] from None
        raise


def _frame(obj: dict[str, Any]) -> bytes:
    data = json.dumps(obj, separators=(",", ":")).encode()
    return str(len(data)).encode() + b"#" + data


async def load_file(request: Request) -> Response:
    """POST /loadFile: make a blob local, answering with a length-prefixed frame stream (4.3).

    A body that is not a JSON object is 400; a JSON object that fails the schema is the original's
    error frame "Invalid api load file request" (client 1.2.0 expects it)."""
    node: Node = request.app.state.node
    try:
        obj = s.decode(await s.read_body(request), s.JsonObject)
    except UsageError as e:
        return error_response(400, str(e))
    try:
        body = s.convert(obj, s.LoadFile)
    except UsageError as e:
        return Response(_frame({"type": "error", "kind": "invalid", "detail": str(e),
                                "error": "Invalid api load file request"}))
    sha1, key = check_sha1(body.fileKey.sha1), body.fileKey
    manifest = check_sha1(key.manifestSha1) if key.manifestSha1 else None
    name = _usable_name(body.name)          # ours: the name of the URI asked with

    async def frames() -> AsyncIterator[bytes]:
        yield _frame({"type": "progress", "bytesLoaded": 0, "bytesTotal": 0})
        try:
            if key.chunkOf is not None and await trio.to_thread.run_sync(node.store.locate, sha1) is None:
                path = await _slice_chunk(node, sha1, key.chunkOf)
            else:
                found = await node.load(sha1, manifest)
                if isinstance(found, Transfer):
                    # Held while this request waits: a client that goes away lets it be abandoned.
                    with found.held():
                        while not found.done.is_set():
                            with trio.move_on_after(PROGRESS_INTERVAL):
                                await found.done.wait()
                            if found.ready.is_set() and not found.done.is_set():
                                yield _frame(progress_frame(found))
                    found.raise_error()
                    assert found.path is not None
                    yield _frame(progress_frame(found))
                    await _record_name(node, sha1, name)
                    found = found.path
                path = found
        except Exception as e:
            yield _frame(error_frame(e, sha1))
            return
        yield _frame({"type": "finished", "localFilePath": str(path)})

    return StreamedResponse(frames())


def progress_frame(t: Transfer) -> dict[str, Any]:
    """docs/PROTOCOL.md 4.3, plus ours (section 17): where the bytes come from and how fast."""
    elapsed = max(time.monotonic() - t.started, 1e-3)
    return {"type": "progress", "bytesLoaded": t.bytes_present, "bytesTotal": t.size,
            "source": t.source, "bytesPerSecond": int(t.bytes_present / elapsed)}


def error_frame(e: BaseException, sha1: str) -> dict[str, Any]:
    """An error frame: `kind` (ours, docs/PROTOCOL.md sections 15 and 17.1) before the original's `error`.
    Absent content keeps the original's text (client 1.2.0 shows it) with the node's reason in
    `detail`; other errors carry the reason itself."""
    known = deliberate(e)
    kind, _ = kind_and_status(known)
    if known is None:
        log.error("/loadFile of sha1://%s failed", sha1, exc_info=e)
        return {"type": "error", "kind": kind, "error": INTERNAL}
    if isinstance(known, NotFoundError):
        return {"type": "error", "kind": kind, "error": "Unable to find file", "detail": str(known)}
    return {"type": "error", "kind": kind, "error": str(known)}


async def _record_name(node: Node, sha1: str, name: str | None) -> None:
    """Fetched under this name: the mount lists it (a hint; failing to record it fails nothing)."""
    if name:
        try:
            await node.record_name(sha1, name)
        except Exception as e:
            log.warning("could not record the name %r of sha1://%s: %s", name, sha1, e)


def _usable_name(name: Any) -> str | None:
    """A one-segment valid name, else None (a bad name never fails a load)."""
    if not isinstance(name, str) or not name or "/" in name:
        return None
    try:
        return check_name(name)
    except UsageError:
        return None


async def _slice_chunk(node: Node, sha1: str, chunk_of: s.ChunkOf) -> Any:
    """A chunk asked for by its parent's range (fixes the original's defect 15)."""
    parent = check_sha1(chunk_of.fileKey.sha1)
    start, end = chunk_of.startByte, chunk_of.endByte
    parent_path = await node.ensure(parent)

    def copy_range() -> Any:
        with storage_errors(), open(parent_path, "rb") as f, node.store.writer(expected_sha1=sha1) as w:
            f.seek(start)
            w.write(f.read(end - start))
            w.commit()
            if node.index.get(sha1) is None:     # recorded like every blob the node writes (sha1/ lists it)
                node.lifecycle.stored(sha1)
        return node.store.path_for(sha1)
    return await trio.to_thread.run_sync(copy_range)


async def download_file_data(request: Request) -> Response:
    """POST /downloadFileData: raw bytes [startByte, endByte) of a stored blob (4.4)."""
    node: Node = request.app.state.node
    try:
        body = s.decode(await s.read_body(request), s.DownloadFileData)
        sha1, manifest = check_sha1(body.fileKey.sha1), body.fileKey.manifestSha1
        # Ours (section 17): a range of content still arriving is served once its chunks are
        # verified; clampEnd cuts an end past the file's size, as `kachery-cat` does; follow
        # waits as long as the transfer runs. A client that hangs up stops the wait (and its hold).
        rng = await unless_disconnected(request, lambda: node.open_range(
            sha1, body.startByte, body.endByte, clamp_end=body.clampEnd,
            manifest_sha1=check_sha1(manifest) if manifest else None, follow=body.follow))
    except ClientGone:
        return error_response(400, "the client went away")
    except Exception as e:
        return response_for(e, request)
    try:
        if rng.transfer is not None:        # being fetched for this client: under this name
            await _record_name(node, sha1, _usable_name(body.name))
        return RangeResponse(node, rng)
    except BaseException:
        rng.close()
        raise


async def stats(request: Request) -> Response:
    node: Node = request.app.state.node
    s = node.stats
    return JSONResponse({"success": True, "format": "json", "stats": {
        "nodeId": node.node_id, "totalBytesSent": s.bytes_sent, "totalBytesReceived": s.bytes_received,
        "totalMessagesSent": 0, "storageDir": str(node.storage_dir), "requests": s.requests,
        "blobsStored": s.blobs_stored,
        "channels": [{"name": c.name, "roles": list(c.roles), "peers": len(c.peers), "members": len(c.members),
                      "bucket": c.bucket.describe() if c.bucket else None} for c in node.config.channels],
        **await request.app.state.status.stats_extras()}})


async def halt(request: Request) -> Response:
    request.app.state.halt.set()
    return JSONResponse({"success": True})
