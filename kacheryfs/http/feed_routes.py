"""HTTP handlers of the /feed/* endpoints (docs/PROTOCOL.md section 4.6): validate, call node.feeds.

Each is an `async handler(node, body) -> dict` for client_routes.JSON_ROUTES, with the body already
decoded by its schema (http/schemas.py); malformed bodies never get here (HTTP 400, where the
original answered 500).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kacheryfs.feeds.service import Watch
from kacheryfs.feeds.store import check_feed_id, check_subfeed_hash
from kacheryfs.http import schemas as s

if TYPE_CHECKING:
    from kacheryfs.node import Node


async def create_feed(node: Node, body: s.CreateFeed) -> dict[str, Any]:
    return {"success": True, "feedId": await node.feeds.create_feed(body.feedName)}


async def delete_feed(node: Node, body: s.FeedRef) -> dict[str, Any]:
    await node.feeds.delete_feed(check_feed_id(body.feedId))
    return {"success": True}


async def get_feed_id(node: Node, body: s.FeedName) -> dict[str, Any]:
    feed_id = await node.feeds.get_feed_id(body.feedName)
    return {"success": feed_id is not None, "feedId": feed_id}


async def get_feed_info(node: Node, body: s.FeedRef) -> dict[str, Any]:
    feed_id = check_feed_id(body.feedId)
    return {"success": True, "isWriteable": await node.feeds.is_writeable(feed_id), "nodeId": node.node_id}


async def get_num_local_messages(node: Node, body: s.SubfeedRef) -> dict[str, Any]:
    feed_id, subfeed_hash = check_feed_id(body.feedId), check_subfeed_hash(body.subfeedHash)
    await node.feed_replicator.interest(feed_id, subfeed_hash)
    return {"success": True, "numMessages": await node.feeds.num_messages(feed_id, subfeed_hash)}


async def append_messages(node: Node, body: s.AppendMessages) -> dict[str, Any]:
    await node.feeds.append(check_feed_id(body.feedId), check_subfeed_hash(body.subfeedHash), body.messages)
    return {"success": True}


async def watch_for_new_messages(node: Node, body: s.WatchForNewMessages) -> dict[str, Any]:
    watches = {name: Watch(check_feed_id(w.feedId), check_subfeed_hash(w.subfeedHash), w.position,
                           w.channelName or "*local*")
               for name, w in body.subfeedWatches.items()}
    for w in watches.values():                  # feeds owned elsewhere: their messages come from peers
        await node.feed_replicator.interest(w.feed_id, w.subfeed_hash)
    messages = await node.feeds.watch(watches, body.waitMsec, signed=body.signed, max_num=body.maxNumMessages)
    return {"success": True, "messages": messages}


FEED_ROUTES: dict[str, tuple[type, Any]] = {
    "/feed/createFeed": (s.CreateFeed, create_feed),
    "/feed/deleteFeed": (s.FeedRef, delete_feed),
    "/feed/getFeedId": (s.FeedName, get_feed_id),
    "/feed/getFeedInfo": (s.FeedRef, get_feed_info),
    "/feed/getNumLocalMessages": (s.SubfeedRef, get_num_local_messages),
    "/feed/appendMessages": (s.AppendMessages, append_messages),
    "/feed/watchForNewMessages": (s.WatchForNewMessages, watch_for_new_messages),
}
