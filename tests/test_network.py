"""The network: real nodes on 127.0.0.1 fetching from each other and from a real S3 server (SeaweedFS)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from kacheryfs.security.keys import load_or_create_node_keys
from kacheryfs.security.peer_auth import sign_request
from tests.support.cli import run_cli
from tests.support.files import make_file
from tests.support.mount import mounted_node
from tests.support.network import node_id, source_and_reader, write_config
from tests.support.nodeproc import client_env, free_port, running_node, start_node
from tests.support.seaweed import running_seaweed

CHANNEL = "testchan"
BIG_MB = int(os.environ.get("KACHERY_TEST_BIG_MB", "1024"))


def client(node, code: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run Python client code in a process of its own, as a user of `node` on its machine."""
    out = subprocess.run([sys.executable, "-c", "import sys, kachery_client as kc\n" + code, *args],
                         capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **client_env(node), **(env or {})})
    if out.returncode != 0:
        raise AssertionError(f"client failed:\n{out.stderr[-3000:]}\n--- node log ---\n{node.log()[-3000:]}")
    return out.stdout.strip()


def store_on(node, path: Path, *extra: str) -> str:
    out = run_cli("kachery-store", str(path), *extra, env=client_env(node), timeout=300)
    assert out.returncode == 0, out.stderr.decode() + node.log()[-2000:]
    return out.stdout.decode().strip()


def sha1_file(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with running_seaweed(tmp_path_factory.mktemp("s3")) as server:
        yield server


def test_store_on_a_load_on_b_through_the_peer(tmp_path):
    sa, sb, port_a = source_and_reader(tmp_path)
    big = make_file(tmp_path / "big.bin", 45_000_000)               # 3 chunks, with a manifest
    with running_node(sa, port=port_a) as a, running_node(sb) as b:
        text_uri = client(a, "print(kc.store_text('hello from A'))")
        big_uri = store_on(a, big)
        assert "?manifest=" in big_uri
        assert client(b, "print(kc.load_text(sys.argv[1]))", text_uri) == "hello from A"
        # Without ?manifest= B learns the manifest from A; either way every chunk is verified.
        bare = big_uri.split("?")[0]
        path = client(b, "print(kc.load_file(sys.argv[1]))", bare)
        assert path.startswith(str(sb)) and sha1_file(Path(path)) == sha1_file(big)
        # Ranges and the commands work on what came over the network.
        out = run_cli("kachery-cat", text_uri, "--start", "6", "--end", "10", env=client_env(b))
        assert out.stdout == b"from"
        status = subprocess.run([sys.executable, "-m", "kacheryfs", "status", "--storage-dir", str(sb),
                                 "--port", str(b.port)], capture_output=True, text=True, timeout=30)
        assert f"Channel {CHANNEL}: download/upload/serve; 1 peers, 1 members" in status.stdout, status.stdout
        # Content nobody has: a clear error naming the sources asked, quickly.
        t0 = time.monotonic()
        out = run_cli("kachery-cat", "sha1://" + "ab" * 20 + "/x", env=client_env(b))
        assert out.returncode != 0 and time.monotonic() - t0 < 30
        assert b"Traceback" not in out.stderr and out.stderr.strip()


def test_unauthorized_node_refused(tmp_path):
    sa, sb, port_a = source_and_reader(tmp_path, reader_is_member=False)                   # A does not list B
    with running_node(sa, port=port_a) as a, running_node(sb) as b:
        uri = client(a, "print(kc.store_text('members only'))")
        out = run_cli("kachery-cat", uri, env=client_env(b))
        assert out.returncode != 0
        assert b"not a member" in out.stderr, out.stderr
        sha1 = uri.split("/")[2]
        # The peer API itself: unsigned, signed by a stranger, signed for another channel.
        assert requests.get(f"{a.url}/peer/blob/{sha1}", timeout=10).status_code == 403
        node_id(tmp_path / "stranger")                                   # makes its directory and keys
        stranger = load_or_create_node_keys(tmp_path / "stranger")
        path = f"/peer/blob/{sha1}"
        r = requests.get(a.url + path, headers=sign_request(stranger, CHANNEL, "GET", path), timeout=10)
        assert r.status_code == 403 and "not a member" in r.text
        member = load_or_create_node_keys(sa)                            # a's own key: still no
        r = requests.get(a.url + path, headers=sign_request(member, "otherchan", "GET", path), timeout=10)
        assert r.status_code == 403
        # A forged signature: a member's id with a stranger's signature.
        headers = sign_request(stranger, CHANNEL, "GET", path)
        headers["x-kachery-node"] = node_id(sb)
        write_config(sa, members=[node_id(sb)])                          # B is a member on A's next start
    with running_node(sa, port=port_a) as a:
        r = requests.get(a.url + path, headers=headers, timeout=10)
        assert r.status_code == 403 and "signature" in r.text
        signed = sign_request(load_or_create_node_keys(sb), CHANNEL, "GET", path)
        assert requests.get(a.url + path, headers=signed, timeout=10).content == b"members only"


def test_load_through_the_bucket_while_the_storing_node_is_down(tmp_path, s3):
    bucket = {"endpoint_url": s3.endpoint_url, "bucket": s3.create_bucket("kachery-down"), "prefix": "lab",
              "region": "us-east-1"}
    sa, sb, port_a = source_and_reader(tmp_path, bucket=bucket)
    data = make_file(tmp_path / "data.bin", 21_000_000)
    with running_node(sa, port=port_a, env=s3.env) as a:
        uri = store_on(a, data, "--upload", CHANNEL)
        small = client(a, "u = kc.store_text('small'); print(u); print(kc.upload(u, sys.argv[1]))", CHANNEL)
        small_uri, uploaded = small.splitlines()
        assert uploaded == "True"
        assert client(a, "print(kc.upload(sys.argv[1], sys.argv[2]))", small_uri, CHANNEL) == "False"
    sha1 = uri.split("/")[2]
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket["bucket"])["Contents"]]
    assert f"lab/sha1/{sha1[:2]}/{sha1[2:4]}/{sha1[4:6]}/{sha1}" in keys
    assert len(keys) == 3                                                # the file, its manifest, small
    with running_node(sb, env=s3.env) as b:                              # A is down: the bucket serves
        path = client(b, "print(kc.load_file(sys.argv[1]))", uri)
        assert sha1_file(Path(path)) == sha1
        assert client(b, "print(kc.load_text(sys.argv[1]))", small_uri) == "small"


