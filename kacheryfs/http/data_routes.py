"""HTTP handlers of stored-data management (docs/PROTOCOL.md section 15): validate, call node.data.

JSON handlers (`async handler(node, body) -> dict`, in DATA_ROUTES for client_routes.JSON_ROUTES):

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
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from kachery_client.errors import KacheryError, UsageError
from kachery_client.uri import FileURI, check_sha1, parse_file_uri
from kacheryfs.http.errors import parse_json_object, response_for

if TYPE_CHECKING:
    from kacheryfs.node import Node

MAX_URIS = 10_000
PROGRESS_SECONDS = 0.5


def content_of(value: Any) -> FileURI:
    """A sha1:// URI or a bare hash."""
    if isinstance(value, str) and not value.startswith("sha1://"):
        return FileURI(check_sha1(value))
    return parse_file_uri(value)


def _uris(body: dict[str, Any]) -> list[FileURI]:
    uris = body.get("uris")
    if not isinstance(uris, list) or not 1 <= len(uris) <= MAX_URIS:
        raise UsageError(f"field 'uris' must be a list of 1 to {MAX_URIS} URIs")
    return [content_of(u) for u in uris]


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise UsageError(f"field {name!r} must be true or false")
    return value


def _number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise UsageError(f"field {name!r} must be a number >= 0")
    return value


async def pin(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    pinned = []
    for u in _uris(body):
        pinned.append({"sha1": u.sha1, "size": await node.data.pin(u.sha1, u.manifest_sha1)})
        if u.name and "/" not in u.name:
            await node.record_name(u.sha1, u.name)      # for `kachery-pin --list`
    return {"success": True, "pinned": pinned}


async def unpin(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    done: list[str] = []
    not_pinned: list[str] = []
    for u in _uris(body):
        (done if await node.data.unpin(u.sha1) else not_pinned).append(u.sha1)
    return {"success": True, "unpinned": done, "notHere": not_pinned}


async def pins(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    return {"success": True, "pins": await node.data.pins()}


async def whereis(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    answers = await node.data.whereis(content_of(body.get("uri")).sha1)
    return {"success": True, "answers": [a.as_json() for a in answers]}


async def drop(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    out = await node.data.drop(content_of(body.get("uri")).sha1, _flag(body, "force"))
    return {"success": True, **out}


async def du(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    return {"success": True, "du": await node.data.du()}


async def gc(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    target = _number(body, "targetBytes")
    result = await node.data.gc(int(target or 0), _number(body, "olderThanDays"), _flag(body, "dryRun"))
    return {"success": True, **result.as_json()}


DATA_ROUTES: dict[str, Callable[[Node, dict[str, Any]], Awaitable[dict[str, Any]]]] = {
    "/kacheryfs/pin": pin,
    "/kacheryfs/unpin": unpin,
    "/kacheryfs/pins": pins,
    "/kacheryfs/whereis": whereis,
    "/kacheryfs/drop": drop,
    "/kacheryfs/du": du,
    "/kacheryfs/gc": gc,
}


async def verify(request: Request) -> Response:
    node: Node = request.app.state.node
    try:
        repair = _flag(parse_json_object(await request.body(), 1 << 16), "repair")
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

    return StreamingResponse(lines(), media_type="application/x-ndjson")
