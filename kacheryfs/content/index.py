"""What the node knows about its content beyond the bytes: <storage>/kacheryfs.db (SQLite, WAL).

    names(sha1, name)                 names each hash was stored under (the mount lists them)
    manifests(sha1, manifest_sha1)    the manifest blob of each large blob (peers ask for it)
    blobs(sha1, size, kind, last_used, remote, pinned)
                                      every piece of local content (docs/PROTOCOL.md section 19):
                                      kind 'owned' (stored here), 'cached' (fetched from `remote`,
                                      a peer or bucket label) or 'link' (a .link file: the bytes
                                      live elsewhere); pinned = 1 keeps it from gc
    quarantine(sha1, size, kind, pinned, reason, at)
                                      blobs found corrupt, moved to <storage>/quarantine/
    meta(key, value)                  'claims_since_ns': when this database first opened with
                                      claims (kachery_client/claims.py): a blob set aside with an
                                      older mtime was cached before claims existed, not claimed
    totals(kind, count, bytes)        running totals per kind ('owned', 'cached', 'link',
                                      'pinned', 'quarantine'), kept by triggers in the same
                                      transaction as every insert, update and delete above: a
                                      total is one row read, never a walk of the store

Synchronous: the node calls it from worker threads; one connection per thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kacheryfs.sqlite_db import ThreadLocalDB

KINDS = ("owned", "cached", "link")
TOTAL_KINDS = (*KINDS, "pinned", "quarantine")
RECONCILE_BATCH = 2000


def _total_triggers(table: str, kind_expr: str, pinned: bool) -> list[str]:
    """Triggers that keep `totals` equal to the sums over `table` (and over its pinned rows)."""
    def add(row: str, sign: str) -> str:
        kind = kind_expr.replace("ROW", row)
        sql = (f"UPDATE totals SET count = count {sign} 1, bytes = bytes {sign} {row}.size "
               f"WHERE kind = {kind};")
        if pinned:
            sql += (f"UPDATE totals SET count = count {sign} {row}.pinned, "
                    f"bytes = bytes {sign} {row}.size * {row}.pinned WHERE kind = 'pinned';")
        return sql
    cols = "size, kind, pinned" if pinned else "size"
    return [
        f"CREATE TRIGGER IF NOT EXISTS {table}_ins AFTER INSERT ON {table} BEGIN {add('NEW', '+')} END",
        f"CREATE TRIGGER IF NOT EXISTS {table}_del AFTER DELETE ON {table} BEGIN {add('OLD', '-')} END",
        f"CREATE TRIGGER IF NOT EXISTS {table}_upd AFTER UPDATE OF {cols} ON {table} "
        f"BEGIN {add('OLD', '-')} {add('NEW', '+')} END",
    ]


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS names (sha1 TEXT NOT NULL, name TEXT NOT NULL, "
    "PRIMARY KEY (sha1, name)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS manifests (sha1 TEXT PRIMARY KEY NOT NULL, manifest_sha1 TEXT NOT NULL) "
    "WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS blobs (sha1 TEXT PRIMARY KEY NOT NULL, size INTEGER NOT NULL DEFAULT 0, "
    "last_used REAL NOT NULL DEFAULT 0, remote TEXT)",
    "CREATE TABLE IF NOT EXISTS quarantine (sha1 TEXT PRIMARY KEY NOT NULL, size INTEGER NOT NULL, "
    "kind TEXT NOT NULL, pinned INTEGER NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY NOT NULL, value) WITHOUT ROWID",
)
# Added after the first release: blobs gained kind and pinned (old rows with a remote were
# the evictable ones: cached), and the totals table is filled once from the rows it sums.
_MIGRATIONS = (
    ("blobs", "kind", "ALTER TABLE blobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'owned'",
     "UPDATE blobs SET kind = 'cached' WHERE remote IS NOT NULL"),
    ("blobs", "pinned", "ALTER TABLE blobs ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0", None),
)
_AFTER_MIGRATIONS = (
    "DROP INDEX IF EXISTS blobs_evictable",
    # gc and the cache limit read candidates in this order: their cost is the number removed.
    "CREATE INDEX IF NOT EXISTS blobs_gc ON blobs (last_used) WHERE kind = 'cached' AND pinned = 0",
    "CREATE INDEX IF NOT EXISTS blobs_pinned ON blobs (sha1) WHERE pinned = 1",
    *_total_triggers("blobs", "ROW.kind", pinned=True),
    *_total_triggers("quarantine", "'quarantine'", pinned=False),
)


@dataclass(frozen=True)
class BlobRecord:
    sha1: str
    size: int
    kind: str
    last_used: float
    pinned: bool


@dataclass(frozen=True)
class Total:
    count: int
    bytes: int


class NodeIndex:
    def __init__(self, db_path: Path):
        self.db = ThreadLocalDB(db_path, schema=_SCHEMA)
        self._conn = self.db.conn
        self._migrate()

    def _migrate(self) -> None:
        with self.db.transaction() as conn:
            for table, column, alter, fill in _MIGRATIONS:
                if column not in {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}:
                    conn.execute(alter)
                    if fill:
                        conn.execute(fill)
            if not conn.execute("SELECT name FROM sqlite_master WHERE name = 'totals'").fetchone():
                conn.execute("CREATE TABLE totals (kind TEXT PRIMARY KEY NOT NULL, count INTEGER NOT NULL, "
                             "bytes INTEGER NOT NULL) WITHOUT ROWID")
                conn.executemany("INSERT INTO totals VALUES (?, 0, 0)", [(k,) for k in TOTAL_KINDS])
                conn.execute("UPDATE totals SET count = (SELECT count(*) FROM blobs b WHERE b.kind = totals.kind), "
                             "bytes = (SELECT coalesce(sum(size), 0) FROM blobs b WHERE b.kind = totals.kind) "
                             "WHERE kind IN ('owned', 'cached', 'link')")
                conn.execute("UPDATE totals SET count = (SELECT count(*) FROM blobs WHERE pinned = 1), "
                             "bytes = (SELECT coalesce(sum(size), 0) FROM blobs WHERE pinned = 1) "
                             "WHERE kind = 'pinned'")
                conn.execute("UPDATE totals SET count = (SELECT count(*) FROM quarantine), "
                             "bytes = (SELECT coalesce(sum(size), 0) FROM quarantine) WHERE kind = 'quarantine'")
            for statement in _AFTER_MIGRATIONS:
                conn.execute(statement)
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('claims_since_ns', ?)", (time.time_ns(),))

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

    def manifests(self) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in self._conn().execute("SELECT sha1, manifest_sha1 FROM manifests")]

    # ---- kinds ------------------------------------------------------------------------------

    def record_owned(self, sha1: str, size: int, kind: str = "owned") -> None:
        """Content stored here ('owned') or linked here ('link'). Owned wins over cached (the
        same bytes stored by a client are the client's now); a blob replaces its link."""
        self._conn().execute(
            "INSERT INTO blobs (sha1, size, last_used, kind) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(sha1) DO UPDATE SET size = excluded.size, kind = CASE "
            "WHEN blobs.kind = 'link' OR excluded.kind = 'owned' THEN excluded.kind ELSE blobs.kind END",
            (sha1, size, time.time(), kind))

    def record_cached(self, sha1: str, size: int, where: str) -> None:
        """Content fetched from `where`. A blob already owned stays owned."""
        self._conn().execute(
            "INSERT INTO blobs (sha1, size, last_used, remote, kind) VALUES (?, ?, ?, ?, 'cached') "
            "ON CONFLICT(sha1) DO UPDATE SET remote = excluded.remote, size = excluded.size, "
            "last_used = excluded.last_used, "
            "kind = CASE WHEN blobs.kind = 'link' THEN 'cached' ELSE blobs.kind END",
            (sha1, size, time.time(), where))

    def mark_remote(self, sha1: str, size: int, where: str) -> None:
        """A bucket or peer holds this content too (an upload): its kind does not change."""
        self._conn().execute(
            "INSERT INTO blobs (sha1, size, last_used, remote) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(sha1) DO UPDATE SET remote = excluded.remote, size = excluded.size",
            (sha1, size, time.time(), where))

    def touch(self, sha1: str) -> None:
        self._conn().execute("UPDATE blobs SET last_used = ? WHERE sha1 = ?", (time.time(), sha1))

    def get(self, sha1: str) -> BlobRecord | None:
        row = self._conn().execute("SELECT sha1, size, kind, last_used, pinned FROM blobs WHERE sha1 = ?",
                                   (sha1,)).fetchone()
        return BlobRecord(row[0], row[1], row[2], row[3], bool(row[4])) if row else None

    def forget(self, sha1: str, *, only_kind: str | None = None, unpinned: bool = False) -> int | None:
        """Delete the record (before its file is removed). With `only_kind`/`unpinned`, only if it
        still is of that kind and unpinned: gc's check and delete are one statement, so a pin
        that lands first keeps the blob. The deleted record's size, or None if none was deleted."""
        sql, args = "DELETE FROM blobs WHERE sha1 = ?", [sha1]
        if only_kind is not None:
            sql += " AND kind = ?"
            args.append(only_kind)
        if unpinned:
            sql += " AND pinned = 0"
        row = self._conn().execute(sql + " RETURNING size", args).fetchone()
        return row[0] if row else None

    def claims_since_ns(self) -> int:
        return int(self._conn().execute("SELECT value FROM meta WHERE key = 'claims_since_ns'").fetchone()[0])

    def forget_cached(self, sha1s: list[str], claimed: Iterable[tuple[str, int]] = ()) -> list[tuple[str, int]]:
        """gc, once its page of blobs is set aside: delete the records of `sha1s` still cached and
        unpinned, and make the `claimed` ones (sha1, size) owned, in one transaction (one commit per
        page of a pass). (sha1, size) of the records deleted."""
        with self.db.transaction() as conn:
            out = []
            for sha1 in sha1s:
                row = conn.execute("DELETE FROM blobs WHERE sha1 = ? AND kind = 'cached' AND pinned = 0 "
                                   "RETURNING size", (sha1,)).fetchone()
                if row:
                    out.append((sha1, row[0]))
            for sha1, size in claimed:
                self.record_owned(sha1, size)
        return out

    def gc_candidates(self, before: float | None, limit: int) -> list[tuple[str, int, float]]:
        """(sha1, size, last_used) of cached unpinned blobs, least recently used first."""
        if before is None:
            rows = self._conn().execute(
                "SELECT sha1, size, last_used FROM blobs WHERE kind = 'cached' AND pinned = 0 "
                "ORDER BY last_used LIMIT ?", (limit,))
        else:
            rows = self._conn().execute(
                "SELECT sha1, size, last_used FROM blobs WHERE kind = 'cached' AND pinned = 0 "
                "AND last_used < ? ORDER BY last_used LIMIT ?", (before, limit))
        return [(r[0], r[1], r[2]) for r in rows]

    def all_sha1s(self) -> set[str]:
        return {r[0] for r in self._conn().execute("SELECT sha1 FROM blobs")}

    def hashes_after(self, rowid: int, limit: int) -> list[tuple[int, str]]:
        """(rowid, sha1) of the next `limit` records after `rowid`, in rowid order: the mount's
        sha1/ listing. A rowid never changes while its row lives, so a listing resumed at a rowid
        neither repeats nor skips a record, whatever was added or removed meanwhile."""
        return self._conn().execute("SELECT rowid, sha1 FROM blobs WHERE rowid > ? ORDER BY rowid LIMIT ?",
                                    (rowid, limit)).fetchall()

    # ---- pins -------------------------------------------------------------------------------

    def set_pinned(self, sha1: str, pinned: bool) -> bool:
        """True if the content has a record (pinning needs the content local first)."""
        return self._conn().execute("UPDATE blobs SET pinned = ? WHERE sha1 = ?",
                                    (int(pinned), sha1)).rowcount > 0

    def pinned(self) -> list[tuple[str, int]]:
        return [(r[0], r[1]) for r in
                self._conn().execute("SELECT sha1, size FROM blobs WHERE pinned = 1 ORDER BY sha1")]

    # ---- quarantine -------------------------------------------------------------------------

    def quarantine(self, sha1: str, size: int, reason: str) -> BlobRecord | None:
        """Move the record into `quarantine` (one transaction); the previous record, if any."""
        with self.db.transaction() as conn:
            old = self.get(sha1)
            conn.execute("DELETE FROM blobs WHERE sha1 = ?", (sha1,))
            # an upsert, not INSERT OR REPLACE: REPLACE's implicit delete fires no trigger
            conn.execute("INSERT INTO quarantine VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(sha1) DO UPDATE SET "
                         "size = excluded.size, kind = excluded.kind, pinned = excluded.pinned, "
                         "reason = excluded.reason, at = excluded.at",
                         (sha1, size, old.kind if old else "owned", int(old.pinned) if old else 0,
                          reason, time.time()))
        return old

    def quarantined(self, sha1: str) -> tuple[str, bool] | None:
        """(kind, pinned) the content had before it was quarantined, or None."""
        row = self._conn().execute("SELECT kind, pinned FROM quarantine WHERE sha1 = ?", (sha1,)).fetchone()
        return (row[0], bool(row[1])) if row else None

    def quarantined_all(self) -> list[str]:
        return [r[0] for r in self._conn().execute("SELECT sha1 FROM quarantine ORDER BY at")]

    def release_quarantine(self, sha1: str) -> None:
        self._conn().execute("DELETE FROM quarantine WHERE sha1 = ?", (sha1,))

    # ---- totals -----------------------------------------------------------------------------

    def totals(self) -> dict[str, Total]:
        return {r[0]: Total(r[1], r[2]) for r in self._conn().execute("SELECT kind, count, bytes FROM totals")}

    def reconcile(self, present: Iterable[tuple[str, int, str]], gone: Callable[[str], bool]) -> tuple[int, int]:
        """Make the records match what is on disk: `present` yields (sha1, size, kind) of every
        blob and link found. Unknown content gets that kind (owned: a client stored it while no
        node ran; cached: it carries the fetched mark); a record whose content `gone(sha1)`
        confirms absent is deleted. (added, removed)."""
        conn = self._conn()
        known = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT sha1, size, kind FROM blobs")}
        added = 0
        seen = set()
        # Written in transactions of RECONCILE_BATCH changes, each made after its batch was found
        # (the write lock is never held across the walk): one commit per row made a first start
        # on 100,000 blobs take seconds.
        batch: list[tuple[str, tuple[Any, ...]]] = []
        for sha1, size, kind in present:
            seen.add(sha1)
            record = known.get(sha1)
            if record is None:
                # OR IGNORE: a fetch recorded meanwhile keeps its kind
                batch.append(("INSERT OR IGNORE INTO blobs (sha1, size, last_used, kind) VALUES (?, ?, ?, ?)",
                              (sha1, size, time.time(), kind)))
            elif record[0] != size or (record[1] == "link") != (kind == "link"):
                new_kind = "link" if kind == "link" else ("owned" if record[1] == "link" else record[1])
                batch.append(("UPDATE blobs SET size = ?, kind = ? WHERE sha1 = ?", (size, new_kind, sha1)))
            if len(batch) >= RECONCILE_BATCH:
                added += self._write_batch(batch)
                batch = []
        added += self._write_batch(batch)
        removed = 0
        for sha1 in set(known) - seen:
            if gone(sha1) and self.forget(sha1) is not None:
                removed += 1
        return added, removed

    def _write_batch(self, statements: list[tuple[str, tuple[Any, ...]]]) -> int:
        """Run the statements in one transaction; the number of rows they changed."""
        if not statements:
            return 0
        with self.db.transaction() as conn:
            return sum(conn.execute(sql, args).rowcount for sql, args in statements)
