"""pyfuse3.Operations over the VFS: translation only, and the only place that raises FUSEError.

    NotFoundError -> ENOENT, TransferError / IntegrityError -> EIO, FsError -> its errno,
    UsageError -> EINVAL, anything unexpected -> EIO (logged with its traceback, the mount lives on).

Reads of blobs use os.pread on a descriptor kept per open file (vfs.Content), straight from the
loop: the blob is a local file, and a thread hop per 128 KiB request would cost more than the
read. A file still arriving first waits, on the loop, for the verified chunks a read covers.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pyfuse3

from kachery_client.errors import IntegrityError, NotFoundError, TransferError, UsageError
from kacheryfs.fuse.vfs import VFS, XATTR_PREFIX, Attr, Content, FsError, Incoming

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
_UID, _GID = os.getuid(), os.getgid()


def _translate(fn: F) -> F:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except NotFoundError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None
        except FsError as e:
            raise pyfuse3.FUSEError(e.errno) from None
        except (TransferError, IntegrityError) as e:
            log.warning("%s: %s", fn.__name__, e)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except UsageError:
            raise pyfuse3.FUSEError(errno.EINVAL) from None
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        except Exception:
            log.exception("unexpected error in %s", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None
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
        # readdir_reply copies the attributes at once: entries that differ only in their inode
        # (all of sha1/) share one EntryAttributes, renumbered per entry.
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

    async def releasedir(self, fh: int) -> None:
        self.vfs.release_dir(fh)

    async def forget(self, inode_list: Any) -> None:
        self.vfs.forget(inode_list)

    @_translate
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        entry = self.vfs.entry(inode)
        if entry.kind == "incoming":
            inc = self.vfs.incoming(inode)
            if inc.writer is None:
                raise pyfuse3.FUSEError(errno.EROFS)
            inc.open_count += 1
            fh = self._new_fh()
            self._writers[fh] = inc
            return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)
        if entry.kind != "blob":
            raise pyfuse3.FUSEError(errno.EISDIR)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise pyfuse3.FUSEError(errno.EROFS)
        assert entry.sha1 is not None
        content = await self.vfs.open_content(entry.sha1)
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
        return await content.read(off, size)

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

    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        st = os.statvfs(self.vfs.node.storage_dir)
        out = pyfuse3.StatvfsData()
        for attr in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree",
                     "f_favail", "f_namemax"):
            setattr(out, attr, getattr(st, attr))
        return out
