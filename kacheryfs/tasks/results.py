"""Which stored blob holds the result of each finished pure calculation: <storage>/kacheryfs.db.

    task_results(channel, task_hash) -> result_sha1

The result bytes themselves are ordinary content in the node's store (sha1/aa/bb/cc/<sha1>);
this table only indexes them, so a repeated identical request is answered at once, also after a
restart. Called from worker threads (one SQLite connection per thread).
"""

from __future__ import annotations

from pathlib import Path

from kacheryfs.sqlite_db import ThreadLocalDB


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
