"""Mutables: a local JSON key/value store in <storage>/mutables.db (docs/PROTOCOL.md section 9).

The original schema, so that original storage directories are adopted as they are:
    mutables(sha1 TEXT PRIMARY KEY, key TEXT, value TEXT) WITHOUT ROWID
where sha1 = SHA-1 of the canonical JSON of the key, and key/value hold canonical JSON.
Synchronous: the node calls it from trio.to_thread. One connection per thread.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kachery_client.canonical_json import canonical_json, canonical_sha1
from kachery_client.errors import UsageError
from kacheryfs.sqlite_db import ThreadLocalDB

_SCHEMA = ("CREATE TABLE IF NOT EXISTS mutables "
           "(sha1 TEXT PRIMARY KEY NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL) WITHOUT ROWID")


def is_private_key(key: Any) -> bool:
    """Feed private keys live under these keys in original stores: never served (defect 11)."""
    return isinstance(key, dict) and key.get("type") == "feedConfig"


class Mutables:
    def __init__(self, db_path: Path):
        self.db_path = db_path
        self.db = ThreadLocalDB(db_path, schema=(_SCHEMA,))
        self._conn = self.db.conn
        db_path.chmod(0o600)      # feed private keys live here in original stores

    def get(self, key: Any) -> tuple[bool, Any]:
        _check(key, "key")
        row = self._conn().execute("SELECT value FROM mutables WHERE sha1 = ?", (canonical_sha1(key),)).fetchone()
        return (True, json.loads(row[0])) if row else (False, None)

    def set(self, key: Any, value: Any, update: bool = True) -> bool:
        _check(key, "key")
        _check(value, "value")
        args = (canonical_sha1(key), canonical_json(key), canonical_json(value))
        if update:
            self._conn().execute("INSERT OR REPLACE INTO mutables (sha1, key, value) VALUES (?, ?, ?)", args)
            return True
        cur = self._conn().execute("INSERT OR IGNORE INTO mutables (sha1, key, value) VALUES (?, ?, ?)", args)
        return cur.rowcount == 1

    def delete(self, key: Any) -> bool:
        _check(key, "key")
        cur = self._conn().execute("DELETE FROM mutables WHERE sha1 = ?", (canonical_sha1(key),))
        return cur.rowcount == 1


def _check(value: Any, what: str) -> None:
    if value is None:
        raise UsageError(f"a mutable {what} may not be null")
