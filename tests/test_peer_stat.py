"""`/peer/stat` with `needManifest: false` (docs/PROTOCOL.md section 20): a node asked by a peer
that already has the manifest (from the URI) answers without making one, which would cost it a pass
over the whole blob before the fetch can start. Real nodes on 127.0.0.1; the blob is stored on A
behind its back (no notice), so A has no manifest recorded."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

from kachery_client.hashing import CHUNK_SIZE
from kachery_client.store import Store
from kacheryfs.content.sources.peer import PeerSource
from kacheryfs.security.keys import load_or_create_node_keys
from tests.support.network import source_and_reader
from tests.support.nodeproc import running_node
from tests.test_network import client


def recorded_manifest(storage: Path, sha1: str) -> str | None:
    db = sqlite3.connect(f"file:{storage / 'kacheryfs.db'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT manifest_sha1 FROM manifests WHERE sha1 = ?", (sha1,)).fetchone()
    finally:
        db.close()
    return row[0] if row else None


def test_a_peer_with_the_manifest_is_answered_without_one_being_made(tmp_path):
    sa, sb, port_a = source_and_reader(tmp_path)
    data = os.urandom(CHUNK_SIZE + 1_000_000)                     # two chunks: a manifest exists
    blob = Store(sa).add_bytes(data)
    assert blob.manifest_sha1 is not None
    with running_node(sa, port=port_a) as a, running_node(sb) as b:
        # B fetches with the manifest of the URI: A makes none.
        path = client(b, "print(kc.load_file(sys.argv[1]))", f"sha1://{blob.sha1}/x.bin?manifest={blob.manifest_sha1}")
        assert hashlib.sha1(Path(path).read_bytes()).hexdigest() == blob.sha1
        assert recorded_manifest(sa, blob.sha1) is None, a.log()[-2000:]
        # B recorded the manifest its chunks were checked against: serving the blob on costs B no pass.
        assert recorded_manifest(sb, blob.sha1) == blob.manifest_sha1

        peer = PeerSource(a.url, "testchan", load_or_create_node_keys(sb))
        found = peer.stat(blob.sha1, need_manifest=False)
        assert found is not None and (found.size, found.manifest_sha1) == (len(data), None)
        assert recorded_manifest(sa, blob.sha1) is None
        # A peer without the manifest gets one (made now, recorded), and then so does everyone.
        found = peer.stat(blob.sha1)
        assert found is not None and found.manifest_sha1 == blob.manifest_sha1
        assert recorded_manifest(sa, blob.sha1) == blob.manifest_sha1
        found = peer.stat(blob.sha1, need_manifest=False)
        assert found is not None and found.manifest_sha1 == blob.manifest_sha1
