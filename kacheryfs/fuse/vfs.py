"""What the mount looks like: its namespace, inode table and attributes. No pyfuse3 here.

    /                      directory
    /sha1/                 directory: lists the hashes present locally (never the network)
    /sha1/<hash>/          directory: lists the names the hash was stored under (at least one)
    /sha1/<hash>/<name>    the blob's bytes, read-only; any valid name works, as in a URI
    /incoming/             directory: write a file here; on close it is hashed and stored, and
    /incoming/<name>         the entry becomes a symlink to ../sha1/<hash>/<name>

Content under sha1/ is immutable, so its entries and attributes carry long timeouts and open
files keep the kernel's page cache. A hash that is not local starts a fetch on lookup, which
returns as soon as the size is known (Node.open_content); reads of a file still arriving wait
only for the verified chunks they cover (`Content.read`), so `head -c 100` of a large remote file
does not wait for all of it. Every wait is bounded by `fetch_timeout`: absent everywhere ->
NotFoundError (ENOENT), a failing or slow source -> TransferError (EIO).

Concurrency: every method runs on the trio loop. Inode numbers and Entry objects are created on
first lookup and kept for the life of the mount. Incoming files are written by one BlobWriter
each; bytes are batched in memory up to INGEST_BATCH and handed to a worker thread in the
background (at most one batch in flight per file, so memory stays bounded whatever the file's
size); store, discard and unlink first wait for that batch (`Incoming.idle`). Concurrent lookups of one missing hash share one fetch
(the fetcher is single-flight).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from kachery_client.errors import KacheryError, NotFoundError, TransferError, UsageError
from kachery_client.store import BlobWriter, StoredBlob
from kachery_client.uri import check_name, format_file_uri, is_sha1
from kacheryfs.content.fetcher import Transfer
from kacheryfs.node import Node

log = logging.getLogger(__name__)

ROOT_INODE = 1
SHA1_INODE = 2
INCOMING_INODE = 3
IMMUTABLE_TIMEOUT = 24 * 3600.0      # sha1/ never changes under a name
MUTABLE_TIMEOUT = 1.0                # root listing, incoming/
INGEST_BATCH = 4 * 1024 * 1024
XATTR_PREFIX = "user.kachery."


class FsError(KacheryError):
    """A file-system refusal with its errno (read-only content, name taken, ...)."""

    def __init__(self, code: int, message: str = ""):
        super().__init__(message or os.strerror(code))
        self.errno = code


@dataclass
class Attr:
    ino: int
    mode: int
    size: int = 0
    nlink: int = 1
    mtime_ns: int = 0
    timeout: float = IMMUTABLE_TIMEOUT


@dataclass
class Entry:
    ino: int
    kind: str                            # "dir", "hashdir", "blob", "incoming"
    sha1: str | None = None
    name: str | None = None


def _set_event() -> trio.Event:
    event = trio.Event()
    event.set()
    return event


@dataclass
class Incoming:
    """A file in incoming/: being written (writer set), or stored (sha1 set, then a symlink)."""
    entry: Entry
    writer: BlobWriter | None = None
    pending: bytearray = field(default_factory=bytearray)
    open_count: int = 0
    sha1: str | None = None
    idle: trio.Event = field(default_factory=_set_event)   # no batch in a worker thread
    error: OSError | None = None                             # what the last batch hit
    received: int = 0                                        # bytes accepted from the kernel
    mtime_ns: int = field(default_factory=time.time_ns)

    @property
    def size(self) -> int:
        return self.received


class Content:
    """An open file under sha1/: the local blob, or a transfer whose verified ranges can be read."""

    def __init__(self, source: Path | Transfer, fetch_timeout: float):
        self.transfer = source if isinstance(source, Transfer) else None
        path = source if isinstance(source, Path) else source.part_path
        assert path is not None
        # The part file is renamed into the store when complete: this descriptor stays valid.
        self.fd = os.open(path, os.O_RDONLY)
        self.fetch_timeout = fetch_timeout

    async def read(self, offset: int, size: int) -> bytes:
        t = self.transfer
        if t is not None and t.path is None:
            end = min(offset + size, t.size)
            with trio.move_on_after(self.fetch_timeout) as scope:
                await t.wait_range(offset, end)
            if scope.cancelled_caught:
                raise TransferError(f"bytes {offset}-{end} of sha1://{t.sha1} took longer than "
                                    f"{self.fetch_timeout} s to arrive")
        return os.pread(self.fd, size, offset)

    def close(self) -> None:
        os.close(self.fd)


class VFS:
    def __init__(self, node: Node, fetch_timeout: float = 60.0, spawn: Any = None):
        self.node = node
        self.fetch_timeout = fetch_timeout
        # Where background batch writes run (the mount's nursery); None: write inline.
        self._spawn = spawn
        self._entries: dict[int, Entry] = {
            ROOT_INODE: Entry(ROOT_INODE, "dir"), SHA1_INODE: Entry(SHA1_INODE, "dir"),
            INCOMING_INODE: Entry(INCOMING_INODE, "dir")}
        self._by_key: dict[tuple[str, ...], int] = {}
        self._incoming: dict[str, Incoming] = {}
        self._next_ino = 16
        self._started_ns = time.time_ns()

    # ---- inode table --------------------------------------------------------------------

    def entry(self, ino: int) -> Entry:
        try:
            return self._entries[ino]
        except KeyError:
            raise NotFoundError(f"no inode {ino}") from None

    def _intern(self, key: tuple[str, ...], kind: str, sha1: str | None = None, name: str | None = None) -> Entry:
        ino = self._by_key.get(key)
        if ino is None:
            ino = self._next_ino
            self._next_ino += 1
            self._by_key[key] = ino
            self._entries[ino] = Entry(ino, kind, sha1, name)
        return self._entries[ino]

    # ---- lookup and attributes ----------------------------------------------------------

    async def lookup(self, parent: int, name: str) -> Attr:
        if parent == ROOT_INODE:
            if name == "sha1":
                return self._dir_attr(SHA1_INODE, IMMUTABLE_TIMEOUT)
            if name == "incoming":
                return self._dir_attr(INCOMING_INODE, MUTABLE_TIMEOUT)
            raise NotFoundError(name)
        if parent == SHA1_INODE:
            sha1 = name.lower()
            if not is_sha1(sha1):
                raise NotFoundError(f"not a hash: {name!r}")
            await self.content_source(sha1)             # starts a fetch if it must
            return self._dir_attr(self._intern(("hash", sha1), "hashdir", sha1).ino, IMMUTABLE_TIMEOUT)
        if parent == INCOMING_INODE:
            inc = self._incoming.get(name)
            if inc is None:
                raise NotFoundError(name)
            return self.incoming_attr(inc)
        parent_entry = self.entry(parent)
        if parent_entry.kind == "hashdir":
            try:
                if not name or "/" in name:
                    raise UsageError("a file name is one non-empty segment")
                check_name(name)
            except UsageError:
                raise NotFoundError(name) from None
            assert parent_entry.sha1 is not None
            blob = self._intern(("blob", parent_entry.sha1, name), "blob", parent_entry.sha1, name)
            return await self.getattr(blob.ino)
        raise NotFoundError(name)

    async def getattr(self, ino: int) -> Attr:
        e = self.entry(ino)
        if e.kind == "dir":
            return self._dir_attr(ino, IMMUTABLE_TIMEOUT if ino == SHA1_INODE else MUTABLE_TIMEOUT)
        if e.kind == "hashdir":
            return self._dir_attr(ino, IMMUTABLE_TIMEOUT)
        if e.kind == "incoming":
            assert e.name is not None
            inc = self._incoming.get(e.name)
            if inc is None or inc.entry.ino != ino:
                raise NotFoundError(e.name)
            return self.incoming_attr(inc)
        assert e.sha1 is not None
        source = await self.content_source(e.sha1)
        if isinstance(source, Transfer):
            return Attr(ino, stat.S_IFREG | 0o444, size=source.size, mtime_ns=self._started_ns)
        st = os.stat(source)
        return Attr(ino, stat.S_IFREG | 0o444, size=st.st_size, mtime_ns=st.st_mtime_ns)

    def _dir_attr(self, ino: int, timeout: float) -> Attr:
        mode = stat.S_IFDIR | (0o777 if ino == INCOMING_INODE else 0o555)
        return Attr(ino, mode, nlink=2, mtime_ns=self._started_ns, timeout=timeout)

    def incoming_attr(self, inc: Incoming) -> Attr:
        if inc.sha1 is not None:
            target = self.symlink_target(inc)
            return Attr(inc.entry.ino, stat.S_IFLNK | 0o777, size=len(target), mtime_ns=inc.mtime_ns,
                        timeout=MUTABLE_TIMEOUT)
        return Attr(inc.entry.ino, stat.S_IFREG | 0o644, size=inc.size, mtime_ns=inc.mtime_ns,
                    timeout=0.0)

    async def content_source(self, sha1: str) -> Path | Transfer:
        """The local blob, or the running transfer once its size is known, within fetch_timeout."""
        path = self.node.store.locate(sha1)
        if path is not None:
            return path
        with trio.move_on_after(self.fetch_timeout) as scope:
            return await self.node.open_content(sha1)
        assert scope.cancelled_caught
        raise TransferError(f"finding sha1://{sha1} took longer than {self.fetch_timeout} s")

    async def open_content(self, sha1: str) -> Content:
        return Content(await self.content_source(sha1), self.fetch_timeout)

    # ---- directories --------------------------------------------------------------------

    async def list_dir(self, ino: int, start: int) -> Iterator[tuple[str, Attr, int]]:
        """(name, attributes, next offset) from offset `start` on. sha1/ never touches the network."""
        e = self.entry(ino)
        if ino == ROOT_INODE:
            top = [("sha1", self._dir_attr(SHA1_INODE, IMMUTABLE_TIMEOUT)),
                   ("incoming", self._dir_attr(INCOMING_INODE, MUTABLE_TIMEOUT))]
            return ((n, a, i + 1) for i, (n, a) in enumerate(top) if i >= start)
        if ino == SHA1_INODE:
            return self._list_hashes(start)
        if ino == INCOMING_INODE:
            items = sorted(self._incoming.items())
            return ((n, self.incoming_attr(inc), i + 1) for i, (n, inc) in enumerate(items) if i >= start)
        if e.kind == "hashdir":
            assert e.sha1 is not None
            names = await self.node.names_for(e.sha1) or [e.sha1]
            out = []
            for i, name in enumerate(names):
                if i >= start:
                    blob = self._intern(("blob", e.sha1, name), "blob", e.sha1, name)
                    out.append((name, await self.getattr(blob.ino), i + 1))
            return iter(out)
        raise FsError(errno.ENOTDIR)

    def _list_hashes(self, start: int) -> Iterator[tuple[str, Attr, int]]:
        for i, sha1 in enumerate(self.node.store.iter_hashes()):
            if i >= start:
                entry = self._intern(("hash", sha1), "hashdir", sha1)
                yield sha1, self._dir_attr(entry.ino, IMMUTABLE_TIMEOUT), i + 1

    # ---- incoming/ ------------------------------------------------------------------------

    async def create(self, parent: int, name: str) -> Incoming:
        if parent != INCOMING_INODE:
            raise FsError(errno.EROFS, "only incoming/ is writable")
        try:
            check_name(name)
        except UsageError as e:
            raise FsError(errno.EINVAL, str(e)) from None
        if "/" in name or name in self._incoming:
            raise FsError(errno.EEXIST, name)
        writer = await trio.to_thread.run_sync(self.node.store.writer)
        entry = self._intern(("incoming", name, str(time.time_ns())), "incoming", name=name)
        inc = Incoming(entry, writer=writer, open_count=1)
        self._incoming[name] = inc
        return inc

    def incoming(self, ino: int) -> Incoming:
        e = self.entry(ino)
        inc = self._incoming.get(e.name or "") if e.kind == "incoming" else None
        if inc is None or inc.entry.ino != ino:
            raise NotFoundError(f"inode {ino}")
        return inc

    async def write(self, inc: Incoming, offset: int, data: bytes) -> int:
        if inc.writer is None:
            if self._incoming.get(inc.entry.name or "") is not inc:
                raise FsError(errno.EIO, "this incoming file was discarded")
            raise FsError(errno.EROFS, "already stored: content is immutable")
        if offset != inc.size:
            # Hashing as bytes arrive needs them in order; cp, shells and Python all write so.
            await self._discard(inc)
            raise FsError(errno.EIO, f"incoming/ takes sequential writes only (offset {offset}, size {inc.size})")
        inc.pending += data
        inc.received += len(data)
        if len(inc.pending) >= INGEST_BATCH:
            # Double buffering: one batch hashed and written in a thread while the next fills,
            # so replies to the kernel do not wait for hashing. Memory: two batches per file.
            await inc.idle.wait()
            await self._raise_batch_error(inc)
            batch, inc.pending = inc.pending, bytearray()
            inc.idle = trio.Event()
            if self._spawn is not None:
                self._spawn(self._write_batch, inc, inc.writer, batch, inc.idle)
            else:
                await self._write_batch(inc, inc.writer, batch, inc.idle)
                await self._raise_batch_error(inc)
        inc.mtime_ns = time.time_ns()
        return len(data)

    @staticmethod
    async def _write_batch(inc: Incoming, writer: BlobWriter, batch: bytearray, done: trio.Event) -> None:
        try:
            await trio.to_thread.run_sync(writer.write, batch)
        except OSError as e:                  # e.g. ENOSPC in the storage dir
            inc.error = e
        finally:
            done.set()

    async def _raise_batch_error(self, inc: Incoming) -> None:
        if inc.error is not None:
            error = inc.error
            await self._discard(inc)
            raise FsError(error.errno or errno.EIO, str(error))

    async def truncate(self, inc: Incoming, size: int) -> None:
        if size == inc.size:
            return
        if size == 0 and inc.writer is not None and inc.received == len(inc.pending):
            inc.pending.clear()         # open(O_TRUNC) of a file nothing was handed on from yet
            inc.received = 0
            return
        raise FsError(errno.EPERM, "incoming files can only grow by appending")

    async def release(self, inc: Incoming) -> None:
        """Last handle gone: store the content if flush has not already."""
        inc.open_count -= 1
        if inc.open_count <= 0:
            await self.store(inc)

    async def store(self, inc: Incoming) -> None:
        """Commit the written bytes; the entry becomes a symlink to ../sha1/<hash>/<name>."""
        if inc.writer is None:
            return
        await inc.idle.wait()
        if inc.error is not None:
            await self._discard(inc)
            return
        writer, inc.writer = inc.writer, None
        pending, inc.pending = inc.pending, bytearray()
        if self._incoming.get(inc.entry.name or "") is not inc:
            await trio.to_thread.run_sync(writer.abort)      # removed while open: store nothing
            return

        def commit() -> StoredBlob:
            with writer:
                if pending:
                    writer.write(pending)
                return writer.commit()
        try:
            blob = await trio.to_thread.run_sync(commit)
        except BaseException:
            self._incoming.pop(inc.entry.name or "", None)
            raise
        inc.sha1 = blob.sha1
        assert inc.entry.name is not None
        await self.node.record_stored(blob.sha1, inc.entry.name, blob.manifest_sha1)
        log.info("stored incoming/%s as sha1://%s", inc.entry.name, inc.sha1)

    async def _discard(self, inc: Incoming) -> None:
        """A failed write: nothing of this file is stored, and its entry goes away."""
        await inc.idle.wait()                 # never close the temp file under a worker thread
        writer, inc.writer = inc.writer, None
        if writer is not None:
            await trio.to_thread.run_sync(writer.abort)
        if self._incoming.get(inc.entry.name or "") is inc:
            del self._incoming[inc.entry.name or ""]
        log.warning("discarded incoming/%s after a failed write", inc.entry.name)

    async def unlink(self, parent: int, name: str) -> None:
        if parent != INCOMING_INODE:
            raise FsError(errno.EROFS, "only incoming/ entries can be removed")
        inc = self._incoming.pop(name, None)
        if inc is None:
            raise NotFoundError(name)
        if inc.writer is not None:              # removed mid-write: store nothing
            await inc.idle.wait()
            writer, inc.writer = inc.writer, None
            await trio.to_thread.run_sync(writer.abort)

    def symlink_target(self, inc: Incoming) -> str:
        return f"../sha1/{inc.sha1}/{inc.entry.name}"

    # ---- extended attributes --------------------------------------------------------------

    def xattrs(self, ino: int) -> dict[str, bytes]:
        e = self.entry(ino)
        if e.kind == "blob":
            assert e.sha1 is not None
            path = self.node.store.locate(e.sha1)
            t = self.node.fetcher.transfer(e.sha1) if self.node.fetcher is not None else None
            if path is not None:
                size = os.stat(path).st_size
                progress = f"{size}/{size}"
            else:
                progress = f"{t.bytes_present}/{t.size}" if t is not None and t.ready.is_set() else "0/0"
            return {"sha1": e.sha1.encode(), "uri": format_file_uri(e.sha1, e.name or "").encode(),
                    "cached": b"1" if path is not None else b"0", "progress": progress.encode()}
        if e.kind == "incoming":
            inc = self.incoming(ino)
            if inc.sha1 is None:
                return {"cached": b"0"}
            return {"sha1": inc.sha1.encode(), "uri": format_file_uri(inc.sha1, e.name or "").encode(),
                    "cached": b"1"}
        return {}

