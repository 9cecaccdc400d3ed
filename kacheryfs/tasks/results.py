"""Task results: a query's latest result in memory, a pure calculation's as content in the store.

    task_results(channel, task_hash) -> result_sha1        in <storage>/kacheryfs.db

The result bytes of a pure calculation are ordinary content in the node's store
(sha1/aa/bb/cc/<sha1>); the table only indexes them, so a repeated identical request is answered at
once, also after a restart. The index is called from worker threads (one SQLite connection per
thread); TaskResults runs on the trio loop.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import trio

from kachery_client.errors import NotFoundError, UsageError
from kachery_client.store import Store
from kacheryfs.sqlite_db import ThreadLocalDB

INLINE_PARSE_BYTES = 64 * 1024
RESULT_SHA1_CACHE = 10_000


class TaskResultIndex:
    def __init__(self, db_path: Path):
        self.db = ThreadLocalDB(db_path, schema=(
            "CREATE TABLE IF NOT EXISTS task_results (channel TEXT NOT NULL, task_hash TEXT NOT NULL, "
            "result_sha1 TEXT NOT NULL, PRIMARY KEY (channel, task_hash)) WITHOUT ROWID",))
        self._conn = self.db.conn

    def get(self, channel: str, task_hash: str) -> str | None:
        row = self._conn().execute("SELECT result_sha1 FROM task_results WHERE channel = ? AND task_hash = ?",
                                   (channel, task_hash)).fetchone()
        return row[0] if row else None

    def put(self, channel: str, task_hash: str, result_sha1: str) -> None:
        self._conn().execute("INSERT OR REPLACE INTO task_results (channel, task_hash, result_sha1) "
                             "VALUES (?, ?, ?)", (channel, task_hash, result_sha1))

    def forget(self, channel: str, task_hash: str) -> None:
        self._conn().execute("DELETE FROM task_results WHERE channel = ? AND task_hash = ?", (channel, task_hash))


class _Bounded(OrderedDict[tuple[str, str], str]):
    """A small LRU map: the newest `size` entries."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def __setitem__(self, key: tuple[str, str], value: str) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        if len(self) > self.size:
            self.popitem(last=False)


class TaskResults:
    def __init__(self, store: Store, index: TaskResultIndex, on_stored: Callable[[str], object] | None = None):
        self.store = store
        self.index = index
        self._on_stored = on_stored                  # (sha1) -> None, in the worker thread: the node records it
        self._queries: dict[tuple[str, str], tuple[float, bytes]] = {}
        self._sha1s = _Bounded(RESULT_SHA1_CACHE)    # (channel, hash) -> result blob, for GETs

    async def put(self, channel: str, task_hash: str, kind: str, data: bytes) -> None:
        """Keep an uploaded result: 'pure' as content in the store plus an index row; 'query' in memory."""
        try:
            if len(data) <= INLINE_PARSE_BYTES:     # microseconds: not worth a thread hop
                json.loads(data)
            else:
                await trio.to_thread.run_sync(json.loads, data)
        except ValueError:
            raise UsageError("a task result must be JSON") from None
        if kind == "query":
            self._queries[(channel, task_hash)] = (time.monotonic(), data)
            return

        def keep() -> str:
            blob = self.store.add_bytes(data)
            if self._on_stored is not None:
                self._on_stored(blob.sha1)
            self.index.put(channel, task_hash, blob.sha1)
            return blob.sha1
        self._sha1s[(channel, task_hash)] = await trio.to_thread.run_sync(keep)

    async def read(self, channel: str, task_hash: str) -> bytes:
        """The uploaded result (a query's latest, else the stored pure-calculation result)."""
        slot = self._queries.get((channel, task_hash))
        if slot is not None:
            return slot[1]
        sha1 = self._sha1s.get((channel, task_hash)) or await self.stored_sha1(channel, task_hash)
        if sha1 is None:
            raise NotFoundError(f"no result for task {task_hash} on channel {channel}")
        try:
            return await trio.to_thread.run_sync(self.store.read_bytes, sha1)
        except (NotFoundError, FileNotFoundError):
            self._sha1s.pop((channel, task_hash), None)
            await trio.to_thread.run_sync(self.index.forget, channel, task_hash)
            raise NotFoundError(f"the result of task {task_hash} is no longer in the store") from None

    async def stored_sha1(self, channel: str, task_hash: str) -> str | None:
        """The indexed result blob, if it is still in the store (else the row is dropped)."""
        def look() -> str | None:
            sha1 = self.index.get(channel, task_hash)
            if sha1 is not None and self.store.locate(sha1) is None:
                self.index.forget(channel, task_hash)
                return None
            return sha1
        sha1 = await trio.to_thread.run_sync(look)
        if sha1 is None:
            self._sha1s.pop((channel, task_hash), None)
        else:
            self._sha1s[(channel, task_hash)] = sha1
        return sha1

    async def has(self, channel: str, task_hash: str, kind: str) -> bool:
        if kind == "query":
            return (channel, task_hash) in self._queries
        return await self.stored_sha1(channel, task_hash) is not None

    def expire_queries(self, now: float, record_seconds: float) -> None:
        for key, (at, _) in list(self._queries.items()):
            if now - at > record_seconds:
                del self._queries[key]
