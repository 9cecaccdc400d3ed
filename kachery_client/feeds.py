"""Feeds: signed append-only logs kept by the node (docs/PROTOCOL.md sections 4.6, 6.2, 8.4, 8.5).

    import kachery_client as kc
    f = kc.create_feed("myfeed")               # or kc.load_feed("myfeed" | "feed://<id>" | snapshot URI)
    sf = f.load_subfeed("sf1")
    sf.append_messages([{"a": 1}, {"b": 2}])
    sf.get_next_messages(wait_msec=0)          # [{"a": 1}, {"b": 2}]; the position advances
    kc.load_subfeed(sf.uri)                    # feed://<id>/sf1

The API, names and arguments of kachery-client 1.2.0 (`Feed.is_writeable` is a property, as
there). Feed names are client-side mutables {"feed_name": name, "type": "feed_id_for_name"}.
Snapshots (`Feed.create_snapshot`) are stored JSON blobs `feed.json`, read here without a node;
everything else needs one (OfflineError in offline mode).
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

from . import api
from .errors import InvalidURIError, NodeError, NotFoundError, OfflineError, UsageError
from .node_http import NodeClient
from .uri import format_feed_uri, parse_feed_uri

LOCAL_CHANNEL = "*local*"
STREAM_WAIT_MSEC = 5000


def _node() -> NodeClient:
    try:
        return api.node_client()
    except OfflineError:
        raise OfflineError("feeds are kept by a kachery node, and offline mode (KACHERY_OFFLINE_STORAGE_DIR) "
                           "has none: unset it and start a node (`kacheryfs run`)") from None


def _post(path: str, body: dict[str, Any]) -> dict[str, Any]:
    obj = _node().post_json(path, body)
    if not obj.get("success"):
        raise NodeError(f"{path} failed: {obj.get('error') or 'no reason given'}")
    return obj


def subfeed_hash(subfeed_name: Any) -> str:
    """The hash the node files a subfeed under (computed client-side, docs/PROTOCOL.md 6.2)."""
    if isinstance(subfeed_name, str):
        if subfeed_name.startswith("~"):
            return subfeed_name[1:]
        return hashlib.sha1(subfeed_name.encode("utf-8")).hexdigest()
    text = json.dumps(subfeed_name, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _name_key(feed_name: str) -> dict[str, str]:
    return {"type": "feed_id_for_name", "feed_name": feed_name}


class Feed:
    def __init__(self, uri: str, *, timeout_sec: float | None = None):
        if "://" not in uri:
            uri = "feed://" + uri
        self._snapshot_object: dict[str, Any] | None = None
        self._feed_id: str | None
        if uri.startswith("feed://"):
            parsed = parse_feed_uri(uri)
            if parsed.subfeed_name is not None:
                raise UsageError(f"a feed URI names no subfeed: {uri!r} (use load_subfeed)")
            self._feed_id = parsed.feed_id
            self._feed_uri = format_feed_uri(parsed.feed_id)
            self._is_writeable = bool(_post("/feed/getFeedInfo", {"feedId": self._feed_id})["isWriteable"])
        elif uri.startswith("sha1://"):
            self._feed_id = None
            self._feed_uri = uri.split("?", 1)[0]
            self._is_writeable = False
            snapshot = api.load_json(self._feed_uri)
            if not isinstance(snapshot, dict) or not isinstance(snapshot.get("subfeeds"), dict):
                raise InvalidURIError(f"{uri} is not a feed snapshot (no 'subfeeds' object)")
            self._snapshot_object = snapshot
        else:
            raise InvalidURIError(f"not a feed URI: {uri!r} (expected feed://<feed id> or a snapshot sha1:// URI)")

    @property
    def is_writeable(self) -> bool:
        return self._is_writeable

    @property
    def feed_id(self) -> str | None:
        return self._feed_id

    @property
    def uri(self) -> str:
        return self._feed_uri

    @property
    def is_snapshot(self) -> bool:
        return self._snapshot_object is not None

    def load_subfeed(self, subfeed_name: Any, *, position: int = 0, channel: str = LOCAL_CHANNEL) -> Subfeed:
        return Subfeed(feed=self, subfeed_name=subfeed_name, position=position, channel=channel)

    def delete(self) -> None:
        if self._feed_id is None:
            raise UsageError("a snapshot cannot be deleted")
        _post("/feed/deleteFeed", {"feedId": self._feed_id})
        self._is_writeable = False

    def create_snapshot(self, subfeed_names: list[Any]) -> Feed:
        """A frozen copy of these subfeeds' messages, stored as a `feed.json` blob."""
        subfeeds = {}
        for name in subfeed_names:
            subfeed = self.load_subfeed(name)
            subfeeds[subfeed.subfeed_hash] = {"subfeedHash": subfeed.subfeed_hash,
                                              "messages": subfeed.get_next_messages(wait_msec=0)}
        return Feed(api.store_json({"subfeeds": subfeeds}, basename="feed.json"))

    def _snapshot_messages(self, hash_: str) -> list[Any]:
        assert self._snapshot_object is not None
        entry = self._snapshot_object["subfeeds"].get(hash_)
        messages = entry.get("messages") if isinstance(entry, dict) else None
        return messages if isinstance(messages, list) else []

    def __repr__(self) -> str:
        return f"Feed({self._feed_uri!r})"


