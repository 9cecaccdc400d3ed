"""A real node process, driven over raw HTTP: docs/PROTOCOL.md section 13, items 1-20 and 34."""

import concurrent.futures
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from kachery_client.canonical_json import canonical_sha1
from kachery_client.node_http import iter_frames
from tests.support.nodeproc import free_port, running_node, start_node

HELLO = "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with running_node(tmp_path_factory.mktemp("n") / "storage") as n:
        yield n


def test_probe_identity_and_auth_file(node):
    r = requests.get(node.url + "/probe")
    assert r.status_code == 200
    info = r.json()
    assert len(info["nodeId"]) == 64 and int(info["nodeId"], 16) >= 0 and info["nodeId"] == info["nodeId"].lower()
    assert (node.storage_dir / "kachery-node-id").read_text() == info["nodeId"]
    code = node.auth_code()
    assert len(code) == 12 and code.isalpha() and "\n" not in code
    assert (node.storage_dir / "client-auth").stat().st_mode & 0o007 == 0
    assert (node.storage_dir / "private.pem").stat().st_mode & 0o777 == 0o600


def test_auth_required_everywhere_but_get_probe(node):
    r = requests.post(node.url + "/mutable/get", json={"key": "k"})
    assert r.status_code == 403 and "Missing client auth code" in r.text
    r = requests.post(node.url + "/mutable/get", json={"key": "k"}, headers={"KACHERY-CLIENT-AUTH-CODE": "abcdefghijkl"})
    assert r.status_code == 403 and "Incorrect" in r.text
    assert requests.post(node.url + "/probe").status_code == 403
    assert node.post("/probe").status_code == 200
    assert node.post("/mutable/get", json={"key": "k"}).status_code == 200
    assert "abcdefghijkl" not in node.log()


def test_store_and_load_file_frames(node):
    r = node.post("/store", data=b"hello")
    assert r.json() == {"success": True, "error": None, "sha1": HELLO, "manifestSha1": None}
    blob = node.storage_dir / "sha1/aa/f4/c6" / HELLO
    assert blob.read_bytes() == b"hello" and blob.stat().st_mode & 0o777 == 0o644
    r = node.post("/loadFile", json={"fileKey": {"sha1": HELLO}, "channelName": "ch1"})
    first = b'{"type":"progress","bytesLoaded":0,"bytesTotal":0}'
    last = json.dumps({"type": "finished", "localFilePath": str(blob)}, separators=(",", ":")).encode()
    assert r.content == b"%d#%s%d#%s" % (len(first), first, len(last), last)
    r = node.post("/loadFile", json={"fileKey": {"sha1": HELLO}, "channelName": "x"})
    frame = list(iter_frames(io.BytesIO(r.content)))[-1]      # the original's frame, plus our "kind" (PROTOCOL.md section 15)
    assert frame["type"] == "error" and frame["error"] == "Invalid api load file request"
    assert frame["kind"] == "invalid" and "channel name" in frame["detail"]
    r = node.post("/loadFile", json={"fileKey": {"sha1": "1" * 40}})
    frames = list(iter_frames(io.BytesIO(r.content)))
    assert frames[-1]["type"] == "error" and frames[-1]["error"] == "Unable to find file"   # what 1.2.0 shows
    assert frames[-1]["kind"] == "not-found" and "no sources" in frames[-1]["detail"]       # ours: the reason
    assert node.post("/loadFile", data=b"not json").status_code == 400


def test_store_edge_cases(node):
    r = node.post("/store", data=b'{"a":1}', headers={"Content-Type": "application/json"})
    assert r.json()["sha1"] == hashlib.sha1(b'{"a":1}').hexdigest()
    assert node.post("/store", data=b"").json()["sha1"] == "da39a3ee5e6b4b0d3255bfef95601890afd80709"
    # chunked upload without Content-Length -> 4xx
    r = node.post("/store", data=iter([b"abc"]))
    assert 400 <= r.status_code < 500
    exact = os.urandom(20_000_000)
    assert node.post("/store", data=exact).json()["manifestSha1"] is None
    r = node.post("/store", data=exact + b"!").json()
    manifest = (node.storage_dir / "sha1" / r["manifestSha1"][:2] / r["manifestSha1"][2:4] /
                r["manifestSha1"][4:6] / r["manifestSha1"])
    assert json.loads(manifest.read_bytes())["sha1"] == hashlib.sha1(exact + b"!").hexdigest()


def test_download_file_data_ranges(node):
    node.post("/store", data=b"hello")
    assert node.post("/downloadFileData", json={"fileKey": {"sha1": HELLO}, "startByte": 1, "endByte": 3}).content == b"el"
    assert node.post("/downloadFileData", json={"fileKey": {"sha1": HELLO}}).content == b"hello"
    assert node.post("/downloadFileData", json={"fileKey": {"sha1": HELLO}, "startByte": 3, "endByte": 9}).status_code == 400
    assert node.post("/downloadFileData", json={"fileKey": {"sha1": "2" * 40}}).status_code == 404


