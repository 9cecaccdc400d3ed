"""gc and drop against a store that finds its content present (kachery_client/claims.py): the two
sides interleaved step by step (gc's set_aside and settle called by the test between the client's
steps), with a real Node's index and lifecycle and a real client Store on the same directory."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time

import pytest

from kachery_client import claims
from kachery_client.errors import UsageError
from kachery_client.hashing import ContentHasher
from kachery_client.store import Store
from kacheryfs.node import Node


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path / "storage")
    try:
        yield n
    finally:
        n.close()


def fetched(node: Node, data: bytes, manifest_sha1: str | None = None) -> str:
    """Content made local the way the fetcher does it: a verified file published (marked cached),
    then recorded cached."""
    sha1 = hashlib.sha1(data).hexdigest()
    part = node.store.root / "partial" / f"{sha1}.part"
    part.parent.mkdir(exist_ok=True)
    part.write_bytes(data)
    node.store.publish_verified(part, sha1)
    node.lifecycle.fetched(sha1, len(data), "peer x", manifest_sha1)
    return sha1


def kinds(node: Node) -> dict[str, tuple[int, int]]:
    return {k: (t.count, t.bytes) for k, t in node.index.totals().items() if k in ("owned", "cached")}


def whole(store: Store, sha1: str) -> bool:
    path = store.path_for(sha1)
    return path.is_file() and hashlib.sha1(path.read_bytes()).hexdigest() == sha1


def no_asides(node: Node) -> bool:
    return not [n for n in os.listdir(node.store.tmp_dir) if n.endswith(claims.ASIDE)]


def test_content_claimed_just_before_gc_sets_it_aside_is_kept_and_owned(node):
    client = Store(node.storage_dir)
    small, mid = b"claimed small", os.urandom(1_500_000)        # unnamed-file path, BlobWriter path
    s1, s2 = fetched(node, small), fetched(node, mid)
    untouched = fetched(node, b"nobody stores this again")
    chosen = [c[0] for c in node.index.gc_candidates(None, 10)]      # gc has chosen its page
    assert sorted(chosen) == sorted([s1, s2, untouched])
    assert client.add_bytes(small).sha1 == s1 and client.add_bytes(mid).sha1 == s2   # present: claimed
    gone = node.lifecycle.settle(node.lifecycle.set_aside(chosen))
    assert gone == [(untouched, 24)]
    assert whole(node.store, s1) and whole(node.store, s2) and not node.store.path_for(untouched).exists()
    assert node.index.get(s1).kind == node.index.get(s2).kind == "owned"
    assert kinds(node) == {"owned": (2, len(small) + len(mid)), "cached": (0, 0)}
    assert node.lifecycle.gc().removed == [] and whole(node.store, s1)      # owned now: never gc'd
    assert no_asides(node)


def test_gc_sets_aside_just_before_the_store_looks_then_the_store_writes_it_again(node):
    client = Store(node.storage_dir)
    small, mid = b"set aside first", os.urandom(1_200_000)
    s1, s2 = fetched(node, small), fetched(node, mid)
    asides = node.lifecycle.set_aside([s1, s2])
    assert not node.store.path_for(s1).exists()
    assert client.add_bytes(small).sha1 == s1 and client.add_bytes(mid).sha1 == s2   # absent: written
    gone = node.lifecycle.settle(asides)
    assert sorted(gone) == sorted([(s1, len(small)), (s2, len(mid))])              # the cached copies
    assert whole(node.store, s1) and whole(node.store, s2)
    assert node.index.get(s1).kind == node.index.get(s2).kind == "owned"       # the new copies, recorded
    assert kinds(node) == {"owned": (2, len(small) + len(mid)), "cached": (0, 0)}
    assert no_asides(node)


def test_an_untouched_cached_blob_is_removed_and_the_totals_follow(node):
    owned = node.store.add_bytes(b"mine")
    node.lifecycle.stored(owned.sha1)
    sha1s = [fetched(node, f"cached {i}".encode()) for i in range(20)]
    node.lifecycle.pin(sha1s[0])
    assert kinds(node) == {"owned": (1, 4), "cached": (20, sum(len(f"cached {i}") for i in range(20)))}
    result = node.lifecycle.gc(target_bytes=0)
    assert sorted(s for s, _ in result.removed) == sorted(sha1s[1:])
    assert result.freed == sum(len(f"cached {i}") for i in range(1, 20))
    assert [node.store.path_for(s).exists() for s in sha1s] == [True] + [False] * 19
    assert kinds(node) == {"owned": (1, 4), "cached": (1, len("cached 0"))}
    assert node.lifecycle.du()["store"] == {"count": 2, "bytes": 4 + len("cached 0")}
    assert no_asides(node)


def test_a_large_blob_and_its_manifest_claimed_or_written_again(node, tmp_path):
    data = os.urandom(21_000_000)                      # two chunks: a manifest blob
    hasher = ContentHasher()
    hasher.update(data)
    manifest = hasher.manifest_bytes()
    assert manifest is not None
    m = fetched(node, manifest)
    big = fetched(node, data, manifest_sha1=m)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    client = Store(node.storage_dir)
    # Claimed (a full add: the blob and then its manifest found present) after gc chose them.
    blob = client.add_file(src)
    assert (blob.sha1, blob.manifest_sha1) == (big, m)
    assert node.lifecycle.settle(node.lifecycle.set_aside([big, m])) == []
    assert node.index.get(big).kind == node.index.get(m).kind == "owned"
    # Cached again (as a new fetch would), set aside, then stored again through the hash cache:
    # the claim finds no name, so both are written again; the old copies go.
    for sha1 in (big, m):
        node.index.forget(sha1)
        claims.mark_cached(node.store.path_for(sha1))
        node.lifecycle.fetched(sha1, node.store.path_for(sha1).stat().st_size, "peer x")
    asides = node.lifecycle.set_aside([big, m])
    again = client.add_file(src)
    assert (again.sha1, again.manifest_sha1) == (big, m)
    assert sorted(s for s, _ in node.lifecycle.settle(asides)) == sorted([big, m])
    assert whole(node.store, big) and whole(node.store, m)
    assert kinds(node) == {"owned": (2, len(data) + len(manifest)), "cached": (0, 0)}
    assert no_asides(node)


def test_drop_removes_old_content_but_keeps_content_stored_again_while_it_ran(node):
    client = Store(node.storage_dir)
    old, again = client.add_bytes(b"drop me"), client.add_bytes(b"store me again")
    for blob in (old, again):
        node.lifecycle.stored(blob.sha1)
        os.utime(node.store.path_for(blob.sha1), ns=(10**18, 10**18))     # stored long ago (2001)
    started = time.time_ns()                                              # the drops start
    seen = node.lifecycle.identity(again.sha1)
    assert node.lifecycle.remove(old.sha1, started, node.lifecycle.identity(old.sha1)) == old.size
    assert not node.store.path_for(old.sha1).exists() and node.index.get(old.sha1) is None
    assert client.add_bytes(b"store me again").sha1 == again.sha1          # present: claimed
    with pytest.raises(UsageError, match="stored again while it was being dropped"):
        node.lifecycle.remove(again.sha1, started, seen)
    assert whole(node.store, again.sha1) and node.index.get(again.sha1).kind == "owned"
    assert no_asides(node)


def test_a_fetch_never_replaces_a_copy_already_there_and_a_dead_nodes_asides_come_back(node):
    client = Store(node.storage_dir)
    mine = client.add_bytes(b"a client's copy")          # stored, its notice not yet processed
    before = node.store.path_for(mine.sha1).stat()
    fetched(node, b"a client's copy")                    # a fetch of the same content lands
    after = node.store.path_for(mine.sha1).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert node.lifecycle.gc().removed == [] and node.index.get(mine.sha1).kind == "owned"
    # A node that died between set_aside and settle: its next start puts the blob back.
    cached = fetched(node, b"set aside by a node that died")
    [aside] = node.lifecycle.set_aside([cached])
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert aside.path is not None
    moved = aside.path.with_name(f"{dead.pid}." + aside.path.name.split(".", 1)[1])
    aside.path.rename(moved)
    assert node.store.clean_stale_temps() == 0 and not moved.exists()
    assert whole(node.store, cached) and no_asides(node)
    assert [s for s, _ in node.lifecycle.gc().removed] == [cached]     # still cached: gc decides again


def test_a_stray_aside_name_puts_nothing_into_the_store(node):
    """Only `<pid>.<random>.<sha1>[.link].aside` is put back: any other such name in tmp/ is removed
    at the start's clean-up and makes nothing under sha1/."""
    node.store.tmp_dir.mkdir(parents=True, exist_ok=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stray = node.store.tmp_dir / f"{dead.pid}.2.not-a-hash.aside"
    stray.write_bytes(b"x")
    listing = sorted(p.name for p in node.store.sha1_dir.rglob("*")) if node.store.sha1_dir.exists() else []
    node.store.clean_stale_temps()
    assert not stray.exists()
    after = sorted(p.name for p in node.store.sha1_dir.rglob("*")) if node.store.sha1_dir.exists() else []
    assert after == listing
