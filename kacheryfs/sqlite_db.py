"""One SQLite connection per thread (the node calls its databases from trio worker threads).

Every database of the node is in WAL mode, so readers never block the writer. Durability is the
caller's choice: NORMAL (durable at checkpoints, never corrupt) for indexes that can be rebuilt
or lost harmlessly, FULL where a committed row must survive a power cut (signed feed messages).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path


class ThreadLocalDB:
    def __init__(self, path: Path, *, synchronous: str = "NORMAL", pragmas: Sequence[str] = (),
                 schema: Sequence[str] = ()):
        self.path = path
        self._pragmas = [f"PRAGMA synchronous={synchronous}", *pragmas]
        self._local = threading.local()
        conn = self.conn()
        for statement in schema:
            conn.execute(statement)

    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            for pragma in self._pragmas:
                conn.execute(pragma)
            self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection inside BEGIN IMMEDIATE (the write lock taken at once, so the
        transaction never fails half-way on a lock): COMMIT on leaving, ROLLBACK on any error."""
        conn = self.conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
