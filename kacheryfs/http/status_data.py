"""What the status page, `kacheryfs status --watch` and /metrics show: one JSON snapshot of the node.

    {"nodeId", "version", "storageDir", "mountPoint", "uptimeSeconds",
     "storage":   {"blobs", "bytes", "cacheBytes", "ownedBytes", "cacheLimitBytes"},
     "counters":  {"requests", "bytesSent", "bytesReceived", "blobsStored"},
     "channels":  [{"name", "roles", "peers": [Reach], "bucket": Reach | null}],
     "transfers": [{"sha1", "size", "bytesPresent", "fraction", "rateBytesPerSecond",
                    "elapsedSeconds", "source"}],
     "recentErrors": [{"time", "level", "logger", "message"}]}
    Reach = {"label", "url", "reachable": true | false | null (not asked yet), "latencySeconds",
             "error"}

Costs stay bounded however often the page polls: storage totals are recounted in a worker thread
only after blobs were added or removed here (metrics.store_changes) or TOTALS_SECONDS passed, and peers and buckets are asked at most every PROBE_SECONDS,
each with a stat of a hash nobody has, in threads the page does not wait for past PROBE_WAIT.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import trio

from kacheryfs import __version__, metrics
from kacheryfs.content.sources import Source, SourceError, SourceRefused
from kacheryfs.node import Node

TOTALS_SECONDS = 5.0
PROBE_SECONDS = 15.0
PROBE_WAIT = 2.0
PROBE_GIVE_UP = 60.0              # a probe still running after this long no longer blocks a new one
RECENT_ERRORS = 20
_NOBODY_HAS = "0" * 40


@dataclass
class StorageTotals:
    blobs: int = 0
    bytes: int = 0
    cache_bytes: int = 0          # blobs a peer or bucket also holds: the cache limit may evict them

    @property
    def owned_bytes(self) -> int:
        return max(0, self.bytes - self.cache_bytes)


def count_totals(node: Node) -> StorageTotals:
    """The running totals kept in kacheryfs.db (call from a thread): one query, no walk."""
    du = node.lifecycle.du()
    store, cached = du.get("store", {}), du.get("cached", {})
    return StorageTotals(store.get("count", 0), store.get("bytes", 0), cached.get("bytes", 0))


class RecentErrors(logging.Handler):
    """The node's latest warnings and errors, for the page (a bounded ring, any thread)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_ERRORS)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.records.append({"time": record.created, "level": record.levelname, "logger": record.name,
                                 "message": record.getMessage()[:500]})
        except Exception:          # a log call with bad arguments must not break the caller
            self.handleError(record)


