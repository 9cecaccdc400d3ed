"""The node's async face of Feeds: SQLite work in worker threads, and the watch long poll.

Every change goes through this object's async methods (append, import_messages), which wake
the watches of that subfeed on the trio loop once the change is committed. Replication code
that received envelopes from another node calls `await node.feeds.import_messages(...)`.
Code running in a worker thread can wake watches itself with `notify_from_thread`.

watch() follows the original's semantics (docs/PROTOCOL.md 4.6):
1. messages at or after each watch's position -> return at once, with only those keys;
2. otherwise waitMsec == 0 -> {};
3. otherwise wait for a message on any watched subfeed (then 30 ms more, to batch) or the
   timeout, and return every key ([] for the silent ones).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import trio

from kacheryfs import metrics
from kacheryfs.feeds.store import Feeds

log = logging.getLogger(__name__)

BATCH_SECONDS = 0.030           # after a wake-up, let an append burst land before answering
MAX_WAIT_SECONDS = 600.0        # a long poll never outlives 10 minutes

SubfeedKey = tuple[str, str]


@dataclass(frozen=True)
class Watch:
    feed_id: str
    subfeed_hash: str
    position: int
    channel: str = "*local*"     # as the client sent it; kept for the network layer, unused here


class FeedService:
    def __init__(self, feeds: Feeds):
        self.feeds = feeds
        self._waiters: dict[SubfeedKey, set[trio.Event]] = {}
        self._token: trio.lowlevel.TrioToken | None = None
        self._closing = False

    # ---- plain calls, in threads --------------------------------------------------------

    async def create_feed(self, name: str | None = None) -> str:
        return await trio.to_thread.run_sync(self.feeds.create_feed, name)

    async def delete_feed(self, feed_id: str) -> bool:
        return await trio.to_thread.run_sync(self.feeds.delete_feed, feed_id)

    async def get_feed_id(self, name: str) -> str | None:
        return await trio.to_thread.run_sync(self.feeds.get_feed_id, name)

    async def is_writeable(self, feed_id: str) -> bool:
        return await trio.to_thread.run_sync(self.feeds.is_writeable, feed_id)

    async def num_messages(self, feed_id: str, subfeed_hash: str) -> int:
        return await trio.to_thread.run_sync(self.feeds.num_messages, feed_id, subfeed_hash)

    async def get_messages(self, feed_id: str, subfeed_hash: str, position: int = 0, max_num: int = 0,
                           signed: bool = False) -> list[Any]:
        return await trio.to_thread.run_sync(self.feeds.get_messages, feed_id, subfeed_hash, position,
                                             max_num, signed)

    # ---- changes, which wake watches ----------------------------------------------------

    async def append(self, feed_id: str, subfeed_hash: str, messages: Sequence[Any]) -> int:
        count = await trio.to_thread.run_sync(self.feeds.append, feed_id, subfeed_hash, messages)
        metrics.FEED_MESSAGES_APPENDED.inc(len(messages))
        if messages:
            self.notify(feed_id, subfeed_hash)
        return count

    async def import_messages(self, feed_id: str, subfeed_hash: str, envelopes: Sequence[Any]) -> int:
        """Verified import of another node's signed envelopes (see Feeds.import_messages)."""
        added = await trio.to_thread.run_sync(self.feeds.import_messages, feed_id, subfeed_hash, envelopes)
        metrics.FEED_MESSAGES_REPLICATED.inc(added)
        if added:
            self.notify(feed_id, subfeed_hash)
        return added

    def notify(self, feed_id: str, subfeed_hash: str) -> None:
        """Wake every watch of this subfeed (call on the trio loop)."""
        for event in self._waiters.get((feed_id.lower(), subfeed_hash.lower()), ()):
            event.set()

    def close(self) -> None:
        """The node is stopping: pending and new watches answer at once, so HTTP can drain."""
        self._closing = True
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()

    def notify_from_thread(self, feed_id: str, subfeed_hash: str) -> None:
        """Wake watches from any thread that changed Feeds directly (after its commit)."""
        if self._token is not None:     # else no watch ever ran: nobody to wake
            trio.from_thread.run_sync(self.notify, feed_id, subfeed_hash, trio_token=self._token)

    # ---- the long poll ------------------------------------------------------------------

    async def watch(self, watches: dict[str, Watch], wait_msec: float, *, signed: bool = False,
                    max_num: int = 0) -> dict[str, list[Any]]:
        self._token = trio.lowlevel.current_trio_token()
        deadline = trio.current_time() + min(max(wait_msec, 0) / 1000.0, MAX_WAIT_SECONDS)
        woken = trio.Event()
        keys = {(w.feed_id, w.subfeed_hash) for w in watches.values()}
        # Registered before the first look, so an append landing during it still wakes us.
        for key in keys:
            self._waiters.setdefault(key, set()).add(woken)
        try:
            found = await self._collect(watches, signed, max_num)
            if found or wait_msec <= 0:
                return found
            while not self._closing:
                with trio.move_on_at(deadline):
                    await woken.wait()
                if not woken.is_set():
                    break                                   # timed out
                woken = self._rearm(keys, woken)
                if self._closing:
                    break
                await trio.sleep(BATCH_SECONDS)
                found = await self._collect(watches, signed, max_num)
                if found or trio.current_time() >= deadline:
                    break
            return {name: found.get(name, []) for name in watches}
        finally:
            for key in keys:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.discard(woken)
                    if not waiters:
                        del self._waiters[key]

    def _rearm(self, keys: set[SubfeedKey], old: trio.Event) -> trio.Event:
        """A fresh event in place of a fired one (a wake-up for a position we do not watch yet)."""
        new = trio.Event()
        for key in keys:
            waiters = self._waiters.setdefault(key, set())
            waiters.discard(old)
            waiters.add(new)
        return new

    async def _collect(self, watches: dict[str, Watch], signed: bool, max_num: int) -> dict[str, list[Any]]:
        def work() -> dict[str, list[Any]]:
            found: dict[str, list[Any]] = {}
            for name, w in watches.items():
                messages = self.feeds.get_messages(w.feed_id, w.subfeed_hash, w.position, max_num, signed)
                if messages:
                    found[name] = messages
            return found
        return await trio.to_thread.run_sync(work)
