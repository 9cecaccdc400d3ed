"""50 client processes storing and loading through one node for 60 s: zero errors.

Half of the processes share the node's storage directory (they write blobs themselves and announce
them with /kacheryfs/added); the other half cannot see it, so every store streams to POST /store and
every load comes back through /downloadFileData. Every process also sets and reads a mutable of its
own each round. Each round checks what it loads against what it stored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.support.nodeproc import client_env, running_node
from tests.support.storecheck import bad_blobs

PROCESSES = 50
SECONDS = 60.0

CLIENT = r"""
import json, os, sys, time
import kachery_client as kc
start_at, seconds, me = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
while time.time() < start_at:
    time.sleep(0.01)
end = time.monotonic() + seconds
ops, errors = 0, []
while time.monotonic() < end:
    try:
        data = os.urandom(int.from_bytes(os.urandom(2), "big") * 8) + f"{me}/{ops}".encode()
        uri = kc.store_bytes(data, "soak.bin")
        if kc.load_bytes(uri) != data:
            errors.append(f"{uri}: loaded bytes differ")
        assert kc.set(f"soak-{me}", ops) is True and kc.get(f"soak-{me}") == ops
        ops += 4
    except Exception as e:
        errors.append(repr(e))
        ops += 1
if not os.environ.get("KACHERY_CLIENT_AUTH_CODE"):
    kc.node_client().flush()            # the blobs it announced: told to the node before exiting
print(json.dumps({"ops": ops, "errors": errors[:5], "n_errors": len(errors)}))
"""


def test_50_clients_for_60_seconds(tmp_path):
    with running_node(tmp_path / "storage") as node:
        shared = client_env(node)
        remote = {**shared, "KACHERY_CLIENT_AUTH_CODE": node.auth_code()}
        start_at = time.time() + 5          # all processes imported and waiting by then
        procs = []
        for i in range(PROCESSES):
            env = shared if i % 2 else {**remote, "KACHERY_STORAGE_DIR": str(tmp_path / f"cache{i}")}
            procs.append(subprocess.Popen([sys.executable, "-c", CLIENT, str(start_at), str(SECONDS), str(i)],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          env={**os.environ, **env}))
        results = []
        for p in procs:
            out, err = p.communicate(timeout=SECONDS + 120)
            assert p.returncode == 0, err.decode()[-2000:]
            results.append(json.loads(out))
        ops = sum(r["ops"] for r in results)
        errors = sum(r["n_errors"] for r in results)
        print(f"\nsoak: {PROCESSES} processes, {SECONDS:.0f} s: {ops} operations, {errors} errors")
        assert errors == 0, [r["errors"] for r in results if r["errors"]]
        assert ops >= PROCESSES * 8
        assert node.proc.poll() is None and "Traceback" not in node.log()
        assert bad_blobs(node.storage_dir) == []
