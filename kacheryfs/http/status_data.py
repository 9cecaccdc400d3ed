"""One snapshot of the node's state, for every view of it: the status page and /ui/status.json
(docs/PROTOCOL.md 16.2), the extras of /stats (17.3), `kacheryfs status` and `--watch`
(status_cli.py, status_view.py) and the storage gauges of /metrics.

    {"nodeId", "version", "storageDir", "mountPoint", "peerListen", "configFile", "uptimeSeconds",
     "storage":   {"blobs", "bytes", "cacheBytes", "ownedBytes", "cacheLimitBytes"},
     "totals":    node.data.du() (by kind: {"count", "bytes"}; "store" = owned + cached),
     "partial":   {"count", "bytes"} (unfinished transfers kept in partial/ for a resume),
     "counters":  {"requests", "bytesSent", "bytesReceived", "blobsStored"},
     "channels":  [{"name", "roles", "peers": [Reach], "bucket": Reach | null}],
     "transfers": [Transfer],
     "recentErrors": [{"time", "level", "logger", "message"}]}
    Transfer = {"sha1", "size", "bytesPresent", "fraction", "rateBytesPerSecond", "elapsedSeconds",
                "source" (null: still looking for sources), "waiters"}
    Reach = {"label", "url", "reachable": true | false | null (not asked yet), "latencySeconds",
             "error"}

/stats carries a part of it under the original's names (stats_extras). Costs stay bounded however
often a view polls: storage totals are the running totals in kacheryfs.db (one query in a worker
thread, no walk of the store), and peers and buckets are asked at most every PROBE_SECONDS, each
with a stat of a hash nobody has, in threads a poll does not wait for past PROBE_WAIT.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

import trio

from kacheryfs import __version__, metrics
from kacheryfs.content.sources import Source, SourceError, SourceRefused
from kacheryfs.node import Node

PROBE_SECONDS = 15.0
PROBE_WAIT = 2.0
PROBE_GIVE_UP = 60.0              # a probe still running after this long no longer blocks a new one
RECENT_ERRORS = 20
_NOBODY_HAS = "0" * 40


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


def transfers(node: Node) -> list[dict[str, Any]]:
    """Transfers not yet published, including those still looking for sources (size 0, source null)."""
    fetcher = node.fetcher
    out = []
    now = time.monotonic()
    for t in fetcher.in_progress() if fetcher is not None else []:
        if t.path is not None:
            continue
        present = t.bytes_present
        elapsed = max(now - t.started, 1e-6)
        ready = t.ready.is_set()
        out.append({"sha1": t.sha1, "size": t.size, "bytesPresent": present,
                    "fraction": present / t.size if t.size else (1.0 if ready else 0.0),
                    "rateBytesPerSecond": round(present / elapsed), "elapsedSeconds": round(elapsed, 1),
                    "source": t.source or None, "waiters": t.waiters})
    return out


class StatusSource:
    """Builds snapshots for one node; keeps reachability answers and recent errors between calls."""

    def __init__(self, node: Node):
        self.node = node
        self.started = time.time()
        self.errors = RecentErrors()
        logging.getLogger("kacheryfs").addHandler(self.errors)
        self._reach: dict[str, dict[str, Any]] = {}      # by source label: the last answer
        self._reach_at: dict[str, float] = {}
        self._probing: dict[str, float] = {}       # by source label: when its probe started
        self._probe_lock = threading.Lock()

    async def totals(self) -> dict[str, dict[str, int]]:
        """The running totals (node.data.du()); also sets the storage gauges of /metrics."""
        du = await self.node.data.du()
        store, cached = du.get("store", {}), du.get("cached", {})
        metrics.set_storage_totals(store.get("count", 0), store.get("bytes", 0), cached.get("bytes", 0),
                                   self.node.config.cache_max_bytes)
        return du

    async def snapshot(self, probe: bool = True) -> dict[str, Any]:
        """The whole state; probe=False answers at once with the last known reachability."""
        node = self.node
        if probe:
            await self._probe_all()
        du = await self.totals()
        store, cache_bytes = du.get("store", {}), du.get("cached", {}).get("bytes", 0)
        s = node.stats
        listen = node.config.peer_listen
        return {
            "nodeId": node.node_id, "version": __version__, "storageDir": str(node.storage_dir),
            "mountPoint": str(node.mountpoint) if node.mountpoint else None,
            "peerListen": f"{listen[0]}:{listen[1]}" if listen else None,
            "configFile": str(node.config.path) if node.config.path else None,
            "uptimeSeconds": round(time.time() - self.started, 1),
            "storage": {"blobs": store.get("count", 0), "bytes": store.get("bytes", 0), "cacheBytes": cache_bytes,
                        "ownedBytes": max(0, store.get("bytes", 0) - cache_bytes),
                        "cacheLimitBytes": node.config.cache_max_bytes},
            "totals": du,
            "partial": du.get("partial", {"count": 0, "bytes": 0}),
            "counters": {"requests": s.requests, "bytesSent": s.bytes_sent, "bytesReceived": s.bytes_received,
                         "blobsStored": s.blobs_stored},
            "channels": [self._channel(c.name, list(c.roles), list(c.peers)) for c in node.config.channels],
            "transfers": transfers(node),
            "recentErrors": list(reversed(self.errors.records)),
        }

    async def stats_extras(self) -> dict[str, Any]:
        """What /stats adds to the original's fields (PROTOCOL.md 17.3): the same snapshot, with
        transfers named as in /loadFile's progress frames (bytesLoaded, bytesTotal)."""
        s = await self.snapshot(probe=False)
        return {"peerListen": s["peerListen"], "mountPoint": s["mountPoint"], "configFile": s["configFile"],
                "transfers": [{"sha1": t["sha1"], "bytesLoaded": t["bytesPresent"], "bytesTotal": t["size"],
                               "source": t["source"], "waiters": t["waiters"], "seconds": t["elapsedSeconds"]}
                              for t in s["transfers"]],
                "partial": s["partial"], "totals": s["totals"]}

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

