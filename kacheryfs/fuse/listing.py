"""Directory listings of the mount, handed out readdir call by readdir call. No pyfuse3 here.

`Listing` serves a small directory (the root, incoming/, sha1/<hash>/) from its whole list of
`DirItem`s. `HashListing` serves sha1/, which may hold millions of hashes, in pages of
(offset, hash) pairs: from the node's index once its startup reconciliation has run
(`index_pages`: the offset is the record's rowid, so any offset resumes exactly, however the
index changed meanwhile), before that from a walk of the store's directories (`walk_pages`: the
offset is the position in the walk; resuming at another offset walks again). Pages are read in a
worker thread: neither SQLite nor a walk runs on the trio loop.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter
from typing import Any

import trio

from kacheryfs.fuse.entries import Attr
from kacheryfs.fuse.inodes import HASHDIR
from kacheryfs.node import Node

PAGE = 4096                      # hashes read per page: a few milliseconds of SQLite
HashPage = list[tuple[int, str]]  # (offset of the next entry, sha1)


@dataclass
class DirItem:
    """One directory entry; `sha1` set for content, whose inode the kernel then holds (readdirplus)."""
    name: str
    attr: Attr
    next_id: int
    sha1: str | None = None
    kind: int = HASHDIR


class Listing:
    """An open directory's entries, handed out from where the last readdir stopped. An entry the
    kernel had no room for stays at the front (`peek` gives it again)."""

    def __init__(self, produce: Any):
        self._produce = produce          # () -> Iterator[DirItem], the whole directory in order
        self._items: Iterator[DirItem] = iter(())
        self._held: DirItem | None = None
        self._next_id = -1

    def seek(self, start: int) -> None:
        if start == self._next_id:
            return
        self._items, self._held, self._next_id = self._produce(), None, 0
        while self._next_id < start and self.peek() is not None:
            self.advance()

    def peek(self) -> DirItem | None:
        if self._held is None:
            self._held = next(self._items, None)
        return self._held

    def advance(self) -> None:
        assert self._held is not None
        self._next_id, self._held = self._held.next_id, None


class HashListing:
    """sha1/ for one open directory handle: the page being handed out and where the kernel is in it.
    `entries(start)` gives the rest of a page from offset `start` on; the caller reports how many
    the kernel took (`took`), and asks again (the next page) while the kernel has room."""

    def __init__(self, fetch: Callable[[int], Awaitable[HashPage]]):
        self._fetch = fetch              # offset -> the page of entries after it ([] at the end)
        self._page: HashPage = []
        self._page_start = -1            # the offset the page was fetched after
        self._i = 0
        self._at = -1                    # the offset the entry at self._i follows

    async def entries(self, start: int) -> tuple[HashPage, int]:
        """(page, index): the entries from offset `start` on are page[index:]; empty at the end."""
        if start != self._at:
            # The kernel resumes before where it was sent to (its caller's buffer was full): from
            # within this page if it can, without reading the page again.
            self._i = self._index_after(start)
            self._at = start
        if self._i >= len(self._page):
            self._page, self._page_start, self._i = await self._fetch(start), start, 0
        return self._page, self._i

    def _index_after(self, start: int) -> int:
        if start == self._page_start:
            return 0
        j = bisect_left(self._page, start, key=itemgetter(0))      # offsets rise within a page
        return j + 1 if j < len(self._page) and self._page[j][0] == start else len(self._page)

    def took(self, count: int) -> int:
        """The kernel took `count` more entries: the offset after them (where it resumes)."""
        if count:
            self._i += count
            self._at = self._page[self._i - 1][0]
        return self._at


def index_pages(node: Node) -> Callable[[int], Awaitable[HashPage]]:
    """Pages of the node's index, by rowid."""
    async def fetch(after: int) -> HashPage:
        return await trio.to_thread.run_sync(node.index.hashes_after, after, PAGE)
    return fetch


def walk_pages(node: Node) -> Callable[[int], Awaitable[HashPage]]:
    """Pages of a walk of the store's directories, numbered by position (1, 2, ...)."""
    walk: Iterator[tuple[int, str]] = iter(())
    position = -1

    def page(after: int) -> HashPage:
        nonlocal walk, position
        if after != position:            # a seek elsewhere: walk again, up to `after`
            walk, position = enumerate(node.store.iter_hashes(), 1), 0
            for _ in islice(walk, after):
                position += 1
        out = list(islice(walk, PAGE))
        if out:
            position = out[-1][0]
        return out

    async def fetch(after: int) -> HashPage:
        return await trio.to_thread.run_sync(page, after)
    return fetch
