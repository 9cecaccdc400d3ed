"""Node = store + identity + auth + mutables + index + fetcher (+ feeds): the core every adapter calls.

The HTTP API and the FUSE mount are thin adapters over this object. Its async methods never
block the trio loop: file and SQLite work runs in worker threads.

Background services (`run_services`, started by the daemon before the HTTP server): the
fetcher's transfers, the upload queue (`upload_all` channels) and the cache limit
(`stored_data.py`: pins, gc, du, whereis, drop, verify live there, as `node.data`).
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from kachery_client.errors import NotFoundError, UsageError
from kachery_client.hashing import CHUNK_SIZE, ContentHasher
from kachery_client.store import Store, StoredBlob
from kachery_client.uri import check_name, check_sha1
from kacheryfs import metrics
from kacheryfs.background import backoff
from kacheryfs.config import CONFIG_NAME, NodeConfig, load_config
from kacheryfs.content.fetcher import STAT_TIMEOUT, Fetcher, Transfer
from kacheryfs.content.index import NodeIndex
from kacheryfs.content.lifecycle import Lifecycle
from kacheryfs.content.ranges import OpenRange, open_local_range, open_transfer_range
from kacheryfs.content.shared_group import prepare_shared_storage
from kacheryfs.content.sources import Source, SourceError
from kacheryfs.content.sources.bucket import BucketSource
from kacheryfs.content.sources.peer import PeerSource
from kacheryfs.feeds.mutables import Mutables
from kacheryfs.feeds.replication import FeedReplicator
from kacheryfs.feeds.service import FeedService
from kacheryfs.feeds.store import Feeds
from kacheryfs.rate_limit import RateLimiter
from kacheryfs.security.client_auth import ClientAuth
from kacheryfs.security.keys import KeyPair, load_or_create_node_keys, write_private_file
from kacheryfs.security.peer_auth import NonceGuard
from kacheryfs.stored_data import StoredData
from kacheryfs.tasks.forwarding import TaskForwarder
from kacheryfs.tasks.hub import TaskHub
from kacheryfs.tasks.results import TaskResultIndex, TaskResults
from kacheryfs.tasks.urls import ResultUrls, url_secret

log = logging.getLogger(__name__)
VERSION = "kacheryfs-0.1.0"
ProgressFn = Callable[[int, int], None]


class NodeAlreadyRunning(UsageError):
    pass


class StartupError(UsageError):
    """Something the node needs is taken: an address to listen on, the mount point. The commands
    print it as one line and exit 2 (kacheryfs/cli.py)."""


@dataclass
class Stats:
    requests: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    blobs_stored: int = 0


class Node:
    def __init__(self, storage_dir: Path, *, config: NodeConfig | None = None, config_path: Path | None = None,
                 fetch_timeout: float = STAT_TIMEOUT, group: str | None = None):
        self.storage_dir = storage_dir.expanduser().resolve()
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = _lock_storage(self.storage_dir)
        if config is None:
            config = load_config(config_path or self.storage_dir / CONFIG_NAME, required=config_path is not None)
        self.config = config
        self.group = group or config.group
        if self.group:
            prepare_shared_storage(self.storage_dir, self.group)
        self.store = Store(self.storage_dir)
        removed = self.store.clean_stale_temps()
        if removed:
            log.info("removed %d stale temp files left by interrupted writes", removed)
        self.keys: KeyPair = load_or_create_node_keys(self.storage_dir)
        self.node_id = self.keys.public_hex
        # No trailing newline: kachery-client 1.2.0 compares the file's content with /probe's nodeId
        # byte for byte. `kacheryfs id` prints it with one.
        write_private_file(self.storage_dir / "kachery-node-id", self.node_id.encode(), mode=0o644)
        self.mountpoint: Path | None = None          # set by the mount once it is up (for status)
        self.fetch_timeout = fetch_timeout
        self.auth = ClientAuth(self.storage_dir)
        self.peer_nonces = NonceGuard()          # one-time nonces of acting peer requests
        self.mutables = Mutables(self.storage_dir / "mutables.db")
        self.index = NodeIndex(self.storage_dir / "kacheryfs.db")
        self.lifecycle = Lifecycle(self.store, self.index)
        self.stats = Stats()
        self.peer_serve_limit = RateLimiter(config.peer_serve_rate) if config.peer_serve_rate else None
        self.buckets = {c.name: BucketSource(c.bucket, c.name) for c in config.channels if c.bucket}
        # The peers this node asks (for content, feeds and tasks): those of its download channels.
        self.download_peers = {c.name: [PeerSource(url, c.name, self.keys) for url in c.peers]
                               for c in config.channels if c.can("download")}
        self.fetcher: Fetcher | None = None
        sources: list[Source] = []
        for name, peers in self.download_peers.items():
            sources += peers
            if name in self.buckets:
                sources.append(self.buckets[name])
        if sources:
            self.fetcher = Fetcher(self.store, sources, connections=config.fetch_connections,
                                   on_fetched=self._fetched, stat_timeout=min(STAT_TIMEOUT, fetch_timeout),
                                   grace=config.transfer_grace_seconds,
                                   partial_max_bytes=config.partial_max_bytes)
        self._uploads: trio.MemorySendChannel[tuple[str, str]] | None = None
        self.feeds = FeedService(Feeds(self.storage_dir / "feeds.db", self.mutables))
        self.tasks = TaskHub(TaskResults(self.store, TaskResultIndex(self.storage_dir / "kacheryfs.db"),
                                         on_stored=self.lifecycle.stored),
                             ResultUrls(url_secret(self.keys.seed)))
        self.tasks.forwarder = self.task_forwarder = TaskForwarder(self.tasks, self.download_peers)
        self.feed_replicator = FeedReplicator(
            self.feeds, [peer for peers in self.download_peers.values() for peer in peers])
        self.data = StoredData(self)

    # ---- background services --------------------------------------------------------------

    async def run_services(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The fetcher, feed replication, task forwarding, the upload queue and the cache limit,
        until cancelled."""
        send, receive = trio.open_memory_channel[tuple[str, str]](10_000)
        async with trio.open_nursery() as nursery:
            if self.fetcher is not None:
                await nursery.start(self.fetcher.run)
            await nursery.start(self.feed_replicator.run)
            await nursery.start(self.task_forwarder.run)
            self._uploads = send
            nursery.start_soon(self._upload_loop, receive)
            await nursery.start(self.data.run)          # index reconcile, then the cache limit
            task_status.started()

    async def _upload_loop(self, receive: trio.MemoryReceiveChannel[tuple[str, str]]) -> None:
        failures = 0
        async for sha1, channel in receive:
            try:
                await self.upload(sha1, channel)
                failures = 0
            except (UsageError, NotFoundError, SourceError) as e:
                log.warning("upload of sha1://%s to channel %s failed: %s", sha1, channel, e)
            except Exception:           # log, back off, go on: the loop outlives any one upload
                failures += 1
                log.exception("upload of sha1://%s to channel %s failed unexpectedly", sha1, channel)
                await trio.sleep(backoff(failures))

    def blob_added(self, sha1: str) -> None:
        """A client stored a blob here: queue it for the channels that upload everything."""
        if self._uploads is None:
            return
        for c in self.config.channels:
            if c.upload_all:
                try:
                    self._uploads.send_nowait((sha1, c.name))
                except trio.WouldBlock:
                    log.warning("upload queue full; sha1://%s not queued for %s", sha1, c.name)

    async def upload(self, sha1: str, channel: str) -> bool:
        """Put a local blob (and its manifest) into the channel's bucket. False if already there."""
        sha1 = check_sha1(sha1)
        ch = self.config.require_channel(channel)
        bucket = self.buckets.get(channel)
        if bucket is None or not ch.can("upload"):
            raise UsageError(f"channel {channel!r} has no bucket this node may upload to")
        path = await trio.to_thread.run_sync(self.store.require, sha1)
        manifest = await self.manifest_for(sha1)
        if manifest is not None:
            await trio.to_thread.run_sync(bucket.upload, manifest, self.store.require(manifest))
        uploaded = await trio.to_thread.run_sync(bucket.upload, sha1, path, manifest)
        size = os.stat(path).st_size
        await trio.to_thread.run_sync(self.index.mark_remote, sha1, size, bucket.label)
        return uploaded

    def _fetched(self, sha1: str, size: int, source: str, manifest_sha1: str | None) -> None:
        """Called by the fetcher on the trio loop: the blob is local now, and cached (with the
        manifest its chunks matched, so that serving it on costs no pass over it)."""
        self.data.fetched(sha1, size, source, manifest_sha1)

    def close(self) -> None:
        self._lock_file.close()

    # ---- content ------------------------------------------------------------------------

    async def ensure(self, sha1: str, manifest_sha1: str | None = None,
                     progress: ProgressFn | None = None) -> Path:
        """Path of the verified blob (or valid link target), fetched first if a fetcher can."""
        found = await self._local_or_fetcher(sha1)
        if isinstance(found, Path):
            return found
        return await found.ensure(sha1, manifest_sha1, progress)

    async def open_content(self, sha1: str, manifest_sha1: str | None = None) -> Path | Transfer:
        """The local blob, or the transfer bringing it (once its size is known): the mount and the
        HTTP gateway read a transfer's verified ranges before it ends."""
        found = await self._local_or_fetcher(sha1)
        if isinstance(found, Path):
            return found
        t = found.open_transfer(check_sha1(sha1), manifest_sha1)
        await t.ready.wait()
        t.raise_error()
        return t.path if t.path is not None else t

    async def load(self, sha1: str, manifest_sha1: str | None = None) -> Path | Transfer:
        """The local blob, or the transfer bringing it (the caller holds it while it waits)."""
        found = await self._local_or_fetcher(sha1)
        if isinstance(found, Path):
            return found
        return found.open_transfer(check_sha1(sha1), manifest_sha1)

    async def open_range(self, sha1: str, start: int | None, end: int | None, *, clamp_end: bool = False,
                         manifest_sha1: str | None = None, follow: bool = False) -> OpenRange:
        """Bytes [start, end) of a blob, open as soon as they are verified (fetched if need be).
        The wait is bounded by --fetch-timeout, or with `follow` by the transfer itself."""
        found = await self.load(sha1, manifest_sha1)
        if isinstance(found, Path):
            return await trio.to_thread.run_sync(open_local_range, found, start, end, clamp_end)
        return await open_transfer_range(found, start, end, clamp_end, None if follow else self.fetch_timeout)

    async def remote_size(self, sha1: str) -> int:
        """Size of a blob this node lacks, from its sources, without fetching it."""
        if self.fetcher is None:
            raise NotFoundError(f"sha1://{sha1} is not in this node's store and it has no sources")
        return await self.fetcher.remote_size(sha1)

    async def _local_or_fetcher(self, sha1: str) -> Path | Fetcher:
        sha1 = check_sha1(sha1)
        path = await trio.to_thread.run_sync(self._locate_and_touch, sha1)
        if path is not None:
            return path
        if self.fetcher is None:
            raise NotFoundError(f"sha1://{sha1} is not in this node's store and it has no sources")
        return self.fetcher

    def _locate_and_touch(self, sha1: str) -> Path | None:
        path = self.store.locate(sha1)
        if path is not None:
            self.data.used(sha1)
        return path

    async def manifest_for(self, sha1: str) -> str | None:
        """The manifest blob's hash of a local blob over CHUNK_SIZE (made and stored if missing)."""
        sha1 = check_sha1(sha1)

        def work() -> str | None:
            path = self.store.require(sha1)
            if os.stat(path).st_size <= CHUNK_SIZE:
                return None
            known = self.index.manifest_for(sha1)
            if known is not None and self.store.has(known):
                return known
            hasher = ContentHasher()
            with open(path, "rb") as f:
                while block := f.read(8 << 20):
                    hasher.update(block)
            manifest = hasher.manifest_bytes()
            assert manifest is not None
            known = self.store.add_bytes(manifest).sha1
            self.lifecycle.stored(known)
            self.index.set_manifest(sha1, known)
            return known
        return await trio.to_thread.run_sync(work)

    async def record_stored(self, sha1: str, name: str | None, manifest_sha1: str | None) -> None:
        """A blob was stored here (HTTP /store, the mount's incoming/): its name, its manifest."""
        sha1 = check_sha1(sha1)
        if name:
            _check_stored_name(name)
        await trio.to_thread.run_sync(self._record_stored, sha1, name, manifest_sha1)
        self.blob_added(sha1)

    async def store_small(self, data: bytes, name: str | None) -> StoredBlob:
        """Store and record a body held in memory in one worker-thread hop (a hop costs about as
        much as the store itself: this is the latency of every small /store)."""
        if name:
            _check_stored_name(name)

        def work() -> StoredBlob:
            blob = self.store.add_bytes(data)
            self._record_stored(blob.sha1, name, blob.manifest_sha1)
            return blob
        blob = await trio.to_thread.run_sync(work)
        self.blob_added(blob.sha1)
        return blob

    def _record_stored(self, sha1: str, name: str | None, manifest_sha1: str | None) -> None:
        if name:
            self.index.add_name(sha1, name)
        self.lifecycle.stored(sha1)
        if manifest_sha1:
            self.index.set_manifest(sha1, manifest_sha1)
            self.lifecycle.stored(manifest_sha1)

    async def record_name(self, sha1: str, name: str) -> None:
        _check_stored_name(name)
        await trio.to_thread.run_sync(self.index.add_name, check_sha1(sha1), name)

    async def adopt(self, sha1: str, name: str | None, manifest_sha1: str | None = None) -> bool:
        """A client added this blob into our store itself: record its name (and manifest).
        False if the blob is absent."""
        sha1 = check_sha1(sha1)
        if name is not None:
            _check_stored_name(name)

        def work() -> bool:
            size = self.lifecycle.stored(sha1)       # locates (and so verifies) the blob once
            if size is None:
                return False
            metrics.count_stored("client", size)
            if name:
                self.index.add_name(sha1, name)
            if manifest_sha1 and self.lifecycle.stored(manifest_sha1) is not None:
                self.index.set_manifest(sha1, manifest_sha1)
            return True
        if not await trio.to_thread.run_sync(work):
            return False
        self.blob_added(sha1)
        return True

    async def names_for(self, sha1: str) -> list[str]:
        return await trio.to_thread.run_sync(self.index.names_for, check_sha1(sha1))


def _check_stored_name(name: str) -> None:
    check_name(name)
    if "/" in name or not name:
        raise UsageError(f"a stored name is one non-empty path segment, not {name!r}")


def _lock_storage(storage_dir: Path) -> Any:
    """Only one node per storage directory: an exclusive flock held for the process's life."""
    f = open(storage_dir / "kacheryfs.lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise NodeAlreadyRunning(f"another kacheryfs node is already running on {storage_dir}") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f
