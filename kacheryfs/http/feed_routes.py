"""HTTP handlers of the /feed/* endpoints (docs/PROTOCOL.md section 4.6): validate, call node.feeds.

Each is an `async handler(node, body) -> dict` for client_routes.JSON_ROUTES. Malformed bodies raise
UsageError (HTTP 400 with the message), where the original answered 500.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from kachery_client.errors import UsageError
from kacheryfs.feeds.service import Watch
from kacheryfs.feeds.store import check_feed_id, check_subfeed_hash

if TYPE_CHECKING:
    from kacheryfs.node import Node

MAX_WATCHES = 1000


def _str_field(body: dict[str, Any], name: str) -> Any:
    if name not in body or body[name] is None:
        raise UsageError(f"missing field {name!r}")
    return body[name]


def _int_field(body: dict[str, Any], name: str, default: int) -> int:
    value = body.get(name, default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise UsageError(f"field {name!r} must be a non-negative integer")
    return value


async def create_feed(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    name = body.get("feedName")
    if name is not None and not (isinstance(name, str) and 1 <= len(name) <= 100):
        raise UsageError("feedName must be a string of 1 to 100 characters")
    return {"success": True, "feedId": await node.feeds.create_feed(name)}


async def delete_feed(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    await node.feeds.delete_feed(check_feed_id(_str_field(body, "feedId")))
    return {"success": True}


async def get_feed_id(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    name = _str_field(body, "feedName")
    if not isinstance(name, str):
        raise UsageError("feedName must be a string")
    feed_id = await node.feeds.get_feed_id(name)
    return {"success": feed_id is not None, "feedId": feed_id}


async def get_feed_info(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    feed_id = check_feed_id(_str_field(body, "feedId"))
    return {"success": True, "isWriteable": await node.feeds.is_writeable(feed_id), "nodeId": node.node_id}


async def get_num_local_messages(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    feed_id = check_feed_id(_str_field(body, "feedId"))
    subfeed_hash = check_subfeed_hash(_str_field(body, "subfeedHash"))
    await node.feed_replicator.interest(feed_id, subfeed_hash)
    return {"success": True, "numMessages": await node.feeds.num_messages(feed_id, subfeed_hash)}


async def append_messages(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    feed_id = check_feed_id(_str_field(body, "feedId"))
    subfeed_hash = check_subfeed_hash(_str_field(body, "subfeedHash"))
    messages = _str_field(body, "messages")
    if not isinstance(messages, list):
        raise UsageError("messages must be a list of JSON objects")
    await node.feeds.append(feed_id, subfeed_hash, messages)
    return {"success": True}


async def watch_for_new_messages(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    raw = _str_field(body, "subfeedWatches")
    if not isinstance(raw, dict):
        raise UsageError("subfeedWatches must be an object {name: {feedId, subfeedHash, position}}")
    if len(raw) > MAX_WATCHES:
        raise UsageError(f"at most {MAX_WATCHES} subfeed watches per request")
    watches = {}
    for name, w in raw.items():
        if not isinstance(w, dict):
            raise UsageError(f"subfeed watch {name!r} must be an object")
        channel = w.get("channelName")
        if channel is not None and not isinstance(channel, str):
            raise UsageError(f"subfeed watch {name!r}: channelName must be a string")
        try:
            watches[name] = Watch(check_feed_id(_str_field(w, "feedId")),
                                  check_subfeed_hash(_str_field(w, "subfeedHash")),
                                  _int_field(w, "position", 0), channel or "*local*")
        except UsageError as e:
            raise UsageError(f"subfeed watch {name!r}: {e}") from None
    wait_msec = body.get("waitMsec", 0)
    if not isinstance(wait_msec, (int, float)) or isinstance(wait_msec, bool) or not math.isfinite(wait_msec) \
            or wait_msec < 0:
        raise UsageError("waitMsec must be a non-negative number")
    signed = body.get("signed", False)
    if not isinstance(signed, bool):
        raise UsageError("signed must be true or false")
    max_num = _int_field(body, "maxNumMessages", 0)
    for w in watches.values():                  # feeds owned elsewhere: their messages come from peers
        await node.feed_replicator.interest(w.feed_id, w.subfeed_hash)
    messages = await node.feeds.watch(watches, float(wait_msec), signed=signed, max_num=max_num)
    return {"success": True, "messages": messages}


FEED_ROUTES = {
    "/feed/createFeed": create_feed,
    "/feed/deleteFeed": delete_feed,
    "/feed/getFeedId": get_feed_id,
    "/feed/getFeedInfo": get_feed_info,
    "/feed/getNumLocalMessages": get_num_local_messages,
    "/feed/appendMessages": append_messages,
    "/feed/watchForNewMessages": watch_for_new_messages,
}