class Subfeed:
    def __init__(self, *, feed: Feed, subfeed_name: Any, position: int = 0, channel: str = LOCAL_CHANNEL):
        self._feed = feed
        self._subfeed_name = subfeed_name
        self._subfeed_hash = subfeed_hash(subfeed_name)
        self._subfeed_name_str = subfeed_name if isinstance(subfeed_name, str) else "~" + self._subfeed_hash
        self._position = position
        self._channel = channel

    @property
    def uri(self) -> str:
        if self._feed.is_snapshot:
            return f"{self._feed.uri}?subfeedName={urllib.parse.quote(self._subfeed_name_str)}"
        return format_feed_uri(str(self._feed.feed_id), self._subfeed_name_str)

    @property
    def feed_id(self) -> str | None:
        return self._feed.feed_id

    @property
    def subfeed_name(self) -> Any:
        return self._subfeed_name

    @property
    def subfeed_hash(self) -> str:
        return self._subfeed_hash

    @property
    def position(self) -> int:
        return self._position

    @property
    def is_snapshot(self) -> bool:
        return self._feed.is_snapshot

    @property
    def is_writeable(self) -> bool:
        return self._feed.is_writeable

    def set_position(self, position: int) -> None:
        self._position = position

    def get_num_local_messages(self) -> int:
        if self.is_snapshot:
            return len(self._feed._snapshot_messages(self._subfeed_hash))
        obj = _post("/feed/getNumLocalMessages", {"feedId": self.feed_id, "subfeedHash": self._subfeed_hash})
        return int(obj["numMessages"])

    def get_next_messages(self, wait_msec: float = 10, *, signed: bool = False, max_num_messages: int = 0,
                          advance_position: bool = True) -> list[Any]:
        """Messages from the current position (waiting up to wait_msec for one if there are none).
        With signed=True, the signed envelopes {"body": ..., "signature": ...}."""
        if self.is_snapshot:
            messages = self._feed._snapshot_messages(self._subfeed_hash)
            end = self._position + max_num_messages if max_num_messages > 0 else len(messages)
            found = messages[self._position:end]
        else:
            watch = {"feedId": self.feed_id, "subfeedHash": self._subfeed_hash, "position": self._position}
            found = watch_for_new_messages({"watch": watch}, wait_msec=wait_msec, channel=self._channel,
                                           signed=signed, max_num_messages=max_num_messages).get("watch", [])
        if advance_position:
            self._position += len(found)
        return found

    def get_next_message(self, wait_msec: float, *, signed: bool = False, advance_position: bool = True) -> Any:
        """The next message, or None if none arrives within wait_msec."""
        found = self.get_next_messages(wait_msec=wait_msec, signed=signed, max_num_messages=1,
                                       advance_position=advance_position)
        return found[0] if found else None

    def message_stream(self, *, signed: bool = False) -> Iterator[Any]:
        """Messages from the current position on, waiting for new ones (a snapshot's end stops it)."""
        while True:
            found = self.get_next_messages(wait_msec=STREAM_WAIT_MSEC, signed=signed, advance_position=False)
            if not found and self.is_snapshot:
                return
            for message in found:
                self._position += 1
                yield message

    def append_message(self, message: dict[str, Any]) -> None:
        self.append_messages([message])

    def append_messages(self, messages: list[dict[str, Any]]) -> None:
        if not self.is_writeable:
            raise UsageError(f"cannot append messages to a read-only feed ({self._feed.uri})")
        _post("/feed/appendMessages", {"feedId": self.feed_id, "subfeedHash": self._subfeed_hash,
                                       "messages": list(messages)})

    def __repr__(self) -> str:
        return f"Subfeed({self.uri!r}, position={self._position})"


