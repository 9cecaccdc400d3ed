"""Network speed: a large fetch from a peer node and from SeaweedFS, and the first byte through the mount.

    python bench/network.py [--size-mib 1024] [--repeat 2]

Targets (issue 5), as throughput ratios against `sha1sum` of the same file in the same run
(ratio = sha1sum time / fetch time; higher is better):
  fetch from a peer over loopback      >= 0.5x
  fetch from SeaweedFS                 >= 0.3x
  first byte of a remote file through the mount: < 10 % of the full transfer time.
Starts its own nodes (and SeaweedFS) on free ports with temporary storage directories.
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

from common import make_file, sha1sum_seconds, warm  # noqa: E402

from tests.support.mount import mounted_node  # noqa: E402
from tests.support.network import node_id, write_config  # noqa: E402
from tests.support.nodeproc import client_env, free_port, running_node  # noqa: E402
from tests.support.seaweed import running_seaweed  # noqa: E402

CHANNEL = "benchchan"


def load_seconds(node, uri: str) -> float:
    """Time one kc.load_file through `node`, in a fresh client process, after emptying its store."""
    shutil.rmtree(node.storage_dir / "sha1", ignore_errors=True)
    shutil.rmtree(node.storage_dir / "partial", ignore_errors=True)
    code = ("import sys, time, kachery_client as kc\nload_file = kc.load_file  # imported on first use\n"
            "t = time.perf_counter()\nload_file(sys.argv[1])\n"
            "print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code, uri], capture_output=True, text=True, check=True,
                         env={**os.environ, **client_env(node)})
    return float(out.stdout)


def ratio_line(what: str, seconds: float, base: float, size: int, target: str) -> None:
    print(f"{what}: {seconds:.2f} s ({size / seconds / 1e6:.0f} MB/s); sha1sum {base:.2f} s; "
          f"throughput ratio {base / seconds:.2f}x (target {target})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    src = make_file(args.size_mib << 20)
    size = src.stat().st_size
    warm(src)
    base = sha1sum_seconds(src)

    with tempfile.TemporaryDirectory(dir=os.environ.get("KACHERY_BENCH_TMP")) as d, \
            running_seaweed(Path(d)) as s3:
        tmp = Path(d)
        bucket = {"endpoint_url": s3.endpoint_url, "bucket": s3.create_bucket("bench"), "region": "us-east-1"}
        sa, sb, sc, sm = (tmp / n / "storage" for n in ("a", "b", "c", "m"))
        port_a = free_port()
        write_config(sa, channel=CHANNEL, members=[node_id(sb), node_id(sm)], bucket=bucket)
        write_config(sb, channel=CHANNEL, peers=[f"http://127.0.0.1:{port_a}"], members=[node_id(sa)])
        write_config(sc, channel=CHANNEL, bucket=bucket)
        write_config(sm, channel=CHANNEL, peers=[f"http://127.0.0.1:{port_a}"], members=[node_id(sa)])
        with running_node(sa, port=port_a, env=s3.env) as a:
            store = subprocess.run(
                [sys.executable, "-c", "import sys, kachery_client as kc; u = kc.store_file(sys.argv[1]); "
                 "kc.upload(u, sys.argv[2]); print(u)", str(src), CHANNEL],
                capture_output=True, text=True, check=True, env={**os.environ, **client_env(a)})
            uri = store.stdout.strip()

            with running_node(sb) as b:
                peer = min(load_seconds(b, uri) for _ in range(args.repeat))
            ratio_line(f"fetch of {args.size_mib} MiB from a peer over loopback", peer, base, size, ">= 0.5x")

            with running_node(sc, env=s3.env) as c:
                bucket_s = min(load_seconds(c, uri) for _ in range(args.repeat))
            ratio_line(f"fetch of {args.size_mib} MiB from SeaweedFS", bucket_s, base, size, ">= 0.3x")

            with mounted_node(tmp / "m", sm, tmp / "mnt") as (_, mnt):
                sha1 = uri.split("/")[2]
                f = mnt / "sha1" / sha1 / "data.bin"
                t0 = time.perf_counter()
                with open(f, "rb") as fh:
                    first = fh.read(1)
                first_byte = time.perf_counter() - t0
                assert len(first) == 1
                deadline = time.monotonic() + 600
                while os.getxattr(f, "user.kachery.progress") != f"{size}/{size}".encode():
                    assert time.monotonic() < deadline, "the transfer did not finish"
                    time.sleep(0.005)
                full = time.perf_counter() - t0
            print(f"first byte of a remote {args.size_mib} MiB file through the mount: {first_byte * 1e3:.0f} ms; "
                  f"full transfer {full:.2f} s; {first_byte / full * 100:.1f} % of it (target < 10 %)")


if __name__ == "__main__":
    main()
