"""Node speed: small store_json calls through a running node, and a large /store upload.

    python bench/node.py [--count 2000] [--size-mib 1024]

Targets (issue 3): store_json through the node <= 2 ms per call (the original daemon: 82 ms);
a 1 GiB store through the node within 1.3x of sha1sum of the same file.
Starts its own node on a free port with a temporary storage directory.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import requests  # noqa: E402
from common import make_file, report, sha1sum_seconds, timed, warm  # noqa: E402

from tests.support.nodeproc import client_env, running_node  # noqa: E402

# The unmodified kachery-client 1.2.0, in the venv the tests make (tests/conftest.py).
KC120 = os.environ.get("KACHERY_CLIENT_120_PYTHON", str(ROOT / ".venv-kc120" / "bin" / "python"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    src = make_file(args.size_mib << 20)
    warm(src)
    base = sha1sum_seconds(src)

    with tempfile.TemporaryDirectory() as d, running_node(Path(d) / "storage") as node:
        os.environ.update(client_env(node))
        os.environ.pop("KACHERY_OFFLINE_STORAGE_DIR", None)
        import kachery_client as kc
        kc.store_json({"warm": 1})
        t0 = time.perf_counter()
        for i in range(args.count):
            kc.store_json({"i": i})
        print(f"store_json through the node (our client, shared storage): "
              f"{(time.perf_counter() - t0) / args.count * 1e3:.3f} ms per call (target <= 2 ms)")

        if not os.path.exists(KC120):
            print(f"(skipping kachery-client 1.2.0: no {KC120}; run the tests once to make it)")
        else:
            script = ("import time, kachery_client as kc\nkc.store_json({'w': 1})\nt = time.perf_counter()\n"
                      f"for i in range({args.count}): kc.store_json({{'j': i}})\n"
                      f"print((time.perf_counter() - t) / {args.count} * 1e3)")
            out = subprocess.run([KC120, "-c", script], capture_output=True, text=True, cwd=d,
                                 env={**os.environ, "PYTHONPATH": ""}, check=True)
            print(f"store_json through the node (kachery-client 1.2.0, /store): {float(out.stdout):.3f} ms per call "
                  f"(target <= 2 ms; the original daemon took 82 ms)")

        def remove_blobs() -> None:
            for sha1 in list(node.storage_dir.glob("sha1/*/*/*/*")):
                sha1.unlink()
        report(f"kc.store_file of {args.size_mib} MiB through the node (shared storage)",
               timed(lambda: kc.store_file(src), repeat=2, setup=remove_blobs), "sha1sum", base, "<= 1.3x")

        def upload() -> None:
            with open(src, "rb") as f:
                r = requests.post(node.url + "/store", data=f, headers=node.headers())
            assert r.json()["success"], r.text
        report(f"raw /store upload of {args.size_mib} MiB (a client on another machine)",
               timed(upload, repeat=2, setup=remove_blobs), "sha1sum", base, "<= 1.3x")


if __name__ == "__main__":
    main()