def test_mutables_semantics(node):
    def call(path, body):
        return node.post(path, json=body).json()
    assert call("/mutable/set", {"key": "k", "value": "v"}) == {"success": True}
    assert call("/mutable/get", {"key": "k"}) == {"success": True, "found": True, "value": "v"}
    assert call("/mutable/set", {"key": "k", "value": "w", "update": False}) == {"success": False}
    assert call("/mutable/get", {"key": "k"})["value"] == "v"
    assert call("/mutable/delete", {"key": "k"}) == {"success": True}
    assert call("/mutable/delete", {"key": "k"}) == {"success": False}
    assert call("/mutable/get", {"key": "k"}) == {"success": True, "found": False, "value": ""}
    assert call("/mutable/set", {"key": {"b": 1, "a": 2}, "value": [1, 2]})["success"]
    assert call("/mutable/get", {"key": {"a": 2, "b": 1}})["value"] == [1, 2]
    big = "x" * 5_000_000
    assert call("/mutable/set", {"key": "big", "value": big})["success"]
    assert call("/mutable/get", {"key": "big"})["value"] == big
    import sqlite3
    db = sqlite3.connect(node.storage_dir / "mutables.db")
    assert db.execute("SELECT key FROM mutables WHERE sha1 = ?", (canonical_sha1({"a": 2, "b": 1}),)).fetchone()


