"""The Node's operations on the life of stored data: pins, gc and the cache limit, du, whereis,
drop, verify and repair (README "Managing stored data"; docs/PROTOCOL.md section 19).

`StoredData` wires content/lifecycle.py (records and removal), content/verify.py (re-hashing),
content/whereis.py (asking sources) and feeds/chains.py together for the edges (the HTTP routes
in http/data_routes.py and the offline commands). Async: SQLite and file work in worker threads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from kachery_client.errors import KacheryError, NotFoundError, UsageError
from kachery_client.hashing import CHUNK_SIZE
from kachery_client.uri import check_sha1, format_file_uri
from kacheryfs.background import BackgroundHost, backoff
from kacheryfs.content.lifecycle import GcResult
from kacheryfs.content.sources import Source
from kacheryfs.content.sources.peer import PeerSource
from kacheryfs.content.verify import check_all, sha1_of_file
from kacheryfs.content.whereis import Answer, ask_all
from kacheryfs.feeds.chains import check_chains

if TYPE_CHECKING:
    from kacheryfs.node import Node

log = logging.getLogger(__name__)
TOUCH_INTERVAL = 60.0          # a blob's last use is written at most once a minute
ProgressFn = Callable[[int, int], None]


class StoredData(BackgroundHost):
    """Hosts long operations (a verify asked over HTTP outlives its request's scope)."""

    def __init__(self, node: Node):
        super().__init__()
        self.node = node
        self.lifecycle = node.lifecycle
        self._limit_wanted = trio.Event()
        self._touched: dict[str, float] = {}
        self.sources: list[Source] = []          # every peer of every channel, every bucket
        for c in node.config.channels:
            self.sources += node.download_peers.get(c.name) or [PeerSource(u, c.name, node.keys) for u in c.peers]
            if c.name in node.buckets:
                self.sources.append(node.buckets[c.name])

    # ---- background: reconcile once, then the cache limit --------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._maintain)
            task_status.started()
            await trio.sleep_forever()

    async def _maintain(self) -> None:
        """Reconcile the records once, then hold the cache limit after every fetch. An unexpected
        error is logged and retried after a backoff: the limit must keep holding."""
        try:
            await trio.to_thread.run_sync(self.lifecycle.reconcile)
        except Exception:
            log.exception("reconciling kacheryfs.db with the store failed; totals may be off until the next start")
        limit = self.node.config.cache_max_bytes
        failures = 0
        while limit:
            try:
                result = await trio.to_thread.run_sync(self.lifecycle.enforce_cache_limit, limit)
            except Exception:
                failures += 1
                log.exception("cache limit: eviction failed (attempt %d)", failures)
                await trio.sleep(backoff(failures))
                continue
            failures = 0
            if result.removed:
                log.info("cache limit: removed %d cached blobs (%d bytes)", len(result.removed), result.freed)
            await self._limit_wanted.wait()
            self._limit_wanted = trio.Event()

    def fetched(self, sha1: str, size: int, source: str, manifest_sha1: str | None = None) -> None:
        """The fetcher made a blob local (called on the loop): cached content, maybe over the limit."""
        self.lifecycle.fetched(sha1, size, source, manifest_sha1)
        self._limit_wanted.set()

    def used(self, sha1: str) -> None:
        """From a worker thread: content was read (LRU order for gc), written at most once a minute."""
        now = time.monotonic()
        if now - self._touched.get(sha1, -TOUCH_INTERVAL) >= TOUCH_INTERVAL:
            self._touched[sha1] = now
            if len(self._touched) > 100_000:
                self._touched.clear()
            self.lifecycle.used(sha1)

    # ---- pins ---------------------------------------------------------------------------

    async def pin(self, sha1: str, manifest_sha1: str | None = None) -> int:
        """Make the content local (fetching it) and keep it from gc. Its size."""
        path = await self.node.ensure(check_sha1(sha1), manifest_sha1)
        if not await trio.to_thread.run_sync(self.lifecycle.pin, sha1):
            raise NotFoundError(f"sha1://{sha1} vanished while it was being pinned")
        manifest = await self.node.manifest_for(sha1)
        if manifest is not None:
            await trio.to_thread.run_sync(self.lifecycle.pin, manifest)
        return path.stat().st_size

    async def unpin(self, sha1: str) -> bool:
        return await trio.to_thread.run_sync(self.lifecycle.unpin, check_sha1(sha1))

    async def pins(self) -> list[dict[str, Any]]:
        def work() -> list[dict[str, Any]]:
            out = []
            for sha1, size in self.node.index.pinned():
                names = self.node.index.names_for(sha1)
                out.append({"sha1": sha1, "size": size,
                            "uri": format_file_uri(sha1, names[0] if names else "")})
            return out
        return await trio.to_thread.run_sync(work)

    # ---- gc, du -------------------------------------------------------------------------

    async def gc(self, target_bytes: int, older_than_days: float | None, dry_run: bool) -> GcResult:
        if target_bytes < 0 or (older_than_days is not None and older_than_days < 0):
            raise UsageError("--target-bytes and --older-than must not be negative")
        return await trio.to_thread.run_sync(self.lifecycle.gc, target_bytes, older_than_days, dry_run)

    async def du(self) -> dict[str, dict[str, int]]:
        return await trio.to_thread.run_sync(self.lifecycle.du)

    # ---- whereis, drop ------------------------------------------------------------------

    async def whereis(self, sha1: str) -> list[Answer]:
        sha1 = check_sha1(sha1)
        t0 = time.monotonic()
        path = await trio.to_thread.run_sync(self.node.store.locate, sha1)
        here = Answer(f"this node ({self.node.storage_dir})", "local", path is not None,
                      path.stat().st_size if path is not None else None,
                      await self.node.manifest_for(sha1) if path is not None else None,
                      time.monotonic() - t0)
        return [here, *await ask_all(self.sources, sha1)]

    async def drop(self, sha1: str, force: bool) -> dict[str, Any]:
        """Remove local content: only when `numcopies` other sources hold it with the right size
        and manifest, unless `force`. Pinned content is never dropped (unpin it first), nor content
        stored again while the drop runs (claims.py: it is kept, UsageError)."""
        sha1 = check_sha1(sha1)
        started_ns = time.time_ns()
        seen = await trio.to_thread.run_sync(self.lifecycle.identity, sha1)
        record = await trio.to_thread.run_sync(self.node.index.get, sha1)
        path = await trio.to_thread.run_sync(self.node.store.locate, sha1)
        if path is None and record is None:
            raise NotFoundError(f"sha1://{sha1} is not on this node")
        if record is not None and record.pinned:
            raise UsageError(f"sha1://{sha1} is pinned here: unpin it first (kachery-unpin)")
        size = path.stat().st_size if path is not None else (record.size if record else 0)
        manifest = await self.node.manifest_for(sha1) if path is not None and size > CHUNK_SIZE else None
        answers: list[Answer] = []
        if not force:
            need = self.node.config.numcopies
            answers = await ask_all(self.sources, sha1)
            good = [a for a in answers if a.found and a.size == size
                    and (size <= CHUNK_SIZE or a.manifest_sha1 in (None, manifest))]
            if len(good) < need:
                told = "; ".join(a.describe() + (f" ({a.size} bytes)" if a.found else "") for a in answers)
                raise UsageError(f"refusing to drop sha1://{sha1}: {len(good)} other source(s) hold it with the "
                                 f"right size and manifest, numcopies is {need} (asked: {told or 'no sources'}); "
                                 "--force drops it anyway")
        removed = await trio.to_thread.run_sync(self.lifecycle.remove, sha1, started_ns, seen)
        if removed is None:              # no record (a blob the index never saw): remove the file
            await trio.to_thread.run_sync(self.lifecycle.stored, sha1)
            removed = await trio.to_thread.run_sync(self.lifecycle.remove, sha1, started_ns, seen)
        return {"sha1": sha1, "size": size, "forced": force,
                "copies": [a.as_json() for a in answers if a.found]}

    # ---- verify and repair --------------------------------------------------------------

    async def verify(self, repair: bool, progress: ProgressFn | None = None) -> dict[str, Any]:
        node = self.node
        t0 = time.monotonic()

        def check() -> tuple[Any, Any, Any]:
            manifests = dict(node.index.manifests())
            totals = node.index.totals()
            expected = sum(totals[k].bytes for k in ("owned", "cached", "link"))
            checked, findings = check_all(node.store, manifests, node.index.all_sha1s(), progress=progress,
                                          expected_bytes=expected)
            for f in findings:
                if f.problem in ("corrupt", "bad-link"):
                    self.lifecycle.quarantine(f.sha1, f.is_link, f.detail)
            return checked, findings, check_chains(node.feeds.feeds)

        checked, findings, (subfeeds, chains) = await trio.to_thread.run_sync(check)
        repaired: list[str] = []
        unrepaired: list[dict[str, str]] = []
        if repair:
            # what this run found, and what earlier runs quarantined
            wanted = [f.sha1 for f in findings if f.problem in ("corrupt", "bad-link", "missing")]
            wanted += await trio.to_thread.run_sync(node.index.quarantined_all)
            for sha1 in dict.fromkeys(wanted):
                try:
                    await self._repair(sha1)
                    repaired.append(sha1)
                except KacheryError as e:
                    unrepaired.append({"sha1": sha1, "error": str(e)})
        return {"blobs": checked.blobs, "links": checked.links, "bytes": checked.bytes, "subfeeds": subfeeds,
                "seconds": round(time.monotonic() - t0, 3), "findings": [f.as_json() for f in findings],
                "feedProblems": [c.describe() for c in chains], "repaired": repaired, "unrepaired": unrepaired}

    async def _repair(self, sha1: str) -> None:
        """Fetch the content again from the channels' sources (the fetcher verifies every chunk
        and the whole), re-hash what landed, and give it back its kind and pin."""
        if self.node.fetcher is None:
            raise NotFoundError("this node has no sources to fetch from")
        path = await self.node.fetcher.ensure(sha1)
        if await trio.to_thread.run_sync(sha1_of_file, path) != sha1:
            raise KacheryError(f"sha1://{sha1}: the fetched copy does not verify either")
        await trio.to_thread.run_sync(self.lifecycle.restored, sha1)
