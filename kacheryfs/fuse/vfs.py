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
first lookup and kept for the life of the mount. Files being written into incoming/ live in
incoming.py. Concurrent lookups of one missing hash share one fetch (the fetcher is single-flight).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio

from kachery_client.errors import NotFoundError, TransferError, UsageError
from kachery_client.uri import check_name, format_file_uri, is_sha1
from kacheryfs.content.fetcher import Transfer
from kacheryfs.fuse.entries import IMMUTABLE_TIMEOUT, MUTABLE_TIMEOUT, Attr, Entry, FsError
from kacheryfs.fuse.incoming import Incoming, IncomingFiles
from kacheryfs.node import Node

log = logging.getLogger(__name__)

ROOT_INODE = 1
SHA1_INODE = 2
INCOMING_INODE = 3
XATTR_PREFIX = "user.kachery."


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
        self.incoming_files = IncomingFiles(node, spawn, self._new_incoming_entry)
        self._next_ino = 16
        self._started_ns = time.time_ns()

    # ---- inode table --------------------------------------------------------------------

    def entry(self, ino: int) -> Entry:
        try:
            return self._entries[ino]
        except KeyError:
            raise NotFoundError(f"no inode {ino}") from None

    def _new_incoming_entry(self, name: str) -> Entry:
        # A new inode each time a name is created, so a stale handle never reaches a new file.
        return self._intern(("incoming", name, str(time.time_ns())), "incoming", name=name)

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
            inc = self.incoming_files.by_name.get(name)
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
            inc = self.incoming_files.by_name.get(e.name)
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
            target = inc.symlink_target()
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
            items = sorted(self.incoming_files.by_name.items())
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

    # ---- incoming/: namespace checks here, the files themselves in incoming.py ---------------

    async def create(self, parent: int, name: str) -> Incoming:
        if parent != INCOMING_INODE:
            raise FsError(errno.EROFS, "only incoming/ is writable")
        return await self.incoming_files.create(name)

    def incoming(self, ino: int) -> Incoming:
        return self.incoming_files.get(self.entry(ino))

    async def unlink(self, parent: int, name: str) -> None:
        if parent != INCOMING_INODE:
            raise FsError(errno.EROFS, "only incoming/ entries can be removed")
        await self.incoming_files.unlink(name)

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
                    "cached": b"1" if path is not None else b"0", "progress": progress.encode(),
                    "pinned": b"1" if e.sha1 in self.node.lifecycle.pinned else b"0"}
        if e.kind == "incoming":
            inc = self.incoming(ino)
            if inc.sha1 is None:
                return {"cached": b"0"}
            return {"sha1": inc.sha1.encode(), "uri": format_file_uri(inc.sha1, e.name or "").encode(),
                    "cached": b"1"}
        return {}

