"""Node = store + identity + auth + mutables + names (+ fetcher, feeds): the core every adapter calls.

The HTTP API and the FUSE mount are thin adapters over this object. Its async methods never
block the trio loop: file and SQLite work runs in worker threads.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import trio

from kachery_client.errors import NotFoundError, UsageError
from kachery_client.store import Store
from kachery_client.uri import check_name, check_sha1

from .auth import ClientAuth
from .keys import KeyPair, load_or_create_node_keys, write_private_file
from .mutables import Mutables
from .task_results import TaskResultIndex
from .tasks import TaskHub, url_secret

log = logging.getLogger(__name__)
VERSION = "kacheryfs-0.1.0"
ProgressFn = Callable[[int, int], None]


class Fetcher(Protocol):
    async def ensure(self, sha1: str, manifest_sha1: str | None = None,
                     progress: ProgressFn | None = None) -> Path: ...


class NodeAlreadyRunning(UsageError):
    pass


@dataclass
class Stats:
    requests: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    blobs_stored: int = 0


class Names:
    """Which names each hash was stored under (the mount lists them): <storage>/kacheryfs.db."""

    def __init__(self, db_path: Path):
        self.db_path = db_path
        self._local = threading.local()
        self._conn().execute("CREATE TABLE IF NOT EXISTS names (sha1 TEXT NOT NULL, name TEXT NOT NULL, "
                             "PRIMARY KEY (sha1, name)) WITHOUT ROWID")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")     # WAL: durable at checkpoints, never corrupt
            self._local.conn = conn
        return conn

    def add(self, sha1: str, name: str) -> None:
        self._conn().execute("INSERT OR IGNORE INTO names (sha1, name) VALUES (?, ?)", (sha1, name))

    def for_hash(self, sha1: str) -> list[str]:
        rows = self._conn().execute("SELECT name FROM names WHERE sha1 = ? ORDER BY name", (sha1,))
        return [r[0] for r in rows]


class Node:
    def __init__(self, storage_dir: Path, *, fetcher: Fetcher | None = None):
        self.storage_dir = storage_dir.expanduser().resolve()
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = _lock_storage(self.storage_dir)
        self.store = Store(self.storage_dir)
        removed = self.store.clean_stale_temps()
        if removed:
            log.info("removed %d stale temp files left by interrupted writes", removed)
        self.keys: KeyPair = load_or_create_node_keys(self.storage_dir)
        self.node_id = self.keys.public_hex
        write_private_file(self.storage_dir / "kachery-node-id", self.node_id.encode(), mode=0o644)
        self.auth = ClientAuth(self.storage_dir)
        self.mutables = Mutables(self.storage_dir / "mutables.db")
        self.names = Names(self.storage_dir / "kacheryfs.db")
        self.stats = Stats()
        self.fetcher = fetcher
        self.feeds: Any = None
        self.tasks = TaskHub(self.store, TaskResultIndex(self.storage_dir / "kacheryfs.db"),
                             url_secret(self.keys.seed))

    def close(self) -> None:
        self._lock_file.close()

    # ---- content ------------------------------------------------------------------------

    async def ensure(self, sha1: str, manifest_sha1: str | None = None,
                     progress: ProgressFn | None = None) -> Path:
        """Path of the verified blob (or valid link target), fetched first if a fetcher can."""
        sha1 = check_sha1(sha1)
        path = await trio.to_thread.run_sync(self.store.locate, sha1)
        if path is not None:
            return path
        if self.fetcher is None:
            raise NotFoundError(f"sha1://{sha1} is not in this node's store and it has no sources")
        return await self.fetcher.ensure(sha1, manifest_sha1, progress)

    async def record_name(self, sha1: str, name: str) -> None:
        _check_stored_name(name)
        await trio.to_thread.run_sync(self.names.add, check_sha1(sha1), name)

    async def adopt(self, sha1: str, name: str | None) -> bool:
        """A client added this blob into our store itself: record its name. False if absent."""
        sha1 = check_sha1(sha1)
        if name is not None:
            _check_stored_name(name)

        def work() -> bool:
            if self.store.locate(sha1) is None:
                return False
            if name:
                self.names.add(sha1, name)
            return True
        return await trio.to_thread.run_sync(work)

    async def names_for(self, sha1: str) -> list[str]:
        return await trio.to_thread.run_sync(self.names.for_hash, check_sha1(sha1))

    def count_blobs(self) -> tuple[int, int]:
        """(number of blobs, total bytes) in the store; walks the tree, call from a thread."""
        n = total = 0
        for sha1 in self.store.iter_hashes():
            try:
                total += os.stat(self.store.path_for(sha1)).st_size
                n += 1
            except FileNotFoundError:
                pass
        return n, total


def _check_stored_name(name: str) -> None:
    check_name(name)
    if "/" in name or not name:
        raise UsageError(f"a stored name is one non-empty path segment, not {name!r}")


def _lock_storage(storage_dir: Path) -> Any:
    """Only one node per storage directory: an exclusive flock held for the process's life."""
    f = open(storage_dir / "kacheryfs.lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise NodeAlreadyRunning(f"another kacheryfs node is already running on {storage_dir}") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f
