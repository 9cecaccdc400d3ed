"""Feeds across nodes: a node reads feeds it does not own by pulling signed messages from its peers.

Owner side, in the peer API (peer_routes.PEER_JSON_ROUTES):

    POST /peer/feed/messages {"feedId", "subfeedHash", "position", "waitMsec"}
         -> {"messages": [signed envelopes from position on]}
       a long poll (at most MAX_PEER_WAIT_MSEC), answered by the same watch as the client API's.
       Any node serves the messages it holds, owned or replicated: signatures make them checkable.

Reader side (FeedReplicator): when a client asks this node about a subfeed of a feed it cannot
write (a watch, a message count), `interest()`
 1. the first time, pulls once from every peer of the node's channels (bounded by
    INITIAL_PULL_SECONDS), so that the first read already sees the messages that exist; a pull
    that fails is logged, never fails the asking request, and never stops step 2;
 2. keeps a follower task per subfeed that long-polls every peer and imports what arrives,
    until nobody has asked about that subfeed for FOLLOW_SECONDS.
Imports go through Feeds.import_messages, which verifies every signature, the chain and the
numbering, and refuses the rest: a peer can withhold messages, never forge or reorder them.
Feed private keys never leave the owning node; mutables are never replicated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import trio

from kachery_client.errors import KacheryError
from kacheryfs.background import BackgroundHost
from kacheryfs.content.sources import SourceError
from kacheryfs.content.sources.peer import PeerSource
from kacheryfs.feeds.service import FeedService, Watch

log = logging.getLogger(__name__)

INITIAL_PULL_SECONDS = 5.0
FOLLOW_SECONDS = 600.0
MAX_PEER_WAIT_MSEC = 15_000          # below the peer client's read timeout
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)


@dataclass
class _Follower:
    last_interest: float
    started: trio.Event


class FeedReplicator(BackgroundHost):
    def __init__(self, feeds: FeedService, peers: list[PeerSource]):
        super().__init__()
        self.feeds = feeds
        self.peers = peers
        self._followers: dict[tuple[str, str], _Follower] = {}

    async def interest(self, feed_id: str, subfeed_hash: str) -> None:
        """A client asks about this subfeed here: make sure the peers' messages are coming in."""
        if not self.peers or not self.running or await self.feeds.is_writeable(feed_id):
            return
        key = (feed_id, subfeed_hash)
        follower = self._followers.get(key)
        if follower is not None:
            follower.last_interest = trio.current_time()
            await follower.started.wait()
            return
        follower = self._followers[key] = _Follower(trio.current_time(), trio.Event())
        try:
            with trio.move_on_after(INITIAL_PULL_SECONDS):
                async with trio.open_nursery() as nursery:
                    for peer in self.peers:
                        nursery.start_soon(self._first_pull, peer, feed_id, subfeed_hash)
        finally:
            # Whatever the first pull did (failed, or the asking request went away), the follower
            # runs from here on; it retries failing peers itself.
            follower.started.set()
            try:
                self.start_soon(self._follow, key, follower)
            except RuntimeError:        # the replicator stopped meanwhile
                self._followers.pop(key, None)

    async def _first_pull(self, peer: PeerSource, feed_id: str, subfeed_hash: str) -> None:
        try:
            await self._pull_once(peer, feed_id, subfeed_hash, 0)
        except Exception as e:          # the follower retries; the asking request is not failed
            log.info("first pull of feed %s/%s from %s failed: %s", feed_id[:8], subfeed_hash[:8], peer.label, e)

    async def _follow(self, key: tuple[str, str], follower: _Follower) -> None:
        try:
            async with trio.open_nursery() as nursery:
                for peer in self.peers:
                    nursery.start_soon(self._follow_peer, peer, key, follower)
        finally:
            self._followers.pop(key, None)

    async def _follow_peer(self, peer: PeerSource, key: tuple[str, str], follower: _Follower) -> None:
        failures = 0
        while trio.current_time() - follower.last_interest < FOLLOW_SECONDS:
            try:
                await self._pull_once(peer, *key, MAX_PEER_WAIT_MSEC, quiet=False)
                failures = 0
            except Exception as e:      # log, back off, go on (unexpected errors included)
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                log.log(logging.INFO if isinstance(e, (SourceError, KacheryError)) else logging.ERROR,
                        "following feed %s/%s on %s: %s (retrying in %.1f s)", key[0][:8], key[1][:8],
                        peer.label, e, delay, exc_info=not isinstance(e, (SourceError, KacheryError)))
                await trio.sleep(delay)

    async def _pull_once(self, peer: PeerSource, feed_id: str, subfeed_hash: str, wait_msec: int,
                         quiet: bool = True) -> None:
        position = await self.feeds.num_messages(feed_id, subfeed_hash)
        body = {"feedId": feed_id, "subfeedHash": subfeed_hash, "position": position, "waitMsec": wait_msec}
        try:
            out = await trio.to_thread.run_sync(peer.post_json, "/peer/feed/messages", body,
                                                abandon_on_cancel=True)
        except SourceError as e:
            if quiet:
                log.info("pulling feed %s from %s: %s", feed_id[:8], peer.label, e)
                return
            raise
        envelopes = out.get("messages")
        if not isinstance(envelopes, list):
            raise SourceError(f"{peer.label}: malformed feed messages answer")
        if envelopes:
            added = await self.feeds.import_messages(feed_id, subfeed_hash, envelopes)
            log.debug("imported %d messages of feed %s from %s", added, feed_id[:8], peer.label)


async def serve_feed_messages(feeds: FeedService, feed_id: str, subfeed_hash: str, position: int,
                              wait_msec: float) -> dict[str, Any]:
    """The owner's (or any holder's) side of /peer/feed/messages (the body decoded by
    http/schemas.PeerFeedMessages)."""
    got = await feeds.watch({"w": Watch(feed_id, subfeed_hash, position)}, min(wait_msec, MAX_PEER_WAIT_MSEC),
                            signed=True)
    return {"messages": got.get("w", [])}
