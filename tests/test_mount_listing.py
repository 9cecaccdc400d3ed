"""Listing sha1/ in a real mount: exactly the stored hashes, from the node's index once it has
reconciled with the store; what is stored after the mount appears (over HTTP, by a client sharing
the storage directory, a chunk sliced for a peer), what is dropped disappears;
a listing gives the kernel the inodes of at most --listing-inodes hashes (those need no lookup
for `ls -l`), and the inodes of later lookups are forgotten by the node when the kernel forgets
them."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from kachery_client.store import Store
from tests.support.mount import mounted_node
from tests.support.nodeproc import NodeProc, client_env

BLOBS = 3000
LISTING_INODES = 1000


def gauge(node: NodeProc, name: str, **labels: str) -> float:
    text = requests.get(node.url + "/metrics", timeout=30).text
    return next(s.value for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == name and labels.items() <= s.labels.items())


def lookups(node: NodeProc) -> float:
    return gauge(node, "kacheryfs_fuse_operations_total", operation="lookup")


def poll(what: str, done, deadline: float = 15.0):  # type: ignore[no-untyped-def]
    end = time.monotonic() + deadline
    while not (result := done()):
        assert time.monotonic() < end, f"{what}: not within {deadline} s"
        time.sleep(0.05)
    return result


def ls_f(mnt: Path) -> list[str]:
    out = subprocess.run(["ls", "-f", str(mnt / "sha1")], capture_output=True, text=True, check=True, timeout=60)
    return [n for n in out.stdout.split() if n not in (".", "..")]


def test_listing_sha1_follows_the_index_and_holds_few_inodes(tmp_path):
    storage = tmp_path / "storage"
    store = Store(storage)
    expected = {store.add_bytes(b"%d" % i).sha1 for i in range(BLOBS)}     # stored while no node ran
    with mounted_node(tmp_path, storage=storage, args=("--listing-inodes", str(LISTING_INODES))) as (node, mnt):
        poll("the startup reconciliation", lambda: gauge(node, "kacheryfs_storage_blobs") == BLOBS)
        names = ls_f(mnt)
        assert len(names) == BLOBS and set(names) == expected                # each hash once
        assert sorted(os.listdir(mnt / "sha1")) == sorted(expected)          # a second listing
        # The first LISTING_INODES hashes went out with their inodes, the rest as names only.
        assert gauge(node, "kacheryfs_mount_inodes") == LISTING_INODES

        parent = node.post("/store", data=b"stored after the mount, then sliced").json()["sha1"]
        assert parent in ls_f(mnt)
        chunk = hashlib.sha1(b"after the mount").hexdigest()                 # sliced for a peer
        r = node.post("/loadFile", json={"fileKey": {"sha1": chunk, "chunkOf": {
            "fileKey": {"sha1": parent}, "startByte": 7, "endByte": 22}}})
        assert r.status_code == 200 and b'"finished"' in r.content, r.content
        assert chunk in ls_f(mnt)
        text = "stored by a client sharing the storage"
        subprocess.run([sys.executable, "-c", f"import kachery_client as kc; kc.store_text({text!r})"],
                       timeout=60, check=True, env={**os.environ, **client_env(node)})
        shared = hashlib.sha1(text.encode()).hexdigest()
        assert os.path.exists(store.path_for(shared))                        # written by the client itself
        poll("the client's notice", lambda: shared in ls_f(mnt))

        dropped = sorted(expected)[0]
        r = node.post("/kacheryfs/drop", json={"uri": f"sha1://{dropped}", "force": True})
        assert r.status_code == 200, r.text
        names = ls_f(mnt)
        assert dropped not in names and len(names) == BLOBS + 2
        with pytest.raises(FileNotFoundError):
            os.stat(mnt / "sha1" / dropped)

        # ls -l and cat look each name listed without its inode up: directories, content as stored.
        before = lookups(node)
        long = subprocess.run(["ls", "-l", str(mnt / "sha1")], capture_output=True, text=True, check=True,
                              timeout=120).stdout.splitlines()[1:]
        assert len(long) == BLOBS + 2 and all(line.startswith("dr-xr-xr-x") for line in long)
        assert lookups(node) - before <= BLOBS + 2 - (LISTING_INODES - 1)     # none for those held
        one = sorted(expected)[1]
        assert hashlib.sha1((mnt / "sha1" / one / "x").read_bytes()).hexdigest() == one
        assert gauge(node, "kacheryfs_mount_inodes") >= BLOBS + 2            # looked up: held now


def test_inodes_the_kernel_forgets_are_forgotten(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("dropping the kernel's dentry cache needs root (the tests run as root)")
    storage = tmp_path / "storage"
    store = Store(storage)
    data = [b"forget %d" % i for i in range(200)]
    hashes = [store.add_bytes(d).sha1 for d in data]
    with mounted_node(tmp_path, storage=storage) as (node, mnt):
        for h, d in zip(hashes, data, strict=True):
            assert os.stat(mnt / "sha1" / h / "a.txt").st_size == len(d)
        assert gauge(node, "kacheryfs_mount_inodes") >= 2 * len(hashes)     # hash dirs and files
        with open("/proc/sys/vm/drop_caches", "w") as f:                   # unused dentries and inodes
            f.write("2\n")
        poll("the kernel's forgets", lambda: gauge(node, "kacheryfs_mount_inodes") == 0)
        assert os.stat(mnt / "sha1" / hashes[0] / "b.txt").st_size == len(b"forget 0")   # looked up again
