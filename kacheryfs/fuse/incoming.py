"""incoming/: files being written into the mount, hashed as they arrive and stored on close.

Each file is written by one BlobWriter. Bytes are batched in memory up to INGEST_BATCH and queued
(at most QUEUE_DEPTH batches) for the file's writer task, which hashes and writes them in order in
a worker thread while the kernel's next writes are already answered. A write waits only while the
queue is full, so memory stays bounded whatever the file's size. A batch that fails (disk full)
fails the next write, or close() (flush) if none follows, with its errno; the file is discarded.
Store, discard and unlink first close the queue and wait for the writer task (`Incoming.drained`).
Writes must be sequential: hashing as bytes arrive needs them in order.

Concurrency: every method runs on the trio loop; only the BlobWriter's write/commit/abort run in
worker threads, never two at once for one file.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from kachery_client.errors import LocalStorageError, NotFoundError, UsageError
from kachery_client.store import BlobWriter, StoredBlob
from kachery_client.uri import check_name
from kacheryfs import metrics
from kacheryfs.fuse.entries import Entry, FsError
from kacheryfs.node import Node

log = logging.getLogger(__name__)

INGEST_BATCH = 4 * 1024 * 1024
# Batches queued per file beyond the one being written: the writer thread's pace varies (page-cache
# allocation, write-back), and the kernel's writes need not wait for each batch. Memory per file:
# at most (QUEUE_DEPTH + 2) batches (queued, being written, filling).
QUEUE_DEPTH = 4


def _set_event() -> trio.Event:
    event = trio.Event()
    event.set()
    return event


@dataclass
class Incoming:
    """A file in incoming/: being written (writer set), or stored (sha1 set, then a symlink)."""
    entry: Entry
    writer: BlobWriter | None = None
    pending: list[bytes] = field(default_factory=list)      # FUSE write buffers not handed on yet
    pending_size: int = 0
    open_count: int = 0
    sha1: str | None = None
    queue: trio.MemorySendChannel[list[bytes]] | None = None   # batches for the writer task
    drained: trio.Event = field(default_factory=_set_event)   # no writer task (or it has ended)
    error: FsError | None = None                             # what a batch hit
    received: int = 0                                        # bytes accepted from the kernel
    mtime_ns: int = field(default_factory=time.time_ns)

    @property
    def size(self) -> int:
        return self.received

    def symlink_target(self) -> str:
        return f"../sha1/{self.sha1}/{self.entry.name}"


def _keep_write_buffers() -> None:
    """Each FUSE write arrives as a new 1 MiB bytes object. By default glibc gives such blocks back
    to the kernel when freed (mmap/trim), so every write faulted in and zeroed 256 fresh pages
    (a tenth of the node's time in a `cp`). Keep up to TRIM bytes of freed heap for reuse."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, 8 << 20)       # blocks under 8 MiB from the heap, reused
        mallopt(_M_TRIM_THRESHOLD, 64 << 20)      # keep up to 64 MiB free heap before trimming


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # glibc's mallopt parameters


class IncomingFiles:
    """The files of incoming/, by name. `new_entry(name)` gives each new file its inode."""

    def __init__(self, node: Node, spawn: Any, new_entry: Callable[[str], Entry]):
        with contextlib.suppress(OSError):
            _keep_write_buffers()
        self.node = node
        self._spawn = spawn            # where background batch writes run; None: write inline
        self._new_entry = new_entry
        self.by_name: dict[str, Incoming] = {}

    # ---- incoming/ ------------------------------------------------------------------------

    async def create(self, name: str) -> Incoming:
        try:
            check_name(name)
        except UsageError as e:
            raise FsError(errno.EINVAL, str(e)) from None
        if "/" in name or name in self.by_name:
            raise FsError(errno.EEXIST, name)
        # No manifest now: one hash pass, so close() returns sooner; the node makes the manifest
        # when a peer first asks for it (Node.manifest_for). What the writer wrote is not kept
        # in the page cache once on disk (drop_behind): the file's bytes were the writer's own.
        writer = await trio.to_thread.run_sync(lambda: self.node.store.writer(manifest=False, drop_behind=True))
        inc = Incoming(self._new_entry(name), writer=writer, open_count=1)
        self.by_name[name] = inc
        return inc

    def get(self, entry: Entry) -> Incoming:
        inc = self.by_name.get(entry.name or "") if entry.kind == "incoming" else None
        if inc is None or inc.entry.ino != entry.ino:
            raise NotFoundError(f"inode {entry.ino}")
        return inc

    async def write(self, inc: Incoming, offset: int, data: bytes) -> int:
        if inc.writer is None:
            if self.by_name.get(inc.entry.name or "") is not inc:
                raise FsError(errno.EIO, "this incoming file was discarded")
            raise FsError(errno.EPERM, "already stored: content is immutable")
        if offset != inc.size:
            # Hashing as bytes arrive needs them in order; cp, shells and Python all write so.
            await self._discard(inc)
            raise FsError(errno.EIO, f"incoming/ takes sequential writes only (offset {offset}, size {inc.size})")
        if inc.error is not None:               # an earlier batch failed: this write reports it
            await self._raise_batch_error(inc)
        inc.pending.append(data)            # kept as the kernel sent it: written with one writev, not joined
        inc.pending_size += len(data)
        inc.received += len(data)
        if inc.pending_size >= INGEST_BATCH:
            batch, inc.pending, inc.pending_size = inc.pending, [], 0
            await self._hand_on(inc, inc.writer, batch)
        inc.mtime_ns = time.time_ns()
        return len(data)

    async def _hand_on(self, inc: Incoming, writer: BlobWriter, batch: list[bytes]) -> None:
        """Queue a batch for the file's writer task (started with the first batch); waits only
        while QUEUE_DEPTH batches are queued. Without a nursery to run it in: written inline."""
        if self._spawn is None:
            await self._write_batch(inc, writer, batch)
            await self._raise_batch_error(inc)
            return
        if inc.queue is None:
            inc.queue, batches = trio.open_memory_channel[list[bytes]](QUEUE_DEPTH)
            inc.drained = trio.Event()
            self._spawn(self._write_batches, inc, writer, batches, inc.drained)
        try:
            await inc.queue.send(batch)
        except trio.ClosedResourceError:      # discarded or stored while this write waited
            raise FsError(errno.EIO, "this incoming file was discarded") from None

    async def _write_batches(self, inc: Incoming, writer: BlobWriter,
                             batches: trio.MemoryReceiveChannel[list[bytes]], drained: trio.Event) -> None:
        """The file's writer task: its batches in order, one worker thread at a time. After a
        failure, or once the file is discarded, the rest are dropped (never written)."""
        try:
            async with batches:
                async for batch in batches:
                    if inc.error is None and inc.writer is writer:
                        await self._write_batch(inc, writer, batch)
        finally:
            drained.set()

    @staticmethod
    async def _write_batch(inc: Incoming, writer: BlobWriter, batch: list[bytes]) -> None:
        try:
            await trio.to_thread.run_sync(writer.write_parts, batch)
        except LocalStorageError as e:        # e.g. ENOSPC in the storage dir
            inc.error = FsError(e.errno or errno.EIO, str(e))
        except OSError as e:                  # a refused write the store did not map
            inc.error = FsError(e.errno or errno.EIO, str(e))
        except Exception as e:                # a bug: fail this file, keep the mount
            log.exception("writing incoming/%s failed", inc.entry.name)
            inc.error = FsError(errno.EIO, f"internal error: {e}")

    async def _drain(self, inc: Incoming) -> None:
        """Close the file's queue and wait until its writer task has ended: no worker thread
        touches the BlobWriter after this."""
        queue, inc.queue = inc.queue, None
        if queue is not None:
            await queue.aclose()
        await inc.drained.wait()

    async def _raise_batch_error(self, inc: Incoming) -> None:
        if inc.error is not None:
            error = inc.error
            await self._discard(inc)
            raise error

    async def truncate(self, inc: Incoming, size: int) -> None:
        if size == inc.size:
            return
        if size == 0 and inc.writer is not None and inc.received == inc.pending_size:
            inc.pending, inc.pending_size = [], 0   # open(O_TRUNC) of a file nothing was handed on from yet
            inc.received = 0
            return
        raise FsError(errno.EPERM, "incoming files can only grow by appending")

    async def release(self, inc: Incoming) -> None:
        """Last handle gone: store the content if flush has not already."""
        inc.open_count -= 1
        if inc.open_count <= 0:
            await self.store(inc)

    async def store(self, inc: Incoming) -> None:
        """Commit the written bytes; the entry becomes a symlink to ../sha1/<hash>/<name>.
        A refused write (disk full, ...) raises FsError with its errno: close() reports it."""
        if inc.writer is None:
            return
        await self._drain(inc)
        if inc.error is not None:
            await self._raise_batch_error(inc)
        writer, inc.writer = inc.writer, None
        pending, inc.pending, inc.pending_size = inc.pending, [], 0
        if self.by_name.get(inc.entry.name or "") is not inc:
            await trio.to_thread.run_sync(writer.abort)      # removed while open: store nothing
            return

        def commit() -> StoredBlob:
            with writer:
                if pending:
                    writer.write_parts(pending)
                return writer.commit()
        try:
            blob = await trio.to_thread.run_sync(commit)
        except LocalStorageError as e:
            self.by_name.pop(inc.entry.name or "", None)
            raise FsError(e.errno or errno.EIO, str(e)) from None
        except BaseException:
            self.by_name.pop(inc.entry.name or "", None)
            raise
        inc.sha1 = blob.sha1
        metrics.count_stored("mount", blob.size)
        assert inc.entry.name is not None
        await self.node.record_stored(blob.sha1, inc.entry.name, blob.manifest_sha1)
        log.info("stored incoming/%s as sha1://%s", inc.entry.name, inc.sha1)

    async def _abandon(self, inc: Incoming) -> None:
        """Store nothing of this file: its temp file is removed."""
        writer, inc.writer = inc.writer, None   # the writer task drops what is still queued
        await self._drain(inc)                  # never close the temp file under a worker thread
        if writer is not None:
            await trio.to_thread.run_sync(writer.abort)

    async def _discard(self, inc: Incoming) -> None:
        """A failed write: nothing of this file is stored, and its entry goes away."""
        await self._abandon(inc)
        if self.by_name.get(inc.entry.name or "") is inc:
            del self.by_name[inc.entry.name or ""]
        log.warning("discarded incoming/%s after a failed write", inc.entry.name)

    async def unlink(self, name: str) -> None:
        inc = self.by_name.pop(name, None)
        if inc is None:
            raise NotFoundError(name)
        if inc.writer is not None:              # removed mid-write: store nothing
            await self._abandon(inc)
