"""Store speed: Store.add_file of a large file vs sha1sum of the same file; small store_json calls.

    python bench/store.py [--size-mib 1024] [--count 2000]

Targets (issue 2): add_file within 1.2x of sha1sum's time; offline store_json <= 0.2 ms each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import make_file, report, sha1sum_seconds, timed, warm  # noqa: E402

from kachery_client.store import Store  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()

    src = make_file(args.size_mib << 20)
    warm(src)
    base = sha1sum_seconds(src)
    with tempfile.TemporaryDirectory(dir=src.parent) as d:
        t = timed(lambda: Store(Path(d) / "s").add_file(src), repeat=2,
                  setup=lambda: shutil.rmtree(Path(d) / "s", ignore_errors=True))
        report(f"Store.add_file {args.size_mib} MiB (new content)", t, "sha1sum", base, "<= 1.2x")
        again = timed(lambda: Store(Path(d) / "s").add_file(src), repeat=2)
        report("Store.add_file again (the same file, unchanged: its hash is cached)", again, "sha1sum", base, "<= 1.2x")
        other = Path(d) / "same-content.bin"
        os.link(src, other)                  # the same bytes under another path: hashed again
        same = timed(lambda: Store(Path(d) / "s").add_file(other), repeat=2,
                     setup=lambda: shutil.rmtree(Path(d) / "s" / "hash-cache", ignore_errors=True))
        report("Store.add_file of the same content from another path", same, "sha1sum", base, "<= 1.2x")

    with tempfile.TemporaryDirectory() as d:
        os.environ["KACHERY_OFFLINE_STORAGE_DIR"] = d
        import kachery_client as kc
        kc.store_json({"warm": True})
        t0 = time.perf_counter()
        for i in range(args.count):
            kc.store_json({"i": i})
        per_call = (time.perf_counter() - t0) / args.count
        print(f"offline store_json: {per_call * 1e3:.3f} ms per call over {args.count} (target <= 0.2 ms)")


if __name__ == "__main__":
    main()
