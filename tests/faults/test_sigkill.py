"""SIGKILL of a mounted node while 100 operations run against it (50 stores, 50 fetches from a peer).

After a restart on the same storage directory and mount point: no temp file is left, every blob
verifies, every store that was answered before the kill is there, the interrupted fetches resume
and complete (verified), and the mount answers again (the crashed mount is cleaned by the start).
"""

from __future__ import annotations

import os
import random
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from kachery_client.store import Store
from tests.support.mount import force_unmount, wait_for_mount
from tests.support.network import source_and_reader
from tests.support.nodeproc import NodeProc, running_node, start_node
from tests.support.storecheck import bad_blobs, blob_count

STORES = FETCHES = 50
START_TIMEOUT = 60


def _store(node: NodeProc, data: bytes) -> str | None:
    try:
        r = requests.post(node.url + "/store", data=data, headers=node.headers(), timeout=120)
        return r.json()["sha1"] if r.status_code == 200 and r.json()["success"] else None
    except (requests.RequestException, ValueError):
        return None                 # cut off by the kill


def _fetch(node: NodeProc, sha1: str) -> bool:
    try:
        r = requests.post(node.url + "/loadFile", json={"fileKey": {"sha1": sha1}}, headers=node.headers(),
                          timeout=120)
        return r.status_code == 200 and b'"type":"finished"' in r.content
    except requests.RequestException:
        return False


def _start_mounted(storage: Path, mnt: Path) -> NodeProc:
    node = start_node(storage, args=("--mount", str(mnt)))
    wait_for_mount(mnt, node.proc, node.log())
    return node


def test_sigkill_during_100_stores_and_fetches(tmp_path):
    sa, sb, port_a = source_and_reader(tmp_path)
    rng = random.Random(12)
    source = Store(sa)
    # 45 one-chunk blobs and 5 of two chunks (a resumable part file), all only on A.
    wanted = [source.add_bytes(os.urandom(rng.randint(1 << 20, 4 << 20) if i % 10 else 24 << 20)).sha1
              for i in range(FETCHES)]
    bodies = [os.urandom(rng.randint(256 << 10, 6 << 20)) for _ in range(STORES)]
    mnt = tmp_path / "mnt"
    b: NodeProc | None = None
    with running_node(sa, port=port_a):
        try:
            b = _start_mounted(sb, mnt)
            with ThreadPoolExecutor(STORES + FETCHES) as pool:
                stores = [pool.submit(_store, b, data) for data in bodies]
                fetches = [pool.submit(_fetch, b, sha1) for sha1 in wanted]
                _wait_for_work_in_flight(sb, stores + fetches)
                in_flight = sum(not f.done() for f in stores + fetches)
                b.proc.send_signal(signal.SIGKILL)
                b.proc.wait(timeout=10)
                stored = [f.result() for f in stores]
            answered = [sha1 for sha1 in stored if sha1]
            print(f"\nSIGKILL with {in_flight} of {STORES + FETCHES} operations in flight; "
                  f"{len(answered)} stores answered before it")
            assert in_flight > 0

            b = _start_mounted(sb, mnt)               # cleans the crashed mount, removes stale temps
            assert not (sb / "tmp").exists() or os.listdir(sb / "tmp") == []
            bad = bad_blobs(sb)
            print(f"after restart: {blob_count(sb)} blobs, {len(bad)} bad")
            assert bad == []
            store = Store(sb)
            assert all(store.has(sha1) for sha1 in answered)
            with ThreadPoolExecutor(16) as pool:
                assert all(pool.map(lambda sha1: _fetch(b, sha1), wanted))      # resumed, completed
            assert all(store.verify(sha1) for sha1 in wanted)
            assert not any(p.suffix == ".part" for p in (sb / "partial").iterdir())
            assert sorted(os.listdir(mnt)) == ["incoming", "sha1"]
            assert (mnt / "sha1" / wanted[1] / "x").read_bytes() == source.read_bytes(wanted[1])
        finally:
            if b is not None:
                b.stop()
            force_unmount(mnt)


def _wait_for_work_in_flight(storage: Path, futures: list[Any], deadline: float = START_TIMEOUT) -> None:
    """Until stores are writing temp files and fetches part files (or a third of the work is done)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        temps = len(os.listdir(storage / "tmp")) if (storage / "tmp").exists() else 0
        parts = len(list((storage / "partial").glob("*.part"))) if (storage / "partial").exists() else 0
        if (temps and parts) or sum(f.done() for f in futures) > len(futures) // 3:
            return
        time.sleep(0.01)
    raise AssertionError("no store or fetch got under way")