# ---- module functions ---------------------------------------------------------------------

def create_feed(feed_name: str | None = None) -> Feed:
    """A new writeable feed on the node; with a name, load_feed(name) finds it later."""
    body = {} if feed_name is None else {"feedName": feed_name}
    feed_id = _post("/feed/createFeed", body)["feedId"]
    if feed_name is not None:
        api.set(_name_key(feed_name), feed_id)
    return Feed("feed://" + feed_id)


def get_feed_id(feed_name: str, *, create: bool = False) -> str:
    _node()                 # the clear OfflineError first
    feed_id = api.get(_name_key(feed_name))
    if not isinstance(feed_id, str):
        if create:
            return str(create_feed(feed_name).feed_id)
        raise NotFoundError(f"no feed named {feed_name!r} on this node")
    return feed_id


def load_feed(feed_name_or_uri: str, *, timeout_sec: float | None = None, create: bool = False) -> Feed:
    """A feed by URI (feed://<id>), snapshot URI (sha1://.../feed.json) or local name."""
    if feed_name_or_uri.startswith("feed://"):
        if create:
            raise UsageError("create=True needs a feed name, not a feed URI")
        if parse_feed_uri(feed_name_or_uri).subfeed_name is not None:
            raise UsageError(f"{feed_name_or_uri!r} is a subfeed URI: use load_subfeed")
        return Feed(feed_name_or_uri, timeout_sec=timeout_sec)
    if feed_name_or_uri.startswith("sha1://"):
        if create:
            raise UsageError("create=True needs a feed name, not a snapshot URI")
        return Feed(feed_name_or_uri)
    return Feed("feed://" + get_feed_id(feed_name_or_uri, create=create), timeout_sec=timeout_sec)


def delete_feed(feed_name_or_uri: str) -> None:
    if feed_name_or_uri.startswith("feed://"):
        parsed = parse_feed_uri(feed_name_or_uri)
        if parsed.subfeed_name is not None:
            raise UsageError("delete a feed by its URI, not a subfeed's")
        _post("/feed/deleteFeed", {"feedId": parsed.feed_id})
    else:
        _post("/feed/deleteFeed", {"feedId": get_feed_id(feed_name_or_uri)})


def load_subfeed(subfeed_uri: str, *, channel: str = LOCAL_CHANNEL) -> Subfeed:
    """feed://<id>/<name>, or a snapshot's sha1://<h>/feed.json?subfeedName=<name>."""
    if subfeed_uri.startswith("sha1://"):
        base, _, query = subfeed_uri.partition("?")
        names = urllib.parse.parse_qs(query).get("subfeedName")
        if not names:
            raise InvalidURIError(f"a snapshot subfeed URI needs ?subfeedName=: {subfeed_uri!r}")
        return Feed(base).load_subfeed(names[0], channel=channel)
    parsed = parse_feed_uri(subfeed_uri)
    if parsed.subfeed_name is None:
        raise InvalidURIError(f"no subfeed name in {subfeed_uri!r} (expected feed://<feed id>/<name>)")
    return Feed("feed://" + parsed.feed_id).load_subfeed(parsed.subfeed_name, channel=channel)


def watch_for_new_messages(subfeed_watches: dict[str, dict[str, Any]], *, wait_msec: float,
                           channel: str = LOCAL_CHANNEL, signed: bool = False,
                           max_num_messages: int = 0) -> dict[str, list[Any]]:
    """Long poll several subfeeds: {name: {feedId, subfeedName or subfeedHash, position}} ->
    {name: [messages]}. Returns at once with the watches that have messages at or after their
    position; otherwise waits up to wait_msec for one (then every name is present)."""
    watches = {}
    for name, w in subfeed_watches.items():
        hash_ = w["subfeedHash"] if "subfeedHash" in w else subfeed_hash(w["subfeedName"])
        watches[name] = {"feedId": parse_feed_uri(w["feedId"]).feed_id, "subfeedHash": hash_,
                         "channelName": channel, "position": w.get("position", 0)}
    obj = _post("/feed/watchForNewMessages", {"subfeedWatches": watches, "waitMsec": wait_msec,
                                              "signed": signed, "maxNumMessages": max_num_messages})
    messages = obj.get("messages")
    if not isinstance(messages, dict):
        raise NodeError("/feed/watchForNewMessages answered without a messages object")
    return messages
