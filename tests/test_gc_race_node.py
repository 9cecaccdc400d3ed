"""gc through a real node while a client process sharing its storage directory stores the same
content again (kachery_client/claims.py): every URI the client got loads and verifies from the
node alone afterwards, and the node's totals match the files."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

from tests.support.network import source_and_reader
from tests.support.nodeproc import client_env, running_node
from tests.test_network import client
from tests.test_stored_data import blob_path, disk_totals, du_json

COUNT = 300
ROUNDS = 2
STORE_AGAIN = """
import sys, kachery_client as kc
texts = [f"gc race {sys.argv[1]} {i}" for i in range(int(sys.argv[2]))]
kc.store_text("warm up")
print("ready", flush=True)
sys.stdin.readline()
for t in reversed(texts):      # gc goes least recently used first: the two meet in the middle
    print(kc.store_text(t))
"""


def test_gc_while_a_client_stores_cached_content_again(tmp_path):
    sa, sb, port_a = source_and_reader(tmp_path)
    got: list[str] = []
    raced = kept = 0
    with running_node(sb) as b:
        with running_node(sa, port=port_a) as a:
            for r in range(ROUNDS):
                uris = client(a, f"for i in range({COUNT}): print(kc.store_text(f'gc race {r} {{i}}'))").split()
                client(b, "import sys\nfor u in sys.argv[1:]: kc.load_text(u)", *uris)     # cached on B
                assert du_json(sb, b.port)["cached"]["count"] == COUNT
                proc = subprocess.Popen([sys.executable, "-c", STORE_AGAIN, str(r), str(COUNT)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env={**os.environ, **client_env(b)})
                assert proc.stdout is not None and proc.stdin is not None
                assert proc.stdout.readline().strip() == "ready"
                proc.stdin.write("go\n")
                proc.stdin.flush()
                removed: set[str] = set()
                deadline = time.monotonic() + 60
                for _ in range(2000):                      # gc passes for as long as the client stores
                    answer = b.post("/kacheryfs/gc", json={"targetBytes": 0})
                    assert answer.status_code == 200, answer.text
                    removed |= {x["sha1"] for x in answer.json()["removed"]}
                    kept += len(answer.json()["kept"])
                    if proc.poll() is not None or time.monotonic() > deadline:
                        break
                out, _ = proc.communicate(timeout=60)
                assert proc.returncode == 0
                mine = out.split()
                assert sorted(mine) == sorted(uris)
                raced += len(removed & {u.split("/")[2] for u in mine})
                got += mine
        # A is gone: what B has is all there is.
        for uri in got:
            sha1 = uri.split("/")[2]
            assert hashlib.sha1(blob_path(sb, sha1).read_bytes()).hexdigest() == sha1, uri
        texts = client(b, "import sys\nfor u in sys.argv[1:]: print(kc.load_text(u))", *got).splitlines()
        assert texts == [f"gc race {r} {i}" for r in range(ROUNDS) for i in reversed(range(COUNT))]
        b.post("/kacheryfs/gc", json={"targetBytes": 0})
        du = du_json(sb, b.port)
        assert (du["store"]["count"], du["store"]["bytes"]) == disk_totals(sb)
        assert du["owned"]["count"] == ROUNDS * COUNT + 1 and du["cached"]["count"] == 0
    print(f"{raced} stored again after gc set them aside, {kept} claimed before gc set them aside")
