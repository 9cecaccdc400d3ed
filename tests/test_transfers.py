"""Long fetches, seen by a user: progress, ranges before the end, cancellation, stat without fetch.

Real nodes: A holds the files; B reaches A only through a proxy that answers at about RATE bytes
per second, fetches with one connection, and abandons a transfer nobody waits for after GRACE s.
"""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from kachery_client.node_http import iter_frames
from kachery_client.store import Store
from kachery_client.uri import parse_file_uri
from tests.support.cli import ENTRY_POINTS, run_cli
from tests.support.mount import mounted_node
from tests.support.network import node_id, source_and_reader, write_config
from tests.support.nodeproc import client_env, running_node
from tests.support.proxy import slow_proxy
from tests.support.tasks import poll_until

RATE = 8e6
GRACE = 1
CHUNK = 20_000_000
SIZE = 45_000_000            # 3 chunks, with a manifest


def _stats(node) -> dict:
    return requests.get(node.url + "/stats", headers={**node.headers(), "Connection": "close"},
                        timeout=10).json()["stats"]


def _store(node, path: Path) -> str:
    out = run_cli("kachery-store", "--quiet", str(path), env=client_env(node))
    assert out.returncode == 0, out.stderr
    return out.stdout.decode().strip()


def _cat_process(node, *args: str, **kwargs) -> subprocess.Popen:
    code = f"import sys; from kachery_client.cli import {ENTRY_POINTS['kachery-cat']} as m; " \
           "sys.argv[0] = 'kachery-cat'; m()"
    return subprocess.Popen([sys.executable, "-c", code, *args], env={**os.environ, **client_env(node)}, **kwargs)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfers")
    sa, sb, port_a = source_and_reader(root)
    files = {}
    for name in ("one", "two", "three"):
        files[name] = root / f"{name}.bin"
        files[name].write_bytes(os.urandom(SIZE))
    (root / "small.txt").write_bytes(os.urandom(1_000_000))
    with running_node(sa, port=port_a) as a, slow_proxy(port_a, RATE) as proxy_port:
        write_config(sb, peers=[f"http://127.0.0.1:{proxy_port}"], members=[node_id(sa)],
                     node={"fetch_connections": 1, "transfer_grace_seconds": GRACE})
        uris = {name: _store(a, path) for name, path in files.items()}
        uris["small"] = _store(a, root / "small.txt")
        with mounted_node(root, storage=sb, mnt=root / "mnt") as (b, mnt):
            yield {"a": a, "b": b, "mnt": mnt, "proxy": f"127.0.0.1:{proxy_port}", "uris": uris,
                   "files": files, "sb": sb}


