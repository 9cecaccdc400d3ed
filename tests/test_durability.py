"""The durability contract end to end (README "Durability"): a small blob torn behind the store's back
is never served and comes back from a source; a client sharing the node's storage directory keeps
storing while the node restarts, and the node learns what was added meanwhile."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap

from kachery_client.store import Store
from tests.support.network import source_and_reader
from tests.support.nodeproc import client_env, running_node, start_node


def _client(node, code: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                         timeout=120, env={**os.environ, **client_env(node)})
    assert out.returncode == 0, out.stderr[-3000:] + node.log()[-2000:]
    return out.stdout.strip()


def test_torn_small_blob_is_fetched_again_from_a_peer(tmp_path):
    sa, sb, port_a = source_and_reader(tmp_path)
    data = b'{"spike_times": [1, 2, 3]}'
    sha1 = hashlib.sha1(data).hexdigest()
    Store(sa).add_bytes(data)
    torn = Store(sb).path_for(Store(sb).add_bytes(data).sha1)
    with open(torn, "r+b") as f:                     # what a power loss before write-back leaves
        f.write(b"\0" * len(data))
    with running_node(sa, port=port_a) as a, running_node(sb) as b:
        assert a.post("/probe").status_code == 200
        loaded = _client(b, "import sys, kachery_client as kc; print(kc.load_text(sys.argv[1]))",
                         f"sha1://{sha1}/x.json")
        assert loaded.encode() == data
        assert torn.read_bytes() == data            # the blob in B's store is whole again
        r = b.post("/downloadFileData", json={"fileKey": {"sha1": sha1}})
        assert r.content == data


def test_torn_small_blob_without_a_source_is_missing_not_served(tmp_path):
    storage = tmp_path / "storage"
    path = Store(storage).path_for(Store(storage).add_bytes(b"only here").sha1)
    path.write_bytes(b"only h")                      # truncated
    with running_node(storage) as node:
        r = node.post("/downloadFileData", json={"fileKey": {"sha1": hashlib.sha1(b"only here").hexdigest()}})
        assert r.status_code == 404
        assert not path.exists()


def test_shared_store_keeps_working_while_the_node_restarts(tmp_path):
    storage = tmp_path / "storage"
    node = start_node(storage)
    port = node.port
    try:
        code = """
            import sys, time, kachery_client as kc
            from pathlib import Path
            print(kc.store_text("before the restart", "before.txt"), flush=True)
            kc.flush()
            Path(sys.argv[1]).write_text("stored")
            while not Path(sys.argv[2]).exists():      # the test restarts the node meanwhile
                time.sleep(0.01)
            print(kc.store_text("while it was away", "away.txt"), flush=True)
            Path(sys.argv[3]).write_text("stored")
            while not Path(sys.argv[4]).exists():
                time.sleep(0.01)
            kc.flush(30)
        """
        marks = [tmp_path / n for n in ("first", "stopped", "second", "restarted")]
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, marks)],
                                stdout=subprocess.PIPE, text=True, env={**os.environ, **client_env(node)})
        try:
            _wait_for(marks[0], proc)
            node.stop()
            marks[1].write_text("")
            _wait_for(marks[2], proc)                 # stored with no node at all
            node = start_node(storage, port=port)
            marks[3].write_text("")
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0
        uris = out.split()
        assert len(uris) == 2
        away_sha1 = uris[1].split("/")[2]
        with sqlite3.connect(storage / "kacheryfs.db") as db:    # the node recorded its name
            names = [r[0] for r in db.execute("SELECT name FROM names WHERE sha1 = ?", (away_sha1,))]
        assert names == ["away.txt"]
        assert Store(storage).read_bytes(away_sha1) == b"while it was away"
        listed = _client(node, "import sys, kachery_client as kc; print(kc.load_text(sys.argv[1]))", uris[1])
        assert listed == "while it was away"
    finally:
        node.stop()


def _wait_for(path, proc, deadline: float = 60.0) -> None:
    import time
    end = time.monotonic() + deadline
    while not path.exists():
        assert proc.poll() is None, "the client exited early"
        assert time.monotonic() < end, f"{path.name} never came"
        time.sleep(0.01)
