"""The ceiling for reads through a pyfuse3 mount: a file system that only passes one file through.

    python bench/passthrough.py <file> <mountpoint>     # <mountpoint>/f reads <file>

Root directory with one entry `f`; open keeps the page cache (keep_cache), reads are os.pread on
the loop, exactly like kacheryfs' reads of a local blob, with nothing else around them.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from typing import Any

import pyfuse3
import trio

FILE_INODE = 2


class Passthrough(pyfuse3.Operations):
    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.fds: dict[int, int] = {}

    def _attr(self, ino: int) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = ino
        if ino == pyfuse3.ROOT_INODE:
            e.st_mode, e.st_nlink = stat.S_IFDIR | 0o555, 2
        else:
            st = os.stat(self.path)
            e.st_mode, e.st_size, e.st_nlink = stat.S_IFREG | 0o444, st.st_size, 1
            e.st_mtime_ns = st.st_mtime_ns
        e.st_blksize = 1 << 20
        e.entry_timeout = e.attr_timeout = 3600
        return e

    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        if parent_inode != pyfuse3.ROOT_INODE or name != b"f":
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(FILE_INODE)

    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self._attr(inode)

    async def opendir(self, inode: int, ctx: Any) -> int:
        return inode

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        if start_id == 0:
            pyfuse3.readdir_reply(token, b"f", self._attr(FILE_INODE), 1)

    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        fd = os.open(self.path, os.O_RDONLY)
        self.fds[fd] = fd
        return pyfuse3.FileInfo(fh=fd, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return os.pread(fh, size, off)

    async def release(self, fh: int) -> None:
        os.close(self.fds.pop(fh))


def main() -> None:
    path, mountpoint = sys.argv[1], sys.argv[2]
    options = set(pyfuse3.default_options)
    options.add("fsname=passthrough")
    pyfuse3.init(Passthrough(path), mountpoint, options)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    main()
