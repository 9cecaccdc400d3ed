"""kacheryfs.db's content records: kinds, pins, quarantine and the running totals (kept by
triggers), the migration of an older database, reconcile with the disk, gc order, and the
`user.kachery.pinned` attribute of the mount. Real SQLite and a real store; no node process."""

from __future__ import annotations

import sqlite3
import time

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kachery_client import claims
from kacheryfs.content.index import TOTAL_KINDS, NodeIndex
from kacheryfs.fuse.vfs import SHA1_INODE, VFS
from kacheryfs.node import Node

HASHES = [f"{i:040x}" for i in range(6)]


def summed(db_path) -> dict[str, tuple[int, int]]:
    """The totals computed the slow way, from the rows themselves."""
    conn = sqlite3.connect(db_path)
    out = {k: (0, 0) for k in TOTAL_KINDS}
    for kind, n, b in conn.execute("SELECT kind, count(*), sum(size) FROM blobs GROUP BY kind"):
        out[kind] = (n, b)
    out["pinned"] = conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM blobs WHERE pinned = 1").fetchone()
    out["quarantine"] = conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM quarantine").fetchone()
    conn.close()
    return {k: tuple(v) for k, v in out.items()}


ops = st.lists(st.tuples(
    st.sampled_from(["owned", "cached", "link", "remote", "pin", "unpin", "forget", "gc-forget", "quarantine",
                     "release"]),
    st.sampled_from(HASHES), st.integers(0, 10_000)), max_size=60)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops)
def test_running_totals_always_equal_the_sums(tmp_path, sequence):
    db = tmp_path / f"k{time.monotonic_ns()}.db"
    index = NodeIndex(db)
    for op, sha1, size in sequence:
        if op in ("owned", "link"):
            index.record_owned(sha1, size, op)
        elif op == "cached":
            index.record_cached(sha1, size, "peer x")
        elif op == "remote":
            index.mark_remote(sha1, size, "bucket y")
        elif op in ("pin", "unpin"):
            index.set_pinned(sha1, op == "pin")
        elif op == "forget":
            index.forget(sha1)
        elif op == "gc-forget":
            index.forget(sha1, only_kind="cached", unpinned=True)
        elif op == "quarantine":
            index.quarantine(sha1, size, "test")
        else:
            index.release_quarantine(sha1)
    assert {k: (t.count, t.bytes) for k, t in index.totals().items()} == summed(db)


def test_kinds_owned_wins_and_blob_replaces_link(tmp_path):
    index = NodeIndex(tmp_path / "k.db")
    a, b = HASHES[:2]
    index.record_cached(a, 10, "peer")
    index.record_owned(a, 10)                       # a client stored the same bytes: now its own
    assert index.get(a).kind == "owned"
    index.record_cached(a, 10, "peer")              # fetched again later: still owned
    assert index.get(a).kind == "owned"
    index.record_owned(b, 5, "link")
    index.record_cached(b, 5, "peer")               # the blob now exists: it replaces the link
    assert index.get(b).kind == "cached"


def test_migration_from_the_first_schema(tmp_path):
    db = tmp_path / "kacheryfs.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE blobs (sha1 TEXT PRIMARY KEY NOT NULL, size INTEGER NOT NULL DEFAULT 0, "
                 "last_used REAL NOT NULL DEFAULT 0, remote TEXT)")
    conn.execute("CREATE INDEX blobs_evictable ON blobs (last_used) WHERE remote IS NOT NULL")
    conn.executemany("INSERT INTO blobs VALUES (?, ?, 0, ?)",
                     [(HASHES[0], 100, "peer"), (HASHES[1], 7, None), (HASHES[2], 3, "bucket")])
    conn.commit()
    conn.close()
    index = NodeIndex(db)
    totals = index.totals()
    assert (totals["cached"].count, totals["cached"].bytes) == (2, 103)
    assert (totals["owned"].count, totals["owned"].bytes) == (1, 7)
    assert NodeIndex(db).totals() == totals          # opening again changes nothing


def test_reconcile_and_lru_gc_with_a_real_store(tmp_path):
    node = Node(tmp_path / "storage")
    try:
        life = node.lifecycle
        blobs = [node.store.add_bytes(f"blob {i}".encode()) for i in range(5)]
        assert life.reconcile() == (5, 0)                    # stored while no node ran: owned
        for i, b in enumerate(blobs[:4]):                    # four of them were fetched: cached
            claims.mark_cached(node.store.path_for(b.sha1))  # as the fetcher marks what it publishes
            node.index.forget(b.sha1)
            node.index.record_cached(b.sha1, b.size, "peer")
            node.index._conn().execute("UPDATE blobs SET last_used = ? WHERE sha1 = ?", (100 + i, b.sha1))
        assert life.pin(blobs[0].sha1)
        dry = life.gc(dry_run=True)
        assert [s for s, _ in dry.removed] == [b.sha1 for b in blobs[1:4]]
        assert all(node.store.has(b.sha1) for b in blobs)
        kept = life.gc(target_bytes=blobs[3].size + blobs[0].size)   # cached bytes: drop the oldest two
        assert [s for s, _ in kept.removed] == [blobs[1].sha1, blobs[2].sha1]
        assert [node.store.has(b.sha1) for b in blobs] == [True, False, False, True, True]
        node.store.path_for(blobs[4].sha1).unlink()                  # removed behind the node's back
        assert life.reconcile() == (0, 1)
        du = life.du()
        assert du["store"] == {"count": 2, "bytes": blobs[0].size + blobs[3].size}
        assert du["pinned"] == {"count": 1, "bytes": blobs[0].size}
    finally:
        node.close()


def test_pinned_attribute_in_the_mount(tmp_path):
    node = Node(tmp_path / "storage")
    try:
        blob = node.store.add_bytes(b"pin me")
        vfs = VFS(node)

        async def main() -> None:
            await node.record_stored(blob.sha1, "p.txt", None)
            hashdir = await vfs.lookup(SHA1_INODE, blob.sha1)
            f = await vfs.lookup(hashdir.ino, "p.txt")
            assert vfs.xattrs(f.ino)["pinned"] == b"0"
            assert await trio.to_thread.run_sync(node.lifecycle.pin, blob.sha1)
            assert vfs.xattrs(f.ino)["pinned"] == b"1"
            await node.data.unpin(blob.sha1)
            assert vfs.xattrs(f.ino)["pinned"] == b"0"
        trio.run(main)
    finally:
        node.close()


def test_reconcile_records_a_blob_with_the_fetched_mark_as_cached(tmp_path):
    """A fetch publishes its blob (with the fetched mark) and records it a moment later; the
    startup reconciliation may walk past it in between. The blob must still end up cached (gc
    may remove it), not owned: record_cached never demotes an owned blob."""
    node = Node(tmp_path / "storage")
    try:
        fetched = node.store.add_bytes(b"published by a fetch, not recorded yet")
        stored = node.store.add_bytes(b"stored by a client while no node ran")
        claims.mark_cached(node.store.path_for(fetched.sha1))
        assert node.lifecycle.reconcile() == (2, 0)
        node.lifecycle.fetched(fetched.sha1, fetched.size, "peer")      # the fetch's record, late
        assert node.index.get(fetched.sha1).kind == "cached"           # type: ignore[union-attr]
        assert node.index.get(stored.sha1).kind == "owned"             # type: ignore[union-attr]
        assert node.index.totals()["cached"].bytes == fetched.size
    finally:
        node.close()
