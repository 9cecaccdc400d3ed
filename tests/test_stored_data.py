"""The life of stored data with real nodes (a source A and a reader B in one channel): verify and
repair, pins, gc, du, whereis (peer and SeaweedFS bucket), drop, status from the running totals."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.support.cli import run_cli
from tests.support.mount import mounted_node
from tests.support.network import node_id, source_and_reader, write_config
from tests.support.nodeproc import client_env, running_node
from tests.support.seaweed import running_seaweed
from tests.support.tasks import poll_until
from tests.test_network import CHANNEL, client, make_file, sha1_file, store_on


def kacheryfs(storage: Path, port: int, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kacheryfs", *args, "--storage-dir", str(storage),
                           "--port", str(port)], capture_output=True, text=True, timeout=timeout)


def blob_path(storage: Path, sha1: str) -> Path:
    return storage / "sha1" / sha1[:2] / sha1[2:4] / sha1[4:6] / sha1


def disk_totals(storage: Path) -> tuple[int, int]:
    """(count, bytes) of the regular blob files under sha1/, walked here independently."""
    count = total = 0
    for dirpath, _, files in os.walk(storage / "sha1"):
        for name in files:
            if len(name) == 40:
                count += 1
                total += os.path.getsize(os.path.join(dirpath, name))
    return count, total


def du_json(storage: Path, port: int) -> dict:
    out = kacheryfs(storage, port, "du", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def corrupt(path: Path, at: int = 5) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_verify_finds_quarantines_and_repairs_from_the_peer(tmp_path):
    sa, sb, port_a = source_and_reader(tmp_path)
    big = make_file(tmp_path / "big.bin", 25_000_000)                 # two chunks and a manifest
    with running_node(sa, port=port_a) as a, running_node(sb) as b:
        small_uri = client(a, "print(kc.store_text('verify me'))")
        big_uri = store_on(a, big)
        only_b = client(b, "print(kc.store_text('nobody else has this'))")
        for uri in (small_uri, big_uri):
            client(b, "kc.load_file(sys.argv[1])", uri)
        small, large, lone = (u.split("/")[2] for u in (small_uri, big_uri, only_b))
        ok = kacheryfs(sb, b.port, "verify")
        assert ok.returncode == 0 and "all content verified" in ok.stdout, ok.stdout + ok.stderr
        for sha1 in (small, large, lone):
            corrupt(blob_path(sb, sha1))
        found = kacheryfs(sb, b.port, "verify")
        assert found.returncode == 1
        for sha1 in (small, large, lone):
            assert f"corrupt: sha1://{sha1}" in found.stderr, found.stderr
            assert not blob_path(sb, sha1).exists() and (sb / "quarantine" / sha1).exists()
        # Never served again: B fetches the small one afresh from A instead of its bad copy.
        assert client(b, "print(kc.load_text(sys.argv[1]))", small_uri) == "verify me"
        assert du_json(sb, b.port)["quarantine"]["count"] == 3
        fixed = kacheryfs(sb, b.port, "verify", "--repair")
        assert fixed.returncode == 1                              # the content only B had cannot come back
        assert f"repaired: sha1://{large}" in fixed.stdout and f"not repaired: sha1://{lone}" in fixed.stderr
        assert sha1_file(blob_path(sb, large)) == large
    # Without a node: verify takes the storage lock itself; --repair fetches from A again.
    corrupt(blob_path(sb, large), at=24_000_000)
    with running_node(sa, port=port_a):
        offline = kacheryfs(sb, 1, "verify", "--repair")
        assert f"corrupt: sha1://{large}" in offline.stdout + offline.stderr, offline.stdout + offline.stderr
        assert f"sha1://{large}" in offline.stdout and sha1_file(blob_path(sb, large)) == large
        assert not (sb / "quarantine" / large).exists()


def test_verify_checks_manifests_and_feed_chains(tmp_path):
    storage = tmp_path / "storage"
    big = make_file(tmp_path / "big.bin", 21_000_000)
    with running_node(storage) as node:
        uri = store_on(node, big)
        manifest = uri.split("manifest=")[1]
        feed = client(node, "f = kc.create_feed('v'); sf = f.load_subfeed('s'); "
                            "sf.append_messages([{'n': i} for i in range(3)]); print(f.feed_id)")
        linked = tmp_path / "linked.txt"
        linked.write_text("linked in place")
        link_uri = client(node, "print(kc.link_file(sys.argv[1]))", str(linked))
        assert du_json(storage, node.port)["links"] == {"count": 1, "bytes": 15}
    # The linked file's bytes change behind the store's back, size and mtime kept: a bad link.
    st = os.stat(linked)
    linked.write_text("LINKED in place")
    os.utime(linked, ns=(st.st_atime_ns, st.st_mtime_ns))
    link_sha1 = link_uri.split("/")[2]
    # A manifest whose chunk hashes are wrong (its own hash made to match: a stored bad manifest).
    bad = json.loads(blob_path(storage, manifest).read_bytes())
    bad["chunks"][1]["sha1"] = "0" * 40
    data = json.dumps(bad).encode()
    import hashlib
    bad_sha1 = hashlib.sha1(data).hexdigest()
    blob_path(storage, bad_sha1).parent.mkdir(parents=True, exist_ok=True)
    blob_path(storage, bad_sha1).write_bytes(data)
    db = sqlite3.connect(storage / "kacheryfs.db")
    db.execute("UPDATE manifests SET manifest_sha1 = ? WHERE manifest_sha1 = ?", (bad_sha1, manifest))
    db.commit()
    db.close()
    # A feed message altered in feeds.db: its signature no longer verifies.
    db = sqlite3.connect(storage / "feeds.db")
    text = db.execute("SELECT message FROM subfeedMessages WHERE feedId = ? AND position = 1", (feed,)).fetchone()[0]
    db.execute("UPDATE subfeedMessages SET message = ? WHERE feedId = ? AND position = 1",
               (text.replace('"n":1', '"n":7'), feed))
    db.commit()
    db.close()
    out = kacheryfs(storage, 1, "verify")                       # no node: offline, under the lock
    assert out.returncode == 1
    assert f"bad-manifest: sha1://{bad_sha1}" in out.stderr, out.stderr
    assert f"feed: feed {feed}" in out.stderr and "only 1 of 3" in out.stderr
    assert f"bad-link: sha1://{link_sha1}" in out.stderr
    assert (storage / "quarantine" / f"{link_sha1}.link").exists() and not blob_path(storage, link_sha1).with_name(
        link_sha1 + ".link").exists()


def test_pins_gc_and_du(tmp_path):
    sa, sb, port_a = source_and_reader(tmp_path)
    with running_node(sa, port=port_a) as a, running_node(sb) as b:
        uris = [client(a, "print(kc.store_text(sys.argv[1]))", f"shared {i}") for i in range(4)]
        owned = store_on(b, make_file(tmp_path / "mine.bin", 300_000))
        for uri in uris[:3]:
            client(b, "kc.load_file(sys.argv[1])", uri)
        # Pinning content that is not local fetches it first.
        pinned = run_cli("kachery-pin", uris[3], env=client_env(b))
        assert pinned.returncode == 0 and "pinned" in pinned.stdout.decode(), pinned.stderr
        assert client(b, "kc.pin(sys.argv[1]); print(len(kc.pins()))", uris[0]) == "2"
        listed = run_cli("kachery-pin", "--list", env=client_env(b)).stdout.decode()
        assert uris[3].split("/")[2] in listed and uris[0].split("/")[2] in listed
        du = du_json(sb, b.port)
        assert (du["store"]["count"], du["store"]["bytes"]) == disk_totals(sb)
        assert du["owned"]["count"] == 1 and du["cached"]["count"] == 4 and du["pinned"]["count"] == 2
        dry = kacheryfs(sb, b.port, "gc", "--dry-run", "--target-bytes", "0")
        assert dry.stdout.count("would remove") == 2 and disk_totals(sb) == (5, du["store"]["bytes"])
        gone = kacheryfs(sb, b.port, "gc", "--target-bytes", "0")
        assert gone.returncode == 0 and gone.stdout.count("removed sha1://") == 2, gone.stdout
        for i, uri in enumerate(uris):
            assert blob_path(sb, uri.split("/")[2]).exists() == (i in (0, 3)), i
        assert blob_path(sb, owned.split("/")[2]).exists()
        du = du_json(sb, b.port)
        assert (du["store"]["count"], du["store"]["bytes"]) == disk_totals(sb)
        assert du["cached"]["count"] == 2 and du["owned"]["count"] == 1
        # --older-than: nothing used in the last day goes; unpinned content is then removable.
        assert "in 0 blobs" in kacheryfs(sb, b.port, "gc", "--older-than", "1").stdout
        assert run_cli("kachery-unpin", uris[3], env=client_env(b)).returncode == 0
        assert client(b, "print(kc.unpin(sys.argv[1]))", uris[0]) == "True"
        assert kacheryfs(sb, b.port, "gc").stdout.count("removed sha1://") == 2
        assert disk_totals(sb) == (1, 300_000)
        status = kacheryfs(sb, b.port, "status")
        assert "Blobs:             1 (300000 bytes): 1 owned, 0 cached, 0 pinned" in status.stdout, status.stdout
        # gc'd content comes back on demand.
        assert client(b, "print(kc.load_text(sys.argv[1]))", uris[1]) == "shared 1"


def test_a_pin_holds_the_transfer_it_started_past_the_grace_period(tmp_path):
    """The node's pin waits for its fetch holding the transfer: a fetch that lasts longer than
    `transfer_grace_seconds`, with no other client waiting, is not abandoned."""
    grace = 1
    sa, sb, port_a = source_and_reader(tmp_path, reader_node={"fetch_connections": 1,
                                                               "transfer_grace_seconds": grace})
    write_config(sa, members=[node_id(sb)], node={"peer_serve_rate": 12_000_000})     # ~4 s for 45 MB
    with running_node(sa, port=port_a) as a, running_node(sb) as b:
        uri = store_on(a, make_file(tmp_path / "big.bin", 45_000_000))
        sha1 = uri.split("/")[2]
        answer: dict[str, requests.Response] = {}
        pinning = threading.Thread(target=lambda: answer.setdefault("r", b.post("/kacheryfs/pin", json={"uris": [uri]})))
        pinning.start()
        try:
            # Past the grace period, the transfer runs on, held by the pin alone.
            t0 = time.monotonic()
            seen = poll_until(lambda: time.monotonic() - t0 > grace + 1 and next(
                (t for t in requests.get(b.url + "/stats", headers=b.headers(), timeout=10).json()["stats"]["transfers"]
                 if t["sha1"] == sha1), None), 30, "the transfer past the grace period")
            assert seen["waiters"] == 1 and seen["bytesLoaded"] < seen["bytesTotal"], seen
        finally:
            pinning.join(60)
        r = answer["r"]
        assert r.status_code == 200 and r.json()["pinned"][0]["size"] == 45_000_000, r.text
        assert blob_path(sb, sha1).exists() and "abandoned" not in b.log()
        assert sha1 in run_cli("kachery-pin", "--list", env=client_env(b)).stdout.decode()


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with running_seaweed(tmp_path_factory.mktemp("s3")) as server:
        yield server


def test_whereis_lists_the_peer_and_the_bucket(tmp_path, s3):
    bucket = {"endpoint_url": s3.endpoint_url, "bucket": s3.create_bucket("kachery-whereis"),
              "region": "us-east-1"}
    sa, sb, port_a = source_and_reader(tmp_path, bucket=bucket)
    with running_node(sa, port=port_a, env=s3.env) as a, running_node(sb, env=s3.env) as b:
        uri = store_on(a, make_file(tmp_path / "w.bin", 123_456), "--upload", CHANNEL)
        out = run_cli("kachery-whereis", uri, env={**client_env(b), **s3.env})
        assert out.returncode == 0, out.stderr
        lines = out.stdout.decode().splitlines()
        assert any(line.startswith(f"peer http://127.0.0.1:{port_a}") and "123456 bytes" in line for line in lines)
        assert any(line.startswith("bucket s3://kachery-whereis") and "123456 bytes" in line for line in lines)
        assert "this node" in out.stderr.decode()                         # B itself does not have it
        answers = json.loads(client(b, "import json; print(json.dumps(kc.whereis(sys.argv[1])))", uri))
        assert [a["kind"] for a in answers] == ["local", "peer", "bucket"]
        assert all(a["seconds"] >= 0 for a in answers) and [a["found"] for a in answers] == [False, True, True]
        nobody = "sha1://" + "cd" * 20 + "/x"
        none = run_cli("kachery-whereis", nobody, env=client_env(b))
        assert none.returncode == 1 and b"no source holds" in none.stderr
        # A load nobody can serve names each source asked and its answer.
        failed = run_cli("kachery-cat", nobody, env=client_env(b))
        err = failed.stderr.decode()
        assert failed.returncode == 3 and f"peer http://127.0.0.1:{port_a}" in err and "bucket s3://" in err
        assert err.count("not found") >= 2, err


def test_drop_needs_another_copy_unless_forced(tmp_path):
    sa, sb, port_a = source_and_reader(tmp_path)
    with running_node(sa, port=port_a) as a, running_node(sb) as b:
        only_here = store_on(b, make_file(tmp_path / "one.bin", 50_000))
        both = tmp_path / "both.bin"
        make_file(both, 21_000_000)                             # large: size and manifest are compared
        on_b, on_a = store_on(b, both), store_on(a, both)
        assert on_a == on_b
        refused = kacheryfs(sb, b.port, "drop", only_here)
        assert refused.returncode == 1 and "refusing to drop" in refused.stderr and "numcopies is 1" in refused.stderr
        assert blob_path(sb, only_here.split("/")[2]).exists()
        dropped = kacheryfs(sb, b.port, "drop", on_b)
        assert dropped.returncode == 0 and f"peer http://127.0.0.1:{port_a}" in dropped.stdout, dropped.stderr
        assert not blob_path(sb, on_b.split("/")[2]).exists()
        forced = kacheryfs(sb, b.port, "drop", only_here, "--force")
        assert forced.returncode == 0 and "--force" in forced.stderr
        assert not blob_path(sb, only_here.split("/")[2]).exists()
        du = du_json(sb, b.port)
        assert (du["store"]["count"], du["store"]["bytes"]) == disk_totals(sb)
        # Dropped content is still loadable on B: from A.
        assert sha1_file(Path(client(b, "print(kc.load_file(sys.argv[1]))", on_b))) == on_b.split("/")[2].split("?")[0]


def test_status_totals_are_fast_with_100000_blobs(tmp_path):
    """status and du read the node's running totals: with 100,000 blobs recorded the node answers
    in well under 0.1 s (no walk of the store)."""
    storage = tmp_path / "storage"
    with running_node(storage) as node:
        client(node, "[kc.store_text(str(i)) for i in range(300)]")
        db = sqlite3.connect(storage / "kacheryfs.db")           # many more records, as a big store has
        db.executemany("INSERT INTO blobs (sha1, size, last_used, kind) VALUES (?, 10, 0, 'cached')",
                       [(f"{i:040x}",) for i in range(99_700)])
        db.commit()
        db.close()
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            r = node.post("/kacheryfs/du", json={})
            times.append(time.perf_counter() - t0)
            assert r.json()["du"]["store"]["count"] == 100_000
        assert min(times) < 0.1, times
        status = kacheryfs(storage, node.port, "status")
        text_bytes = sum(len(str(i)) for i in range(300))
        assert f"Blobs:             100000 ({997_000 + text_bytes} bytes): 300 owned, 99700 cached" in status.stdout, \
            status.stdout


def test_pinned_attribute_on_the_real_mount(tmp_path):
    with mounted_node(tmp_path) as (node, mnt):
        uri = client(node, "print(kc.store_text('pinned in the mount'))")
        f = mnt / "sha1" / uri.split("/")[2] / "f.txt"
        assert os.getxattr(f, "user.kachery.pinned") == b"0"
        assert run_cli("kachery-pin", uri, env=client_env(node)).returncode == 0
        assert os.getxattr(f, "user.kachery.pinned") == b"1"
        assert run_cli("kachery-unpin", uri, env=client_env(node)).returncode == 0
        assert os.getxattr(f, "user.kachery.pinned") == b"0"


def test_data_commands_read_the_auth_code_as_status_does(tmp_path, monkeypatch):
    """`kacheryfs du` against a running node: the code from KACHERY_CLIENT_AUTH_CODE when set, and
    without it and without a readable client-auth, an error that says how to give it."""
    storage = tmp_path / "storage"
    with running_node(storage) as node:
        code = node.auth_code()
        (storage / "client-auth").rename(tmp_path / "hidden-auth")
        r = kacheryfs(storage, node.port, "du", "--json")
        assert r.returncode != 0 and "KACHERY_CLIENT_AUTH_CODE" in r.stderr, r.stderr
        monkeypatch.setenv("KACHERY_CLIENT_AUTH_CODE", code)
        r = kacheryfs(storage, node.port, "du", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["store"]["count"] == 0