def test_upload_all_setting(tmp_path, s3):
    bucket = {"endpoint_url": s3.endpoint_url, "bucket": s3.create_bucket("kachery-all"), "region": "us-east-1"}
    sa = tmp_path / "a" / "storage"
    write_config(sa, bucket=bucket, upload_all=True)
    with running_node(sa, env=s3.env) as a:
        uri = client(a, "print(kc.store_text('everything goes up'))")
        sha1 = uri.split("/")[2]
        key = f"sha1/{sha1[:2]}/{sha1[2:4]}/{sha1[4:6]}/{sha1}"
        deadline = time.monotonic() + 30
        while True:
            objects = s3.client().list_objects_v2(Bucket=bucket["bucket"]).get("Contents", [])
            if any(o["Key"] == key for o in objects):
                break
            assert time.monotonic() < deadline, a.log()
            time.sleep(0.1)


def test_wrong_bucket_credentials_give_a_clear_error(tmp_path, s3):
    bucket = {"endpoint_url": s3.endpoint_url, "bucket": s3.create_bucket("kachery-creds"), "region": "us-east-1"}
    sb = tmp_path / "b" / "storage"
    write_config(sb, bucket=bucket)
    wrong = {**s3.env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    with running_node(sb, env=wrong) as b:
        out = run_cli("kachery-cat", "sha1://" + "cd" * 20 + "/x", env=client_env(b))
        assert out.returncode != 0
        err = out.stderr.decode()
        assert "refused" in err and "credentials" in err and "kachery-creds" in err, err
        assert "not-the-secret" not in err and "not-the-secret" not in b.log()
        # Uploading with wrong credentials says so too.
        uri = client(b, "print(kc.store_text('x'))")
        out = subprocess.run([sys.executable, "-c", "import sys, kachery_client as kc; kc.upload(sys.argv[1], sys.argv[2])",
                              uri, CHANNEL], capture_output=True, text=True, env={**os.environ, **client_env(b)})
        assert out.returncode != 0 and "credentials" in out.stderr


def test_mounted_read_on_b_of_a_file_only_a_has(tmp_path):
    sa, sb, port_a = source_and_reader(tmp_path, reader_node={"fetch_connections": 1})
    big = make_file(tmp_path / "big.bin", 200_000_000)                  # 10 chunks
    with running_node(sa, port=port_a) as a:
        small_uri = client(a, "print(kc.store_text('on A only'))")
        big_sha1 = store_on(a, big).split("/")[2]
        with mounted_node(tmp_path / "b", sb, tmp_path / "mnt") as (b, mnt):
            sha1 = small_uri.split("/")[2]
            assert (mnt / "sha1" / sha1 / "file.txt").read_text() == "on A only"
            f = mnt / "sha1" / big_sha1 / "big.bin"
            assert f.stat().st_size == 200_000_000
            # The last bytes first: their chunk jumps the queue; the read does not wait for the rest.
            with open(f, "rb") as fh:
                fh.seek(200_000_000 - 100)
                tail = fh.read(100)
                present, total = os.getxattr(f, "user.kachery.progress").decode().split("/")
            assert tail == big.read_bytes()[-100:]
            assert int(total) == 200_000_000 and int(present) < int(total)
            assert sha1_file(f) == sha1_file(big)                            # and then all of it
            assert os.getxattr(f, "user.kachery.progress") == b"200000000/200000000"


def test_corrupt_chunk_killed_source_and_resume(tmp_path, s3):
    """A 1 GiB file held by node A and a bucket. B1: one chunk corrupted on A is detected and
    fetched again from the bucket. B2: A is killed mid-transfer; B2 finishes from the bucket.
    B3: killed itself mid-transfer; restarted, it resumes from its verified chunks."""
    bucket = {"endpoint_url": s3.endpoint_url, "bucket": s3.create_bucket("kachery-big"), "region": "us-east-1"}
    size = BIG_MB * 1024 * 1024
    big = make_file(tmp_path / "big.bin", size)
    want = sha1_file(big)
    sa = tmp_path / "a" / "storage"
    port_a = free_port()
    b_dirs = [tmp_path / f"b{i}" / "storage" for i in (1, 2, 3)]
    write_config(sa, members=[node_id(d) for d in b_dirs], bucket=bucket)
    for d in b_dirs:
        write_config(d, peers=[f"http://127.0.0.1:{port_a}"], members=[node_id(sa)], bucket=bucket,
                     node={"fetch_connections": 2})
    a = start_node(sa, port=port_a, env=s3.env)
    try:
        uri = store_on(a, big, "--upload", CHANNEL)
        blob = sa / "sha1" / want[:2] / want[2:4] / want[4:6] / want
        with open(blob, "r+b") as f:                                     # corrupt chunk 3 at rest on A
            f.seek(3 * 20_000_000 + 12345)
            f.write(b"\0garbage\0")
        with running_node(b_dirs[0], env=s3.env) as b1:
            path = client(b1, "print(kc.load_file(sys.argv[1]))", uri)
            assert sha1_file(Path(path)) == want
            assert "served bad bytes for chunk 3" in b1.log()

        with running_node(b_dirs[1], env=s3.env) as b2:
            loader = subprocess.Popen([sys.executable, "-c", "import sys, kachery_client as kc; "
                                       "print(kc.load_file(sys.argv[1]))", uri],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env={**os.environ, **client_env(b2)})
            chunks = wait_for_chunks(b_dirs[1], want, 2, loader)
            a.stop(signal.SIGKILL)                                       # the source dies mid-transfer
            out, err = loader.communicate(timeout=300)
            assert loader.returncode == 0, err + b2.log()[-3000:]
            assert chunks < -(-size // 20_000_000)
            assert sha1_file(Path(out.strip())) == want

        b3 = start_node(b_dirs[2], env=s3.env)
        loader = subprocess.Popen([sys.executable, "-c", "import sys, kachery_client as kc; kc.load_file(sys.argv[1])",
                                   uri], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env={**os.environ, **client_env(b3)})
        try:
            wait_for_chunks(b_dirs[2], want, 3, loader)
            b3.stop(signal.SIGKILL)                                      # the fetching node dies
        finally:
            loader.kill()
            loader.wait()
        with running_node(b_dirs[2], env=s3.env) as b3:
            path = client(b3, "print(kc.load_file(sys.argv[1]))", uri)
            assert sha1_file(Path(path)) == want
            assert "resuming sha1://" + want in b3.log()
            assert not list((b_dirs[2] / "partial").iterdir())           # nothing left behind
    finally:
        a.stop(signal.SIGKILL)


def wait_for_chunks(storage: Path, sha1: str, n: int, loader: subprocess.Popen, deadline: float = 120) -> int:
    """Poll the fetcher's record of verified chunks until it lists at least n; return how many."""
    record = storage / "partial" / f"{sha1}.chunks"
    end = time.monotonic() + deadline
    while True:
        try:
            count = sum(1 for line in record.read_text().splitlines() if line.startswith("chunk "))
        except FileNotFoundError:
            count = 0
        if count >= n:
            return count
        assert loader.poll() is None, "the load ended before the transfer could be interrupted"
        assert time.monotonic() < end, "the transfer did not progress"
        time.sleep(0.005)


def test_cache_limit_evicts_only_what_others_hold(tmp_path):
    sa, sb, port_a = source_and_reader(tmp_path, reader_node={"cache_max_bytes": 20_000_000})
    files = [make_file(tmp_path / f"f{i}.bin", 8_000_000) for i in range(3)]
    with running_node(sa, port=port_a) as a, running_node(sb) as b:
        uris = [store_on(a, f) for f in files]
        only_here = store_on(b, make_file(tmp_path / "mine.bin", 8_000_000)).split("/")[2]
        for uri in uris:                                  # 8 MB local + 3 x 8 MB fetched > 20 MB
            client(b, "kc.load_file(sys.argv[1])", uri)
        blob = lambda sha1: sb / "sha1" / sha1[:2] / sha1[2:4] / sha1[4:6] / sha1  # noqa: E731
        fetched = [u.split("/")[2] for u in uris]
        deadline = time.monotonic() + 30
        while blob(fetched[0]).exists() or blob(fetched[1]).exists():  # least recently used first
            assert time.monotonic() < deadline, b.log()[-2000:]
            time.sleep(0.02)
        assert blob(only_here).exists() and blob(fetched[2]).exists()
        # Evicted content is fetched again on demand.
        assert sha1_file(Path(client(b, "print(kc.load_file(sys.argv[1]))", uris[0]))) == fetched[0]
