"""What the mount looks like: its namespace, inode table and attributes. No pyfuse3 here.

    /                      directory
    /sha1/                 directory: lists the hashes present locally (never the network)
    /sha1/<hash>/          directory: lists the names the hash was stored under (at least one)
    /sha1/<hash>/<name>    the blob's bytes, read-only; any valid name works, as in a URI
    /incoming/             directory: write a file here; on close it is hashed and stored, and
    /incoming/<name>         the entry becomes a symlink to ../sha1/<hash>/<name>

Content under sha1/ is immutable, so its entries and attributes carry long timeouts and open
files keep the kernel's page cache. A hash that is not local is fetched on open, not on lookup or
stat (`ls -l` fetches nothing: it asks the sources for the size only, Node.remote_size); open
returns as soon as the size is known (Node.open_content); reads of a file still arriving wait
only for the verified chunks they cover (`Content.read`), so `head -c 100` of a large remote file
does not wait for all of it. Every wait is bounded by `fetch_timeout`: absent everywhere ->
NotFoundError (ENOENT), a failing or slow source -> TransferError (EIO).

Inodes: one per hash directory and one per content (all names under sha1/<h>/ are hard links of
one file: one page cache per content), numbered from the hash and forgotten when the kernel
forgets them (inodes.py). Listing sha1/ pages through the node's index (listing.py), resumed
where the last readdir of the same open directory stopped; its entries give the kernel an inode
only while it holds fewer than `listing_inodes` (ops.py), so what a listing of N hashes leaves
behind, in the kernel and here, is bounded whatever N is.

Concurrency: every method runs on the trio loop. Files being written into incoming/ live in
incoming.py. Concurrent lookups of one missing hash share one fetch (the fetcher is single-flight).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import trio

from kachery_client.errors import NotFoundError, TransferError, UsageError
from kachery_client.uri import check_name, format_file_uri, is_sha1
from kacheryfs import metrics
from kacheryfs.content.fetcher import Transfer
from kacheryfs.fuse.entries import IMMUTABLE_TIMEOUT, MUTABLE_TIMEOUT, Attr, Entry, FsError
from kacheryfs.fuse.incoming import Incoming, IncomingFiles
from kacheryfs.fuse.inodes import BLOB, HASHDIR, ContentInodes, content_ino, is_content_ino
from kacheryfs.fuse.listing import DirItem, HashListing, Listing, index_pages, walk_pages
from kacheryfs.node import Node

log = logging.getLogger(__name__)
_KINDS = {HASHDIR: "hashdir", BLOB: "blob"}

ROOT_INODE = 1
SHA1_INODE = 2
INCOMING_INODE = 3
XATTR_PREFIX = "user.kachery."
_FIRST_LISTING_FH = 1 << 40          # directory handles above inode numbers of fixed entries


class Content:
    """An open file under sha1/: the local blob, or a transfer whose verified ranges can be read."""

    def __init__(self, source: Path | Transfer, fetch_timeout: float):
        self.transfer = source if isinstance(source, Transfer) else None
        path = source if isinstance(source, Path) else source.part_path
        assert path is not None
        # The part file is renamed into the store when complete: this descriptor stays valid.
        self.fd = os.open(path, os.O_RDONLY)
        self.fetch_timeout = fetch_timeout
        if self.transfer is not None:
            self.transfer.hold()          # an open file keeps its transfer going
        self._timed_out_at: float | None = None

    async def read(self, offset: int, size: int) -> bytes:
        t = self.transfer
        if t is not None and t.path is None:
            end = min(offset + size, t.size)
            wait = self.fetch_timeout
            if self._timed_out_at is not None and time.monotonic() - self._timed_out_at < self.fetch_timeout:
                wait = 0.1     # the kernel retrying a read that just timed out: fail at once, not twice as late
            with trio.move_on_after(wait) as scope:
                await t.wait_range(offset, end)
            if scope.cancelled_caught:
                self._timed_out_at = self._timed_out_at or time.monotonic()
                raise TransferError(f"bytes {offset}-{end} of sha1://{t.sha1} took longer than "
                                    f"{self.fetch_timeout} s to arrive (from {t.source or 'its sources'})")
            self._timed_out_at = None
        return os.pread(self.fd, size, offset)

    def close(self) -> None:
        os.close(self.fd)
        if self.transfer is not None:
            self.transfer.release()
            self.transfer = None


class VFS:
    def __init__(self, node: Node, fetch_timeout: float = 60.0, spawn: Any = None, listing_inodes: int = 10_000):
        self.node = node
        self.fetch_timeout = fetch_timeout
        # Up to this many content inodes held by the kernel, a listing of sha1/ hands each hash
        # out with its inode and attributes (`ls -l` or a coloured `ls` then looks none up); beyond
        # it, names only (the kernel and the node hold nothing for them).
        self.listing_inodes = listing_inodes
        # Where background batch writes run (the mount's nursery); None: write inline.
        self._spawn = spawn
        self._entries: dict[int, Entry] = {
            ROOT_INODE: Entry(ROOT_INODE, "dir"), SHA1_INODE: Entry(SHA1_INODE, "dir"),
            INCOMING_INODE: Entry(INCOMING_INODE, "dir")}
        self._by_key: dict[tuple[str, ...], int] = {}
        self.content = ContentInodes()
        metrics.MOUNT_INODES.set_function(lambda: len(self.content))
        self._listings: dict[int, HashListing] = {}
        self._next_fh = _FIRST_LISTING_FH
        self.incoming_files = IncomingFiles(node, spawn, self._new_incoming_entry)
        self._next_ino = 16
        self._started_ns = time.time_ns()

    # ---- inode table --------------------------------------------------------------------

    def entry(self, ino: int) -> Entry:
        if is_content_ino(ino):
            sha1 = self.content.sha1(ino)
            if sha1 is not None:
                kind = "blob" if ino & 1 == BLOB else "hashdir"
                return Entry(ino, kind, sha1, self.content.names.get(ino))
        try:
            return self._entries[ino]
        except KeyError:
            raise NotFoundError(f"no inode {ino}") from None

    def content_ino(self, sha1: str, kind: int) -> int:
        """The inode number of a hash directory or blob (a numbered entry in the rare collision)."""
        ino = content_ino(sha1, kind)
        if self.content.is_free_for(ino, sha1):
            return ino
        return self._intern(("hash" if kind == HASHDIR else "blob", sha1), _KINDS[kind], sha1).ino

    def taken(self, sha1: str, kind: int, name: str | None = None) -> int:
        """The kernel now holds this content's inode once more (a lookup or readdirplus entry)."""
        ino = self.content.ref(sha1, kind)
        if ino is None:
            return self.content_ino(sha1, kind)
        # The name the content was last reached by (open records it as fetched under it); the
        # hash itself, which lists a content with no known name, never replaces a real one.
        if kind == BLOB and name is not None and (name != sha1 or ino not in self.content.names):
            self.content.names[ino] = name
        return ino

    def lists_with_inode(self) -> bool:
        """The next hash listed in sha1/ goes out with its inode (then `taken`), not as a name only."""
        return len(self.content) < self.listing_inodes

    def forget(self, inodes: Iterable[tuple[int, int]]) -> None:
        for ino, count in inodes:
            if is_content_ino(ino):
                self.content.forget(ino, count)

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
            if not self._blob_file_here(sha1):
                await self.size_of(sha1)                # absent everywhere: ENOENT; fetches nothing
            return self._dir_attr(self.taken(sha1, HASHDIR), IMMUTABLE_TIMEOUT)
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
            attr = await self._blob_attr(self.content_ino(parent_entry.sha1, BLOB), parent_entry.sha1)
            self.taken(parent_entry.sha1, BLOB, name)
            return attr
        raise NotFoundError(name)

    def _blob_file_here(self, sha1: str) -> bool:
        """One stat, on the loop: `ls -l sha1/` looks up every hash listed without its attributes
        (beyond `listing_inodes`). The directory of a blob file present exists; its bytes are checked
        when a file in it is looked up or opened (a torn blob is then missing, as everywhere)."""
        try:
            return stat.S_ISREG(os.stat(self.node.store.path_for(sha1)).st_mode)
        except OSError:
            return False

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
        return await self._blob_attr(ino, e.sha1)

    async def _blob_attr(self, ino: int, sha1: str) -> Attr:
        """Without fetching: stat and `ls -l` of remote content ask the sources for its size only
        (the download starts on open, as in CVMFS and rclone)."""
        path = await self._local_blob(sha1)
        if path is None:
            return Attr(ino, stat.S_IFREG | 0o444, size=await self._remote_size(sha1), mtime_ns=self._started_ns)
        st = os.stat(path)
        return Attr(ino, stat.S_IFREG | 0o444, size=st.st_size, mtime_ns=st.st_mtime_ns)

    async def _local_blob(self, sha1: str) -> Path | None:
        """The blob's file if it is here and sound. A large blob known sound without hashing is found
        inline (no thread hop per open); otherwise in a thread, never on the loop: locating hashes a
        small blob, or a large one after an unclean shutdown."""
        return self.node.store.locate_unhashed(sha1) or await trio.to_thread.run_sync(self.node.store.locate, sha1)

    async def size_of(self, sha1: str) -> int:
        """A blob's size, local or from the sources, within fetch_timeout, without fetching it."""
        path = await self._local_blob(sha1)
        if path is not None:
            return os.stat(path).st_size
        return await self._remote_size(sha1)

    async def _remote_size(self, sha1: str) -> int:
        with trio.move_on_after(self.fetch_timeout) as scope:
            return await self.node.remote_size(sha1)
        assert scope.cancelled_caught
        raise TransferError(f"finding sha1://{sha1} took longer than {self.fetch_timeout} s")

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
        path = await self._local_blob(sha1)
        if path is not None:
            return path
        with trio.move_on_after(self.fetch_timeout) as scope:
            return await self.node.open_content(sha1)
        assert scope.cancelled_caught
        raise TransferError(f"finding sha1://{sha1} took longer than {self.fetch_timeout} s")

    async def open_content(self, sha1: str, name: str | None = None) -> Content:
        content = Content(await self.content_source(sha1), self.fetch_timeout)
        if name and name != sha1 and content.transfer is not None:
            # Fetched under this name: `ls sha1/<hash>/` lists it from now on (a hint: never fails the open).
            try:
                await self.node.record_name(sha1, name)
            except Exception as e:
                log.warning("could not record the name %r of sha1://%s: %s", name, sha1, e)
        return content

    # ---- directories --------------------------------------------------------------------

    def open_dir(self, ino: int) -> int:
        """A handle for readdir: sha1/ gets a HashListing of its own, resumed call after call: from
        the index once the node's startup reconciliation has run, from a walk of the store before."""
        if ino != SHA1_INODE:
            return ino
        fh = self._next_fh
        self._next_fh += 1
        pages = index_pages(self.node) if self.node.lifecycle.reconciled else walk_pages(self.node)
        self._listings[fh] = HashListing(pages)
        return fh

    def release_dir(self, fh: int) -> None:
        self._listings.pop(fh, None)

    async def listing(self, fh: int, start: int) -> Listing | HashListing:
        """The entries of an open directory from offset `start` on. sha1/ never touches the network."""
        hashes = self._listings.get(fh)
        if hashes is not None:
            return hashes
        items = await self._dir_items(fh)
        listing = Listing(lambda: iter(items))
        listing.seek(start)
        return listing

    def hashdir_attr(self, sha1: str) -> Attr:
        return self._dir_attr(self.content_ino(sha1, HASHDIR), IMMUTABLE_TIMEOUT)

    async def list_dir(self, ino: int, start: int) -> list[DirItem]:
        """All entries of a directory from offset `start` on (for callers without a handle)."""
        fh = self.open_dir(ino)
        try:
            listing = await self.listing(fh, start)
            out: list[DirItem] = []
            if isinstance(listing, HashListing):
                while True:
                    page, i = await listing.entries(start)
                    if i == len(page):
                        return out
                    out += [DirItem(sha1, self.hashdir_attr(sha1), next_id, sha1) for next_id, sha1 in page[i:]]
                    start = listing.took(len(page) - i)
            while (item := listing.peek()) is not None:
                out.append(item)
                listing.advance()
            return out
        finally:
            self.release_dir(fh)

    async def _dir_items(self, ino: int) -> list[DirItem]:
        e = self.entry(ino)
        if ino == ROOT_INODE:
            return [DirItem("sha1", self._dir_attr(SHA1_INODE, IMMUTABLE_TIMEOUT), 1),
                    DirItem("incoming", self._dir_attr(INCOMING_INODE, MUTABLE_TIMEOUT), 2)]
        if ino == INCOMING_INODE:
            items = sorted(self.incoming_files.by_name.items())
            return [DirItem(n, self.incoming_attr(inc), i + 1) for i, (n, inc) in enumerate(items)]
        if e.kind == "hashdir":
            assert e.sha1 is not None
            names = await self.node.names_for(e.sha1) or [e.sha1]
            attr = await self._blob_attr(self.content_ino(e.sha1, BLOB), e.sha1)
            return [DirItem(name, attr, i + 1, e.sha1, BLOB) for i, name in enumerate(names)]
        raise FsError(errno.ENOTDIR)

    # ---- incoming/: namespace checks here, the files themselves in incoming.py ---------------

    async def create(self, parent: int, name: str) -> Incoming:
        if parent != INCOMING_INODE:
            raise FsError(errno.EPERM, "only incoming/ is writable")
        return await self.incoming_files.create(name)

    def incoming(self, ino: int) -> Incoming:
        return self.incoming_files.get(self.entry(ino))

    async def unlink(self, parent: int, name: str) -> None:
        if parent != INCOMING_INODE:
            raise FsError(errno.EPERM, "only incoming/ entries can be removed")
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