def test_ctrl_c_of_kachery_cat_stops_the_transfer_and_keeps_its_chunks(net):
    b, uri = net["b"], net["uris"]["one"]
    sha1 = parse_file_uri(uri).sha1
    cat = _cat_process(b, "--quiet", uri, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        transfer = poll_until(lambda: next((t for t in _stats(b)["transfers"]
                                           if t["sha1"] == sha1 and t["bytesLoaded"] >= CHUNK), None),
                             30, "verified chunk")
        assert net["proxy"] in transfer["source"] and transfer["waiters"] >= 1
        # `kacheryfs status` shows it too
        status = subprocess.run([sys.executable, "-m", "kacheryfs", "status", "--port", str(b.port)],
                                capture_output=True, text=True, timeout=30)
        assert f"sha1://{sha1}" in status.stdout and net["proxy"] in status.stdout, status.stdout
        cat.send_signal(signal.SIGINT)
        cat.wait(10)
    finally:
        if cat.poll() is None:
            cat.kill()
    t0 = time.monotonic()
    poll_until(lambda: not any(t["sha1"] == sha1 for t in _stats(b)["transfers"]), GRACE + 5, "stop")
    assert time.monotonic() - t0 <= GRACE + 4
    part, record = net["sb"] / "partial" / f"{sha1}.part", net["sb"] / "partial" / f"{sha1}.chunks"
    assert part.exists() and "chunk 0\n" in record.read_text()          # verified chunks kept
    assert Store(net["sb"]).locate(sha1) is None
    assert "abandoned" in b.log()
    assert _stats(b)["partial"]["count"] >= 1


def _load_frames(node, sha1: str) -> list[dict]:
    r = requests.post(node.url + "/loadFile", json={"fileKey": {"sha1": sha1}},
                      headers={**node.headers(), "Connection": "close"}, stream=True, timeout=120)
    frames = list(iter_frames(r.raw))
    assert frames[-1]["type"] == "finished", frames[-1]
    return frames


def test_an_abandoned_transfer_resumes_from_its_chunks(net):
    b, uri = net["b"], net["uris"]["one"]
    sha1 = parse_file_uri(uri).sha1
    frames = _load_frames(b, sha1)
    assert re.search(rf"resuming sha1://{sha1} with [12] of 3 chunks", b.log())
    assert Path(frames[-1]["localFilePath"]).read_bytes() == net["files"]["one"].read_bytes()


def test_progress_frames_name_the_source_while_the_load_runs(net):
    b, uri = net["b"], net["uris"]["two"]
    frames = _load_frames(b, parse_file_uri(uri).sha1)
    middle = [f for f in frames if f["type"] == "progress" and 0 < f["bytesLoaded"] < SIZE]
    assert middle, frames
    for f in middle:
        assert f["bytesTotal"] == SIZE and net["proxy"] in f["source"] and f["bytesPerSecond"] > 0, f


def test_range_is_served_before_the_whole_file_arrives(net):
    b, uri = net["b"], net["uris"]["three"]
    sha1 = parse_file_uri(uri).sha1
    out = run_cli("kachery-cat", uri, "--start", "5", "--end", "105", env=client_env(b))
    assert out.returncode == 0, out.stderr
    assert Store(net["sb"]).locate(sha1) is None           # returned before the rest arrived
    assert out.stdout == net["files"]["three"].read_bytes()[5:105]


def test_progress_line_on_a_terminal_only(net):
    b, uri = net["b"], net["uris"]["three"]
    master, slave = pty.openpty()
    cat = _cat_process(b, uri, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    seen = b""
    try:
        while True:
            try:
                block = os.read(master, 4096)
            except OSError:                 # EIO: the other side closed
                break
            if not block:
                break
            seen += block
        assert cat.wait(60) == 0
    finally:
        os.close(master)
        if cat.poll() is None:
            cat.kill()
    text = seen.decode(errors="replace")
    assert "MB/s" in text and f"from peer http://{net['proxy']}" in text, text
    piped = run_cli("kachery-cat", uri, env=client_env(b))              # now local: and piped, silent
    assert piped.returncode == 0 and piped.stderr == b""
    # Fetched for a URI with a name: the reader's mount lists that name, not just the hash.
    furi = parse_file_uri(uri)
    assert os.listdir(net["mnt"] / "sha1" / furi.sha1) == [furi.name]


def test_stat_of_a_remote_hash_fetches_nothing(net):
    b, mnt, uri = net["b"], net["mnt"], net["uris"]["small"]
    furi = parse_file_uri(uri)
    path = mnt / "sha1" / furi.sha1 / furi.name
    assert os.stat(path).st_size == 1_000_000
    subprocess.run(["ls", "-l", str(path.parent)], check=True, capture_output=True)
    time.sleep(0.3)                                        # a fetch, if started, would show by now
    assert not any(t["sha1"] == furi.sha1 for t in _stats(b)["transfers"])
    assert not (net["sb"] / "partial" / f"{furi.sha1}.part").exists()
    assert Store(net["sb"]).locate(furi.sha1) is None
    assert "/peer/blob" not in net["a"].log()
    # Opening fetches; then the hash's directory lists the name it was asked under.
    assert path.read_bytes() == (net["files"]["one"].parent / "small.txt").read_bytes()
    assert furi.name in os.listdir(path.parent)
