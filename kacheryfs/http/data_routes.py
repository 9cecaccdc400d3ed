"""HTTP handlers of stored-data management (docs/PROTOCOL.md section 19): validate, call node.data.

JSON handlers (`(schema, async handler(node, body) -> dict)` in DATA_ROUTES, for
client_routes.JSON_ROUTES; bodies decoded by http/schemas.py):

    /kacheryfs/pin      {"uris": [...]}                     fetch if needed, then pin
    /kacheryfs/unpin    {"uris": [...]}
    /kacheryfs/pins     {}
    /kacheryfs/whereis  {"uri"}                             every source's answer, timed
    /kacheryfs/drop     {"uri", "force"}
    /kacheryfs/du       {}
    /kacheryfs/gc       {"targetBytes", "olderThanDays", "dryRun"}

and POST /kacheryfs/verify {"repair"}: newline-delimited JSON, {"progress": [done, total]} lines
(bytes re-hashed so far) then one {"report": {...}} line (or {"error": "..."}).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import trio
from starlette.requests import Request
from starlette.responses import Response

from kachery_client.errors import KacheryError
from kachery_client.uri import FileURI, check_sha1, parse_file_uri
from kacheryfs.http import schemas as s
from kacheryfs.http.errors import response_for
from kacheryfs.http.streaming import StreamedResponse

if TYPE_CHECKING:
    from kacheryfs.node import Node

PROGRESS_SECONDS = 0.5


def content_of(value: str) -> FileURI:
    """A sha1:// URI or a bare hash."""
    if not value.startswith("sha1://"):
        return FileURI(check_sha1(value))
    return parse_file_uri(value)


async def pin(node: Node, body: s.Uris) -> dict[str, Any]:
    pinned = []
    for u in map(content_of, body.uris):
        pinned.append({"sha1": u.sha1, "size": await node.data.pin(u.sha1, u.manifest_sha1)})
        if u.name and "/" not in u.name:
            await node.record_name(u.sha1, u.name)      # for `kachery-pin --list`
    return {"success": True, "pinned": pinned}


async def unpin(node: Node, body: s.Uris) -> dict[str, Any]:
    done: list[str] = []
    not_pinned: list[str] = []
    for u in map(content_of, body.uris):
        (done if await node.data.unpin(u.sha1) else not_pinned).append(u.sha1)
    return {"success": True, "unpinned": done, "notHere": not_pinned}


async def pins(node: Node, body: s.AnyObject) -> dict[str, Any]:
    return {"success": True, "pins": await node.data.pins()}


async def whereis(node: Node, body: s.OneUri) -> dict[str, Any]:
    answers = await node.data.whereis(content_of(body.uri).sha1)
    return {"success": True, "answers": [a.as_json() for a in answers]}


async def drop(node: Node, body: s.Drop) -> dict[str, Any]:
    out = await node.data.drop(content_of(body.uri).sha1, body.force)
    return {"success": True, **out}


async def du(node: Node, body: s.AnyObject) -> dict[str, Any]:
    return {"success": True, "du": await node.data.du()}


async def gc(node: Node, body: s.Gc) -> dict[str, Any]:
    result = await node.data.gc(body.targetBytes, body.olderThanDays, body.dryRun)
    return {"success": True, **result.as_json()}


DATA_ROUTES: dict[str, tuple[type, Any]] = {
    "/kacheryfs/pin": (s.Uris, pin),
    "/kacheryfs/unpin": (s.Uris, unpin),
    "/kacheryfs/pins": (s.AnyObject, pins),
    "/kacheryfs/whereis": (s.OneUri, whereis),
    "/kacheryfs/drop": (s.Drop, drop),
    "/kacheryfs/du": (s.AnyObject, du),
    "/kacheryfs/gc": (s.Gc, gc),
}


async def verify(request: Request) -> Response:
    node: Node = request.app.state.node
    try:
        repair = s.decode(await s.read_body(request), s.Verify).repair
    except Exception as e:
        return response_for(e, request)
    latest = [0, 0]

    def progress(done: int, total: int) -> None:      # from the hashing threads
        latest[:] = [done, total]

    outcome: dict[str, Any] = {}
    finished = trio.Event()

    async def run() -> None:
        try:
            outcome["report"] = await node.data.verify(repair, progress)
        except KacheryError as e:
            outcome["error"] = str(e)
        finally:
            finished.set()

    node.data.start_soon(run)       # in the node's nursery: a generator must not hold one

    async def lines() -> AsyncIterator[bytes]:
        while not finished.is_set():
            with trio.move_on_after(PROGRESS_SECONDS):
                await finished.wait()
            yield (json.dumps({"progress": latest}) + "\n").encode()
        yield (json.dumps(outcome) + "\n").encode()

    return StreamedResponse(lines(), media_type="application/x-ndjson")
