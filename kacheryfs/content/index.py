"""What the node knows about its blobs beyond their bytes: <storage>/kacheryfs.db (SQLite, WAL).

    names(sha1, name)                 names each hash was stored under (the mount lists them)
    manifests(sha1, manifest_sha1)    the manifest blob of each large blob (peers ask for it)
    blobs(sha1, size, last_used, remote)
                                      for the cache limit: when a blob was last used, and where
                                      else it is known to be (a peer or bucket label; NULL = only
                                      here, never evicted)

Synchronous: the node calls it from worker threads; one connection per thread.
"""

from __future__ import annotations

import time
from pathlib import Path

from kacheryfs.sqlite_db import ThreadLocalDB

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS names (sha1 TEXT NOT NULL, name TEXT NOT NULL, "
    "PRIMARY KEY (sha1, name)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS manifests (sha1 TEXT PRIMARY KEY NOT NULL, manifest_sha1 TEXT NOT NULL) "
    "WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS blobs (sha1 TEXT PRIMARY KEY NOT NULL, size INTEGER NOT NULL DEFAULT 0, "
    "last_used REAL NOT NULL DEFAULT 0, remote TEXT)",
    "CREATE INDEX IF NOT EXISTS blobs_evictable ON blobs (last_used) WHERE remote IS NOT NULL",
)


class NodeIndex:
    def __init__(self, db_path: Path):
        self.db = ThreadLocalDB(db_path, schema=_SCHEMA)
        self._conn = self.db.conn

    # ---- names ------------------------------------------------------------------------------

    def add_name(self, sha1: str, name: str) -> None:
        self._conn().execute("INSERT OR IGNORE INTO names (sha1, name) VALUES (?, ?)", (sha1, name))

    def names_for(self, sha1: str) -> list[str]:
        rows = self._conn().execute("SELECT name FROM names WHERE sha1 = ? ORDER BY name", (sha1,))
        return [r[0] for r in rows]

    # ---- manifests --------------------------------------------------------------------------

    def set_manifest(self, sha1: str, manifest_sha1: str) -> None:
        self._conn().execute("INSERT OR REPLACE INTO manifests VALUES (?, ?)", (sha1, manifest_sha1))

    def manifest_for(self, sha1: str) -> str | None:
        row = self._conn().execute("SELECT manifest_sha1 FROM manifests WHERE sha1 = ?", (sha1,)).fetchone()
        return row[0] if row else None

    # ---- the cache limit --------------------------------------------------------------------

    def touch(self, sha1: str, size: int) -> None:
        self._conn().execute(
            "INSERT INTO blobs (sha1, size, last_used) VALUES (?, ?, ?) "
            "ON CONFLICT(sha1) DO UPDATE SET last_used = excluded.last_used, size = excluded.size",
            (sha1, size, time.time()))

    def mark_remote(self, sha1: str, size: int, where: str) -> None:
        self._conn().execute(
            "INSERT INTO blobs (sha1, size, last_used, remote) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(sha1) DO UPDATE SET remote = excluded.remote, size = excluded.size",
            (sha1, size, time.time(), where))

    def evictable(self) -> list[tuple[str, int]]:
        """(sha1, size) of blobs held elsewhere too, least recently used first."""
        rows = self._conn().execute(
            "SELECT sha1, size FROM blobs WHERE remote IS NOT NULL ORDER BY last_used")
        return [(r[0], r[1]) for r in rows]

    def forget(self, sha1: str) -> None:
        self._conn().execute("DELETE FROM blobs WHERE sha1 = ?", (sha1,))
