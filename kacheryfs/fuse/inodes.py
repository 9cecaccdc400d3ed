"""Inode numbers of content in the mount: one per hash directory, one per blob (every name under
sha1/<h>/ is a hard link of that one file, so the kernel keeps one page cache per content).

The number is derived from the hash (60 bits of it, a kind bit, a tag bit), so a listing of sha1/
needs no table to number its entries. What the kernel holds is counted (lookups, readdirplus
entries) and forgotten when the kernel forgets it (`forget`), so memory follows what the kernel
caches, not how many hashes were ever listed. One int per inode packs the full hash with its
lookup count: about 130 bytes each. No pyfuse3 here.
"""

from __future__ import annotations

HASHDIR, BLOB = 0, 1
_TAG = 1 << 62
_COUNT_BITS = 32
_COUNT_MASK = (1 << _COUNT_BITS) - 1


def content_ino(sha1: str, kind: int) -> int:
    return _TAG | (int(sha1[:15], 16) << 1) | kind


def is_content_ino(ino: int) -> bool:
    return bool(ino & _TAG)


class ContentInodes:
    def __init__(self) -> None:
        self._table: dict[int, int] = {}        # ino -> (hash << 32) | lookup count
        self.names: dict[int, str] = {}         # blob ino -> the name it was last looked up as

    def __len__(self) -> int:
        return len(self._table)

    def ref(self, sha1: str, kind: int, count: int = 1) -> int | None:
        """The content's inode, its lookup count raised by `count`; None if another hash holds
        that number (a 60-bit collision: the caller numbers it otherwise)."""
        ino = content_ino(sha1, kind)
        digest = int(sha1, 16)
        packed = self._table.get(ino)
        if packed is None:
            self._table[ino] = (digest << _COUNT_BITS) | count
        elif packed >> _COUNT_BITS != digest:
            return None
        else:
            self._table[ino] = packed + count
        return ino

    def is_free_for(self, ino: int, sha1: str) -> bool:
        """`ino` is unused or already this hash's (False only on a 60-bit collision)."""
        packed = self._table.get(ino)
        return packed is None or packed >> _COUNT_BITS == int(sha1, 16)

    def sha1(self, ino: int) -> str | None:
        packed = self._table.get(ino)
        return None if packed is None else format(packed >> _COUNT_BITS, "040x")

    def forget(self, ino: int, count: int) -> None:
        packed = self._table.get(ino)
        if packed is None:
            return
        if (packed & _COUNT_MASK) <= count:
            del self._table[ino]
            self.names.pop(ino, None)
        else:
            self._table[ino] = packed - count
