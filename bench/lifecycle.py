"""The life of stored data: `kacheryfs verify` throughput vs sha1sum; an eviction pass at 10 vs
100,000 blobs.

    python bench/lifecycle.py [--small 10000] [--big-mib 1024] [--evict-blobs 100000]

Targets (issue 14): verify of a store of 10,000 small blobs and one 1 GiB blob at 0.7x sha1sum's
throughput or better (baseline: `find sha1 -type f | xargs sha1sum` over the same files, page
cache warm for both); an eviction pass costs the same with 10 or 100,000 blobs in the store.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DATA_DIR, make_file, timed  # noqa: E402

from kachery_client.store import Store  # noqa: E402
from kacheryfs.content.index import NodeIndex  # noqa: E402
from kacheryfs.content.lifecycle import Lifecycle, walk  # noqa: E402
from kacheryfs.content.verify import check_all  # noqa: E402

EVICT_PER_PASS = 5


def bench_verify(root: Path, small: int, big_mib: int) -> None:
    store = Store(root)
    index = NodeIndex(root / "kacheryfs.db")
    rng = random.Random(1)
    for i in range(small):
        store.add_bytes(rng.randbytes(rng.randint(1024, 64 * 1024)) + i.to_bytes(4, "big"))
    big = store.add_file(make_file(big_mib << 20))
    assert big.manifest_sha1 is not None
    index.set_manifest(big.sha1, big.manifest_sha1)
    total = sum(f.size for f in walk(store))
    files = sum(1 for _ in walk(store))
    manifests = dict(index.manifests())

    def sha1sum() -> None:
        find = subprocess.Popen(["find", str(root / "sha1"), "-type", "f", "-print0"], stdout=subprocess.PIPE)
        subprocess.run(["xargs", "-0", "sha1sum"], stdin=find.stdout, stdout=subprocess.DEVNULL, check=True)
        find.wait()

    def verify() -> None:
        checked, findings = check_all(store, manifests, set())
        assert not findings and checked.bytes == total, findings[:3]

    sha1sum()                                           # warm the page cache for both
    base = timed(sha1sum, repeat=3)
    ours = timed(verify, repeat=3)
    mb = total / 1e6
    print(f"verify of {files} blobs ({small} small + {big_mib} MiB with its manifest; {mb:.0f} MB): "
          f"{ours:.3f} s ({mb / ours:.0f} MB/s); find | xargs sha1sum: {base:.3f} s ({mb / base:.0f} MB/s); "
          f"throughput ratio {base / ours:.2f}x of sha1sum (target >= 0.7x)")
    cli = timed(lambda: subprocess.run([sys.executable, "-m", "kacheryfs", "verify", "--storage-dir", str(root),
                                        "--port", "1"], stdout=subprocess.DEVNULL, check=True), repeat=2)
    print(f"`kacheryfs verify` end to end (offline: lock, index, feeds, startup): {cli:.3f} s "
          f"({base / cli:.2f}x of sha1sum)")


def eviction_pass_seconds(root: Path, blobs: int, passes: int = 30) -> tuple[float, float, float]:
    """(median seconds of an eviction pass that removes EVICT_PER_PASS blobs; median seconds of
    only unlinking that many of the oldest files; seconds of one walk of the store: what each pass
    cost before the running totals)."""
    store = Store(root)
    index = NodeIndex(root / "kacheryfs.db")
    life = Lifecycle(store, index)
    payloads = {}
    conn = index.db.conn()
    conn.execute("BEGIN")
    for i in range(blobs):
        data = i.to_bytes(8, "big") * 16
        sha1 = hashlib.sha1(data).hexdigest()
        _put(store, sha1, data)
        payloads[sha1] = data
        conn.execute("INSERT INTO blobs (sha1, size, last_used, kind) VALUES (?, ?, ?, 'cached')",
                     (sha1, len(data), float(i)))
    conn.execute("COMMIT")
    size = 128
    medians = []
    for only_unlink in (False, True):
        times = []
        for _ in range(passes):
            limit = (blobs - EVICT_PER_PASS) * size               # the pass must remove EVICT_PER_PASS
            if only_unlink:       # the file system's share: the same files removed, nothing else
                removed = [(sha1, s) for sha1, s, _ in index.gc_candidates(None, EVICT_PER_PASS)]
                t0 = time.perf_counter()
                for sha1, _ in removed:
                    os.unlink(store.path_for(sha1))
            else:
                t0 = time.perf_counter()
                removed = life.enforce_cache_limit(limit).removed
            times.append(time.perf_counter() - t0)
            assert len(removed) == EVICT_PER_PASS, len(removed)
            for sha1, _ in removed:                               # put them back (untimed), as newest
                _put(store, sha1, payloads[sha1])
                index.record_cached(sha1, size, "bench")
        times.sort()
        medians.append(times[len(times) // 2])
    t0 = time.perf_counter()
    sum(1 for _ in walk(store))
    return medians[0], medians[1], time.perf_counter() - t0


def _put(store: Store, sha1: str, data: bytes) -> None:
    """Setup only: a blob file written directly, without the store's fsync per blob (100,000
    fsyncs would take longer than everything measured here)."""
    path = store.path_for(sha1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--evict-blobs", type=int, default=100_000)
    parser.add_argument("--skip-verify", action="store_true")
    args = parser.parse_args()
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    if not args.skip_verify:
        with tempfile.TemporaryDirectory(dir=DATA_DIR) as d:
            bench_verify(Path(d), args.small, args.big_mib)
    results = {}
    for n in (10, args.evict_blobs):
        with tempfile.TemporaryDirectory(dir=DATA_DIR) as d:
            results[n] = eviction_pass_seconds(Path(d), n)
    (few, few_fs, _), (many, many_fs, walk_many) = results[10], results[args.evict_blobs]
    print(f"eviction pass (removes {EVICT_PER_PASS} cached blobs): {few * 1e3:.2f} ms with 10 blobs, "
          f"{many * 1e3:.2f} ms with {args.evict_blobs}; ratio {many / few:.2f}x (target ~1x)")
    print(f"  of which the file system's unlink of those {EVICT_PER_PASS} files alone: {few_fs * 1e3:.2f} ms vs "
          f"{many_fs * 1e3:.2f} ms; the pass without it (our code: totals, index, one commit): "
          f"{max(0.0, few - few_fs) * 1e3:.2f} ms vs {max(0.0, many - many_fs) * 1e3:.2f} ms")
    print(f"  before (each pass walked the store): one walk of the {args.evict_blobs}-blob store "
          f"takes {walk_many * 1e3:.0f} ms, {walk_many / many:.0f}x a pass now")
    os.sync()


if __name__ == "__main__":
    main()