class StatusSource:
    """Builds snapshots for one node; keeps the cached totals and reachability between calls."""

    def __init__(self, node: Node):
        self.node = node
        self.started = time.time()
        self.errors = RecentErrors()
        logging.getLogger("kacheryfs").addHandler(self.errors)
        self._totals = StorageTotals()
        self._totals_at = -float("inf")
        self._totals_changes = -1
        self._totals_lock = trio.Lock()
        self._reach: dict[str, dict[str, Any]] = {}      # by source label: the last answer
        self._reach_at: dict[str, float] = {}
        self._probing: dict[str, float] = {}       # by source label: when its probe started
        self._probe_lock = threading.Lock()

    async def totals(self) -> StorageTotals:
        async with self._totals_lock:          # concurrent polls share one walk
            changes = metrics.store_changes()
            if changes != self._totals_changes or trio.current_time() - self._totals_at > TOTALS_SECONDS:
                self._totals = await trio.to_thread.run_sync(count_totals, self.node)
                self._totals_at, self._totals_changes = trio.current_time(), changes
                t = self._totals
                metrics.set_storage_totals(t.blobs, t.bytes, t.cache_bytes, self.node.config.cache_max_bytes)
        return self._totals

    async def snapshot(self) -> dict[str, Any]:
        node = self.node
        await self._probe_all()
        t = await self.totals()
        s = node.stats
        return {
            "nodeId": node.node_id, "version": __version__, "storageDir": str(node.storage_dir),
            "mountPoint": str(node.mountpoint) if node.mountpoint else None,
            "uptimeSeconds": round(time.time() - self.started, 1),
            "storage": {"blobs": t.blobs, "bytes": t.bytes, "cacheBytes": t.cache_bytes,
                        "ownedBytes": t.owned_bytes, "cacheLimitBytes": node.config.cache_max_bytes},
            "counters": {"requests": s.requests, "bytesSent": s.bytes_sent, "bytesReceived": s.bytes_received,
                         "blobsStored": s.blobs_stored},
            "channels": [self._channel(c.name, list(c.roles), list(c.peers)) for c in node.config.channels],
            "transfers": self._transfers(),
            "recentErrors": list(reversed(self.errors.records)),
        }

    def _channel(self, name: str, roles: list[str], peer_urls: list[str]) -> dict[str, Any]:
        asked = {p.base_url: p for p in self.node.download_peers.get(name, [])}
        peers = []
        for url in peer_urls:
            source = asked.get(url)
            peers.append(self._reach_of(source) if source is not None else
                         {"label": url, "url": url, "reachable": None, "latencySeconds": None,
                          "error": "not asked: this node does not download from this channel"})
        bucket = self.node.buckets.get(name)
        return {"name": name, "roles": roles, "peers": peers,
                "bucket": self._reach_of(bucket) if bucket is not None else None}

    def _reach_of(self, source: Source) -> dict[str, Any]:
        found = self._reach.get(source.label)
        url = getattr(source, "base_url", None)
        if found is None:
            return {"label": source.label, "url": url, "reachable": None, "latencySeconds": None, "error": None}
        return {"label": source.label, "url": url, **found}

    def _transfers(self) -> list[dict[str, Any]]:
        fetcher = self.node.fetcher
        out = []
        now = time.monotonic()
        for t in fetcher.in_progress() if fetcher is not None else []:
            if not t.ready.is_set() or t.path is not None:
                continue
            present = t.bytes_present
            elapsed = max(now - t.started, 1e-6)
            out.append({"sha1": t.sha1, "size": t.size, "bytesPresent": present,
                        "fraction": present / t.size if t.size else 1.0,
                        "rateBytesPerSecond": round(present / elapsed), "elapsedSeconds": round(elapsed, 1),
                        "source": t.source or None})
        return out

    # ---- reachability -------------------------------------------------------------------

    async def _probe_all(self) -> None:
        sources: list[Source] = [p for peers in self.node.download_peers.values() for p in peers]
        sources += list(self.node.buckets.values())
        now = time.monotonic()
        stale = [s for s in sources if now - self._reach_at.get(s.label, -PROBE_SECONDS) >= PROBE_SECONDS
                 and now - self._probing.get(s.label, -PROBE_GIVE_UP) >= PROBE_GIVE_UP]
        if not stale:
            return
        with trio.move_on_after(PROBE_WAIT):
            async with trio.open_nursery() as nursery:
                for s in stale:
                    self._probing[s.label] = now
                    nursery.start_soon(self._probe_in_thread, s)

    async def _probe_in_thread(self, source: Source) -> None:
        # Abandoned past PROBE_WAIT: the thread still records its answer for the next poll.
        await trio.to_thread.run_sync(self._probe, source, abandon_on_cancel=True)

    def _probe(self, source: Source) -> None:
        t0 = time.monotonic()
        reachable, error = True, None
        try:
            source.stat(_NOBODY_HAS)
        except SourceRefused as e:
            reachable, error = True, f"answers, but refuses this node: {e}"
        except SourceError as e:
            reachable, error = False, str(e)
        latency = time.monotonic() - t0
        with self._probe_lock:
            self._reach[source.label] = {"reachable": reachable, "latencySeconds": round(latency, 4),
                                         "error": error}
            self._reach_at[source.label] = time.monotonic()
            self._probing.pop(source.label, None)

