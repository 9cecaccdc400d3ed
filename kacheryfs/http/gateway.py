"""The HTTP gateway: GET and HEAD /sha1/<hash>/<name>[?manifest=<hash>] (docs/PROTOCOL.md section 16.3).

A browser (or curl) reads stored content by its URI: `sha1://<hash>/<name>` is served at
`/sha1/<hash>/<name>`. Content this node lacks is fetched from the channel's sources (the same
single-flight transfer the mount and /loadFile use), and the answer starts as soon as the size is
known: each block is sent once its chunks are verified (`Transfer.wait_range`), so a large file
streams while it arrives and unverified bytes never leave the node.

    Content-Type     from the name (mimetypes), application/octet-stream without one
    ETag             "<hash>"; If-None-Match with it -> 304
    Cache-Control    public, max-age=31536000, immutable   (content under a hash never changes)
    Range            one range (a-b, a-, -n) -> 206 with Content-Range; unsatisfiable -> 416;
                     several ranges or a malformed header -> the whole content, 200
    unknown hash     404;  invalid hash or name -> 400

Who may use it: http/access.py (loopback: anyone on this machine; beyond: the config switch).
"""

from __future__ import annotations

import logging
import mimetypes
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import trio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kachery_client.errors import IntegrityError, TransferError
from kachery_client.uri import check_name, check_sha1
from kacheryfs import metrics
from kacheryfs.content.fetcher import Transfer
from kacheryfs.http.access import Access
from kacheryfs.http.errors import error_response, response_for
from kacheryfs.http.streaming import StreamedResponse
from kacheryfs.node import Node

log = logging.getLogger(__name__)

BLOCK = 1 << 20
WAIT_SECONDS = 120.0          # longest wait for the next block of a content still arriving
CACHE_CONTROL = "public, max-age=31536000, immutable"
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) of a single byte range; None: serve everything. ValueError: unsatisfiable."""
    m = _RANGE_RE.match(header.strip()) if header else None
    if m is None or (not m.group(1) and not m.group(2)):
        return None
    if not m.group(1):                                    # bytes=-n: the last n bytes
        n = int(m.group(2))
        if n == 0 or size == 0:
            raise ValueError("empty suffix range")
        return max(0, size - n), size
    start = int(m.group(1))
    if start >= size:
        raise ValueError("range starts past the end")
    end = int(m.group(2)) + 1 if m.group(2) else size
    if end <= start:
        return None                                       # last < first: invalid, ignored (RFC 9110)
    return start, min(end, size)


async def gateway(request: Request) -> Response:
    node: Node = request.app.state.node
    access: Access = request.app.state.access
    if not access.may_use_gateway(request):
        return error_response(403, "the gateway is off on this address ([node] network_gateway)")
    try:
        sha1 = check_sha1(request.path_params["sha1"])
        name = check_name(request.path_params["name"])
        manifest = request.query_params.get("manifest")
        source = await node.open_content(sha1, check_sha1(manifest) if manifest else None)
    except Exception as e:
        return response_for(e, request)
    size = source.size if isinstance(source, Transfer) else (await trio.to_thread.run_sync(source.stat)).st_size
    etag = f'"{sha1}"'
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL, "Accept-Ranges": "bytes"}
    if request.headers.get("if-none-match") in (etag, "*", sha1):
        return Response(status_code=304, headers=headers)
    content_type = (mimetypes.guess_type(name)[0] if name else None) or "application/octet-stream"
    start, end, status = 0, size, 200
    if request.headers.get("if-range") in (None, etag):
        try:
            wanted = parse_range(request.headers.get("range"), size)
        except ValueError:
            return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
        if wanted is not None:
            (start, end), status = wanted, 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=content_type)
    transfer = source if isinstance(source, Transfer) else None
    path = source if isinstance(source, Path) else None
    return StreamedResponse(_blocks(node, sha1, path, transfer, start, end), status_code=status,
                             headers=headers, media_type=content_type)


async def _blocks(node: Node, sha1: str, path: Path | None, transfer: Transfer | None,
                  start: int, end: int) -> AsyncIterator[bytes]:
    """Bytes [start, end), each block only once it is verified. A failed transfer ends the body
    early: the client sees fewer bytes than Content-Length said, never wrong ones."""
    try:
        fd = await _open(path, transfer)
    except (TransferError, IntegrityError) as e:
        log.warning("gateway: sha1://%s: %s", sha1, e)
        return
    try:
        pos = start
        while pos < end:
            n = min(BLOCK, end - pos)
            if transfer is not None and transfer.path is None:
                with trio.move_on_after(WAIT_SECONDS) as scope:
                    await transfer.wait_range(pos, pos + n)
                if scope.cancelled_caught:
                    raise TransferError(f"bytes {pos}-{pos + n} took longer than {WAIT_SECONDS} s to arrive")
            data = await trio.to_thread.run_sync(os.pread, fd, n, pos)
            if not data:
                raise IntegrityError(f"the file ended at byte {pos} of {end}")
            pos += len(data)
            node.stats.bytes_sent += len(data)
            metrics.GATEWAY_BYTES.inc(len(data))
            yield data
    except (TransferError, IntegrityError) as e:
        log.warning("gateway: sha1://%s stopped at byte %d: %s", sha1, pos, e)
    finally:
        os.close(fd)


async def _open(path: Path | None, transfer: Transfer | None) -> int:
    """A descriptor on the blob, or on the transfer's part file (it stays valid when the finished
    part is renamed into the store)."""
    if transfer is not None:
        if transfer.path is None and transfer.part_path is not None:
            try:
                return os.open(transfer.part_path, os.O_RDONLY)
            except FileNotFoundError:      # renamed into the store a moment ago
                await transfer.done.wait()
        transfer.raise_error()
        path = transfer.path
    assert path is not None
    return os.open(path, os.O_RDONLY)


ROUTES = [Route("/sha1/{sha1}/{name:path}", gateway, methods=["GET", "HEAD"])]
