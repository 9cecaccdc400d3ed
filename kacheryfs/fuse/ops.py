"""pyfuse3.Operations over the VFS: translation only, and the only place that raises FUSEError.

    NotFoundError -> ENOENT, TransferError / IntegrityError -> EIO, FsError -> its errno,
    LocalStorageError -> its errno (ENOSPC, EDQUOT, EROFS) or EIO, UsageError -> EINVAL,
    another OSError -> its errno, anything unexpected -> EIO (logged with its traceback, the mount
    lives on). An ExceptionGroup is judged by its first deliberate error. Every handler is wrapped
    (statfs included): pyfuse3 ends the FUSE loop on any error that is not a FUSEError.

Reads of blobs use os.pread on a descriptor kept per open file (vfs.Content), straight from the
loop: the blob is a local file, and a thread hop per 128 KiB request would cost more than the
read. A file still arriving first waits, on the loop, for the verified chunks a read covers.
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pyfuse3

from kachery_client.errors import IntegrityError, LocalStorageError, NotFoundError, TransferError, UsageError
from kacheryfs import metrics
from kacheryfs.exception_groups import first_error, leaves
from kacheryfs.fuse.inodes import HASHDIR, content_ino
from kacheryfs.fuse.listing import HashListing
from kacheryfs.fuse.plain_entries import PlainEntry, plain_entry
from kacheryfs.fuse.vfs import VFS, XATTR_PREFIX, Attr, Content, FsError, Incoming

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
_UID, _GID = os.getuid(), os.getgid()


def errno_for(error: BaseException, where: str) -> int:
    """The FUSE edge's one error policy: the errno a handler's failure answers with."""
    e = first_error(error)                  # a trio nursery's group: its first deliberate error
    if isinstance(e, pyfuse3.FUSEError):
        return e.errno
    if isinstance(e, NotFoundError):
        return errno.ENOENT
    if isinstance(e, FsError):
        return e.errno
    if isinstance(e, LocalStorageError):
        log.warning("%s: %s", where, e)
        return e.errno or errno.EIO
    if isinstance(e, (TransferError, IntegrityError)):
        log.warning("%s: %s", where, e)
        return errno.EIO
    if isinstance(e, UsageError):
        return errno.EINVAL
    if isinstance(e, OSError):
        return e.errno or errno.EIO
    log.error("unexpected error in %s", where, exc_info=error)
    return errno.EIO


def _translate(fn: F) -> F:
    """No error but FUSEError may leave a handler: pyfuse3 ends its main loop (and the mount) on
    anything else. Cancellation (a BaseException with no Exception inside) still passes."""
    operation = metrics.FUSE_OPERATIONS.labels(fn.__name__)

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        operation.inc()
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except Exception as e:
            raise pyfuse3.FUSEError(errno_for(e, fn.__name__)) from None
        except BaseExceptionGroup as group:     # an error beside a cancellation: answer the error
            if not any(isinstance(leaf, Exception) for leaf in leaves(group)):
                raise
            raise pyfuse3.FUSEError(errno_for(group, fn.__name__)) from None
    return wrapper  # type: ignore[return-value]


def _entry(attr: Attr) -> pyfuse3.EntryAttributes:
    e = pyfuse3.EntryAttributes()
    e.st_ino = attr.ino
    e.st_mode = attr.mode
    e.st_nlink = attr.nlink
    e.st_size = attr.size
    e.st_uid = _UID
    e.st_gid = _GID
    e.st_blksize = 1 << 20         # cp and friends size their buffers by it: 1 MiB writes, and one
                                   # kernel security.capability check per write syscall, not per 128 KiB
    e.st_blocks = (attr.size + 511) // 512
    e.st_atime_ns = e.st_mtime_ns = e.st_ctime_ns = attr.mtime_ns
    e.entry_timeout = attr.timeout
    e.attr_timeout = attr.timeout
    return e


class Operations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, vfs: VFS):
        super().__init__()
        self.vfs = vfs
        self._readers: dict[int, Content] = {}    # file handle -> open blob (or blob arriving)
        self._writers: dict[int, Incoming] = {}   # file handle -> incoming file
        self._next_fh = 1
        # The entry sent for every hash in sha1/ (None: this pyfuse3 cannot send plain entries).
        self._hashdir: PlainEntry | None = plain_entry(_entry(vfs.hashdir_attr("0" * 40)))

    def _new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    @_translate
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return _entry(await self.vfs.lookup(parent_inode, os.fsdecode(name)))

    @_translate
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return _entry(await self.vfs.getattr(inode))

    @_translate
    async def setattr(self, inode: int, attr: Any, fields: Any, fh: Any, ctx: Any) -> pyfuse3.EntryAttributes:
        if fields.update_size:
            await self.vfs.incoming_files.truncate(self.vfs.incoming(inode), attr.st_size)
        return _entry(await self.vfs.getattr(inode))   # mode and times of stored content stay as they are

    @_translate
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        inc = self.vfs.incoming(inode)
        if inc.sha1 is None:
            raise pyfuse3.FUSEError(errno.EINVAL)
        return os.fsencode(inc.symlink_target())

    @_translate
    async def opendir(self, inode: int, ctx: Any) -> int:
        attr = await self.vfs.getattr(inode)
        if not attr.mode & 0o040000:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return self.vfs.open_dir(inode)

    @_translate
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        listing = await self.vfs.listing(fh, start_id)
        if isinstance(listing, HashListing):
            await self._readdir_hashes(listing, start_id, token)
            return
        # readdir_reply copies the attributes at once: entries that differ only in their inode
        # share one EntryAttributes, renumbered per entry (sha1/ itself: _readdir_hashes).
        shared: dict[tuple[int, int, int, int, float], pyfuse3.EntryAttributes] = {}
        while (item := listing.peek()) is not None:
            a = item.attr
            key = (a.mode, a.size, a.nlink, a.mtime_ns, a.timeout)
            entry = shared.get(key)
            if entry is None:
                entry = shared[key] = _entry(a)
            entry.st_ino = a.ino
            if not pyfuse3.readdir_reply(token, os.fsencode(item.name), entry, item.next_id):
                break
            listing.advance()
            if item.sha1 is not None:       # readdirplus: the kernel now holds the inode
                self.vfs.taken(item.sha1, item.kind, item.name)

    async def _readdir_hashes(self, listing: HashListing, start: int, token: Any) -> None:
        """sha1/: page after page while the kernel has room. Each entry goes out with its inode (a
        counted lookup) while the kernel holds fewer than `vfs.listing_inodes`, then plain (no
        inode for the kernel to hold, plain_entries.py) where this pyfuse3 allows."""
        plain, reply, vfs = self._hashdir, pyfuse3.readdir_reply, self.vfs
        while True:
            page, i = await listing.entries(start)
            sent = 0
            for next_id, sha1 in itertools.islice(page, i, None):
                if plain is not None and not vfs.lists_with_inode():
                    if not reply(token, sha1.encode(), plain.d_ino(content_ino(sha1, HASHDIR)), next_id):
                        break
                elif reply(token, sha1.encode(), _entry(vfs.hashdir_attr(sha1)), next_id):
                    vfs.taken(sha1, HASHDIR)
                else:
                    break
                sent += 1
            start = listing.took(sent)
            if i + sent < len(page) or not page:      # the kernel's buffer is full, or sha1/ ends
                return

    async def releasedir(self, fh: int) -> None:
        self.vfs.release_dir(fh)

    async def forget(self, inode_list: Any) -> None:
        self.vfs.forget(inode_list)

    @_translate
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        entry = self.vfs.entry(inode)
        if entry.kind == "incoming":
            inc = self.vfs.incoming(inode)
            if inc.writer is None:                 # stored: its content is immutable
                raise pyfuse3.FUSEError(errno.EPERM)
            inc.open_count += 1
            fh = self._new_fh()
            self._writers[fh] = inc
            return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)
        if entry.kind != "blob":
            raise pyfuse3.FUSEError(errno.EISDIR)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise pyfuse3.FUSEError(errno.EPERM)     # stored content never changes
        assert entry.sha1 is not None
        content = await self.vfs.open_content(entry.sha1, entry.name)
        fh = self._new_fh()
        self._readers[fh] = content
        # Only verified bytes are ever returned, and they never change: the page cache may keep them.
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    @_translate
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: Any) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        inc = await self.vfs.create(parent_inode, os.fsdecode(name))
        fh = self._new_fh()
        self._writers[fh] = inc
        return pyfuse3.FileInfo(fh=fh, direct_io=True), _entry(self.vfs.incoming_attr(inc))

    @_translate
    async def read(self, fh: int, off: int, size: int) -> bytes:
        content = self._readers.get(fh)
        if content is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        data = await content.read(off, size)
        metrics.FUSE_READ_BYTES.inc(len(data))
        return data

    @_translate
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        inc = self._writers.get(fh)
        if inc is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        return await self.vfs.incoming_files.write(inc, off, buf)

    @_translate
    async def flush(self, fh: int) -> None:
        """close(): store what was written, so that incoming/<name> is the symlink when close()
        returns (the kernel waits for this answer, not for release). The kernel also flushes on
        close of a dup (a shell's `>` does open, dup2, close before writing): a file nothing was
        written to yet is left open, and stored at release."""
        inc = self._writers.get(fh)
        if inc is not None and inc.received:
            await self.vfs.incoming_files.store(inc)

    @_translate
    async def release(self, fh: int) -> None:
        content = self._readers.pop(fh, None)
        if content is not None:
            content.close()
            return
        inc = self._writers.pop(fh, None)
        if inc is not None:
            await self.vfs.incoming_files.release(inc)

    @_translate
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.vfs.unlink(parent_inode, os.fsdecode(name))

    # Only files, and only in incoming/: no directories, renames or links anywhere (EPERM, not
    # the default ENOSYS, which tools report as "function not implemented").
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        raise pyfuse3.FUSEError(errno.EPERM)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        raise pyfuse3.FUSEError(errno.EPERM)

    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes,
                     flags: int, ctx: Any) -> None:
        raise pyfuse3.FUSEError(errno.EPERM)

    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        raise pyfuse3.FUSEError(errno.EPERM)

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        raise pyfuse3.FUSEError(errno.EPERM)

    @_translate
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        key = os.fsdecode(name)
        values = self.vfs.xattrs(inode)
        if not key.startswith(XATTR_PREFIX) or key[len(XATTR_PREFIX):] not in values:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return values[key[len(XATTR_PREFIX):]]

    @_translate
    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        return [os.fsencode(XATTR_PREFIX + k) for k in self.vfs.xattrs(inode)]

    @_translate
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        st = os.statvfs(self.vfs.node.storage_dir)
        out = pyfuse3.StatvfsData()
        for attr in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree",
                     "f_favail", "f_namemax"):
            setattr(out, attr, getattr(st, attr))
        return out