def test_malformed_requests_get_400_not_500(node):
    for path, body in [("/mutable/set", {"key": None, "value": 1}), ("/mutable/set", {"key": "k", "value": 1, "update": "no"}),
                       ("/linkFile", {"localFilePath": "relative/path", "size": 1, "mtime": 1.0}),
                       ("/linkFile", {"localFilePath": "/nonexistent", "size": 1, "mtime": 1.0}),
                       ("/linkFile", {"localFilePath": "/tmp", "size": 1, "mtime": 1.0}),
                       ("/linkFile", {"size": 1}), ("/kacheryfs/added", {"sha1": "zz"})]:
        r = node.post(path, json=body)
        assert r.status_code == 400, (path, r.status_code, r.text)
        assert r.json()["success"] is False and "Traceback" not in r.text
    r = node.post("/mutable/get", data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    r = node.post("/store", data=b"x", headers={"X-Kachery-Name": "../evil"})
    assert r.status_code == 400
    fid = node.post("/feed/createFeed", json={}).json()["feedId"]          # its key: never served
    assert node.post("/mutable/get", json={"key": {"type": "feedConfig", "feedId": fid}}).status_code == 400
    assert node.post("/mutable/get", json={"key": {"type": "feedConfig", "feedId": "ab" * 32}}).status_code == 400


def test_link_file_mtime_tolerance(node, tmp_path):
    p = tmp_path / "linked.bin"
    p.write_bytes(b"linked!")
    st = os.stat(p)
    r = node.post("/linkFile", json={"localFilePath": str(p), "size": st.st_size, "mtime": st.st_mtime + 0.01})
    assert r.status_code != 200 or not r.json()["success"]
    r = node.post("/linkFile", json={"localFilePath": str(p), "size": st.st_size, "mtime": st.st_mtime + 0.001})
    assert r.json()["success"]
    link = json.loads((node.storage_dir / "sha1" / r.json()["sha1"][:2] / r.json()["sha1"][2:4] /
                       r.json()["sha1"][4:6] / (r.json()["sha1"] + ".link")).read_text())
    assert link["stat"]["mtime"] == st.st_mtime + 0.001         # stored verbatim


def test_fifty_concurrent_clients(node):
    def worker(i):
        text = f"object {i % 10}".encode()          # identical and distinct contents
        r = node.post("/store", data=text).json()
        assert r["sha1"] == hashlib.sha1(text).hexdigest()
        assert node.post("/downloadFileData", json={"fileKey": {"sha1": r["sha1"]}}).content == text
        return True
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        assert all(pool.map(worker, range(200)))
    assert os.listdir(node.storage_dir / "tmp") == []


def test_stats_and_status_command(node):
    r = requests.get(node.url + "/stats", headers=node.headers()).json()
    assert r["success"] and r["stats"]["nodeId"] == (node.storage_dir / "kachery-node-id").read_text()
    out = subprocess.run([sys.executable, "-m", "kacheryfs", "status", "--storage-dir", str(node.storage_dir),
                          "--port", str(node.port)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "Node ID:" in out.stdout and "Blobs:" in out.stdout and "Requests served:" in out.stdout


def test_loopback_only_by_default(node):
    addrs = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)} - {"127.0.0.1"}
    for addr in addrs:
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((addr, node.port)) != 0


def test_second_node_on_same_storage_refuses(node):
    out = subprocess.run([sys.executable, "-m", "kacheryfs", "run", "--no-mount", "--storage-dir",
                          str(node.storage_dir), "--port", str(free_port())],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "already running" in out.stderr and "Traceback" not in out.stderr


def test_restart_persistence_and_cached_code(tmp_path):
    storage = tmp_path / "storage"
    with running_node(storage) as n:
        node_id = (storage / "kachery-node-id").read_text()
        code = n.auth_code()
        n.post("/mutable/set", json={"key": "persist", "value": [1, 2, 3]})
        n.post("/store", data=b"hello")
        port = n.port
    with running_node(storage, port=port) as n:
        assert (storage / "kachery-node-id").read_text() == node_id
        r = requests.post(n.url + "/mutable/get", json={"key": "persist"}, headers={"KACHERY-CLIENT-AUTH-CODE": code})
        assert r.json()["value"] == [1, 2, 3]                   # a code cached across the restart still works
        assert n.post("/downloadFileData", json={"fileKey": {"sha1": HELLO}}).content == b"hello"


def test_auth_rotation_keeps_previous_code_and_file(tmp_path):
    with running_node(tmp_path / "s", args=("--auth-rotation-seconds", "0.3")) as n:
        codes = [n.auth_code()]
        deadline = time.monotonic() + 20
        while len(codes) < 3:
            assert time.monotonic() < deadline
            code = (n.storage_dir / "client-auth").read_text()     # the file exists at every instant
            assert len(code) == 12
            if code != codes[-1]:
                codes.append(code)
                ok = requests.post(n.url + "/probe", headers={"KACHERY-CLIENT-AUTH-CODE": codes[-2]})
                assert ok.status_code == 200 or (n.storage_dir / "client-auth").read_text() != code
            time.sleep(0.001)
        old = requests.post(n.url + "/probe", headers={"KACHERY-CLIENT-AUTH-CODE": codes[0]})
        assert old.status_code == 403


def test_sigkill_during_store_leaves_store_consistent(tmp_path):
    storage = tmp_path / "s"
    n = start_node(storage)
    try:
        sock = socket.create_connection(("127.0.0.1", n.port))
        size = 200 * 1024 * 1024
        sock.sendall(b"POST /store HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nKACHERY-CLIENT-AUTH-CODE: %s\r\n\r\n"
                     % (size, n.auth_code().encode()))
        sent = 0
        block = os.urandom(1 << 20)
        tmp = storage / "tmp"
        deadline = time.monotonic() + 30
        while not (tmp.exists() and any((tmp / f).stat().st_size > 0 for f in os.listdir(tmp))):
            sock.sendall(block)
            sent += len(block)
            assert sent < size and time.monotonic() < deadline
        n.stop(signal.SIGKILL)
        sock.close()
    finally:
        n.stop()
    assert not [p for p in (storage / "sha1").rglob("*") if p.is_file()] if (storage / "sha1").exists() else True
    with running_node(storage) as n2:
        assert os.listdir(storage / "tmp") == []
        assert n2.post("/store", data=b"after").json()["success"]


@pytest.mark.parametrize("finish", [True, False], ids=["finished", "abandoned"])
def test_sigterm_during_a_store(tmp_path, finish):
    """SIGTERM while a /store body is arriving: the store finishes if the client completes it
    within the drain time; else it is discarded. Either way the node exits 0 and leaves no temp file."""
    storage = tmp_path / "s"
    n = start_node(storage)
    try:
        sock = socket.create_connection(("127.0.0.1", n.port))
        data = os.urandom(20 * 1024 * 1024)
        sock.sendall(b"POST /store HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nKACHERY-CLIENT-AUTH-CODE: %s\r\n\r\n"
                     % (len(data), n.auth_code().encode()))
        sock.sendall(data[:10 << 20])
        tmp = storage / "tmp"
        deadline = time.monotonic() + 30
        while not (tmp.exists() and any((tmp / f).stat().st_size > 0 for f in os.listdir(tmp))):
            assert time.monotonic() < deadline, "the node never started writing"
            time.sleep(0.01)
        n.proc.send_signal(signal.SIGTERM)
        if finish:
            sock.sendall(data[10 << 20:])
            answer = b""
            while b"}" not in answer:
                chunk = sock.recv(65536)
                assert chunk, "the node closed the connection before answering"
                answer += chunk
            assert b'"success":true' in answer and hashlib.sha1(data).hexdigest().encode() in answer
        assert n.proc.wait(timeout=30) == 0                     # drained (abandoned: after the grace time)
        sock.close()
    finally:
        n.stop()
    assert os.listdir(storage / "tmp") == []
    sha1 = hashlib.sha1(data).hexdigest()
    assert (storage / "sha1" / sha1[:2] / sha1[2:4] / sha1[4:6] / sha1).exists() == finish


def test_halt_stops_the_node(tmp_path):
    n = start_node(tmp_path / "s")
    try:
        assert requests.get(n.url + "/halt").status_code == 403
        assert requests.get(n.url + "/halt", headers=n.headers()).json() == {"success": True}
        assert n.proc.wait(timeout=20) == 0
    finally:
        n.stop()
