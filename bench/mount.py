"""Mount speed on one blob: warm and first reads vs `cat` of the blob file; `cp` into incoming/ vs
Store.add_file of the same file; stat of a mounted path.

    python bench/mount.py [--size-mib 1024] [--stats 200000]

Targets (issue 4): warm read >= 0.9x native cat; first read >= 0.25x; cp into incoming/ >= 0.5x the
speed of kachery-store; stat >= 200,000 per second. Needs root (to drop the page cache) and /dev/fuse.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import make_file, timed, warm  # noqa: E402

from kachery_client.store import Store  # noqa: E402
from tests.support.mount import mounted_node  # noqa: E402


def drop_cache(*paths: Path) -> None:
    """Evict these files from the page cache (no root needed for files we can open)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _peak_rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def cat(path: Path) -> None:
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--stats", type=int, default=200_000)
    args = parser.parse_args()
    src = make_file(args.size_mib << 20)
    warm(src)
    with tempfile.TemporaryDirectory(dir=src.parent) as d, mounted_node(Path(d)) as (node, mnt):
        blob = Store(node.storage_dir).add_file(src)
        blob_path = Store(node.storage_dir).path_for(blob.sha1)
        mounted = mnt / "sha1" / blob.sha1 / "bench.bin"

        warm(blob_path)
        native = timed(lambda: cat(blob_path), repeat=3)
        warm(mounted)
        warm_read = timed(lambda: cat(mounted), repeat=3)
        print(f"warm read through the mount: {native / warm_read:.2f}x native cat "
              f"({warm_read:.3f} s vs {native:.3f} s; target >= 0.9x)")

        def cold_native() -> None:
            drop_cache(blob_path)
            cat(blob_path)
        native_cold = timed(cold_native, repeat=2)

        def cold_mounted() -> None:
            drop_cache(blob_path, mounted)
            cat(mounted)
        first = timed(cold_mounted, repeat=2)
        print(f"first read through the mount: {native_cold / first:.2f}x native cold cat "
              f"({first:.3f} s vs {native_cold:.3f} s; target >= 0.25x)")

        n = [0]

        def ingest() -> None:
            n[0] += 1
            subprocess.run(["cp", str(src), str(mnt / "incoming" / f"in{n[0]}.bin")], check=True)
        store_dir = Path(d) / "store-baseline"

        def add_file() -> None:
            shutil.rmtree(store_dir, ignore_errors=True)
            Store(store_dir).add_file(src)
        baseline = timed(add_file, repeat=2)
        cp_in = timed(ingest, repeat=1)
        print(f"cp into incoming/: {baseline / cp_in:.2f}x the speed of kachery-store "
              f"({cp_in:.3f} s vs {baseline:.3f} s; target >= 0.5x)")

        big = make_file(2 << 30)
        hwm = _peak_rss_mib(node.proc.pid)
        subprocess.run(["cp", str(big), str(mnt / "incoming" / "two-gib.bin")], check=True)
        print(f"node peak RSS grew by {_peak_rss_mib(node.proc.pid) - hwm:.0f} MiB while 2 GiB were copied into "
              f"incoming/ (target <= ~100 MB)")

        def stat_rate(path: Path) -> float:
            os.stat(path)
            t = time.perf_counter()
            for _ in range(args.stats):
                os.stat(path)
            return args.stats / (time.perf_counter() - t)
        rate, native = stat_rate(mounted), stat_rate(blob_path)
        print(f"stat of a mounted path: {rate:,.0f} per second (target >= 200,000); "
              f"native stat of the blob file: {native:,.0f} per second ({rate / native:.2f}x)")


if __name__ == "__main__":
    main()
