"""The HTTP gateway (GET/HEAD /sha1/<hash>/<name>) on real nodes: exact bytes, ranges, caching
headers, errors, and content streamed from a peer while it arrives."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.support.network import node_id, source_and_reader, write_config
from tests.support.nodeproc import NodeProc, running_node
from tests.support.storecheck import make_file

FIFTY_MB = 50_000_000


def store(node: NodeProc, path: Path, name: str) -> dict:
    with open(path, "rb") as f:
        out = node.post("/store", data=f, headers={"X-Kachery-Name": name}).json()
    assert out["success"], out
    return out


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """One node without sources, holding a small text and a 50 MB file."""
    root = tmp_path_factory.mktemp("gw")
    big = make_file(root / "big.bin", FIFTY_MB)
    (root / "notes.txt").write_bytes(b"hello, gateway\n")
    with running_node(root / "storage") as node:
        yield node, store(node, root / "notes.txt", "notes.txt"), store(node, big, "big.bin"), big


def test_exact_bytes_and_headers(local):
    node, text, _, _ = local
    url = f"{node.url}/sha1/{text['sha1']}/notes.txt"
    r = requests.get(url, timeout=30)                       # no auth code: loopback
    assert r.status_code == 200 and r.content == b"hello, gateway\n"
    assert r.headers["content-type"].startswith("text/plain")
    assert r.headers["etag"] == f'"{text["sha1"]}"'
    assert "public" in r.headers["cache-control"] and "immutable" in r.headers["cache-control"]
    assert r.headers["accept-ranges"] == "bytes" and r.headers["content-length"] == "15"
    # Any valid name works, as in a URI; the type follows it.
    r = requests.get(f"{node.url}/sha1/{text['sha1']}/dir/plot.png", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    head = requests.head(url, timeout=30)
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == "15"
    assert requests.get(url, headers={"If-None-Match": r.headers["etag"]}, timeout=30).status_code == 304


def test_range_of_a_50_mb_content(local):
    node, _, big, path = local
    url = f"{node.url}/sha1/{big['sha1']}/big.bin"
    with open(path, "rb") as f:
        f.seek(1000)
        expected = f.read(1000)
        f.seek(FIFTY_MB - 10)
        tail = f.read()
    r = requests.get(url, headers={"Range": "bytes=1000-1999"}, timeout=30)
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes 1000-1999/{FIFTY_MB}"
    assert r.headers["content-length"] == "1000" and r.content == expected
    r = requests.get(url, headers={"Range": "bytes=-10"}, timeout=30)
    assert r.status_code == 206 and r.content == tail
    r = requests.get(url, headers={"Range": f"bytes={FIFTY_MB}-"}, timeout=30)
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{FIFTY_MB}"
    # The whole, with the URI's ?manifest= accepted.
    r = requests.get(url + f"?manifest={big['manifestSha1']}", timeout=60)
    assert r.status_code == 200 and hashlib.sha1(r.content).hexdigest() == big["sha1"]


def test_unknown_hash_and_bad_requests(local):
    node = local[0]
    assert requests.get(f"{node.url}/sha1/{'ab' * 20}/x.txt", timeout=30).status_code == 404
    assert requests.head(f"{node.url}/sha1/{'ab' * 20}/x.txt", timeout=30).status_code == 404
    assert requests.get(f"{node.url}/sha1/not-a-hash/x.txt", timeout=30).status_code == 400
    assert requests.get(f"{node.url}/sha1/{local[1]['sha1']}/a/../../b", timeout=30).status_code in (400, 404)
    assert requests.get(f"{node.url}/sha1/{local[1]['sha1']}/a%5Cb", timeout=30).status_code == 400
    # Nothing that changes state is open: POST to the gateway needs the client auth code.
    assert requests.post(f"{node.url}/sha1/{local[1]['sha1']}/x", timeout=30).status_code == 403


def test_streams_content_only_a_peer_holds_while_it_arrives(tmp_path):
    # B fetches one chunk at a time; A serves peers at 10 MB/s: the first 20 MB chunk is verified
    # after about two seconds, the rest of the 45 MB about 2.5 s later.
    sa, sb, port_a = source_and_reader(tmp_path, reader_node={"fetch_connections": 1})
    write_config(sa, members=[node_id(sb)], node={"peer_serve_rate": 10_000_000})
    big = make_file(tmp_path / "big.bin", 45_000_000)
    with running_node(sa, port=port_a) as a, running_node(sb) as b:
        stored = store(a, big, "big.bin")
        url = f"{b.url}/sha1/{stored['sha1']}/big.bin"
        assert requests.get(f"{b.url}/sha1/{'cd' * 20}/x", timeout=60).status_code == 404   # nobody has it
        with requests.get(url, stream=True, timeout=60) as r:
            assert r.status_code == 200 and r.headers["content-length"] == "45000000"
            body = r.iter_content(1 << 20)
            h = hashlib.sha1(first := next(body))
            # The first megabyte is here while the transfer still runs: served from verified chunks.
            status = requests.get(b.url + "/ui/status.json", timeout=30).json()
            running = [t for t in status["transfers"] if t["sha1"] == stored["sha1"]]
            assert running and running[0]["bytesPresent"] < 45_000_000, status["transfers"]
            watch = subprocess.run([sys.executable, "-m", "kacheryfs", "status", "--watch", "--count", "1",
                                    "--storage-dir", str(sb), "--port", str(b.port)],
                                   capture_output=True, text=True, timeout=30)
            assert watch.returncode == 0, watch.stderr
            assert "Transfers in progress:" in watch.stdout and stored["sha1"][:12] in watch.stdout
            assert f"up   peer http://127.0.0.1:{port_a} (channel testchan)" in watch.stdout, watch.stdout
            peer = status["channels"][0]["peers"][0]
            assert peer["reachable"] is True and peer["latencySeconds"] < 2, peer
            got = len(first)
            for block in body:
                h.update(block)
                got += len(block)
        assert got == 45_000_000 and h.hexdigest() == stored["sha1"]
        # Now local on B: a range straight from its store.
        r = requests.get(url, headers={"Range": "bytes=1000-1999"}, timeout=30)
        assert r.status_code == 206 and r.content == big.read_bytes()[1000:2000]
        deadline = time.monotonic() + 10
        while requests.get(b.url + "/ui/status.json", timeout=30).json()["transfers"]:
            assert time.monotonic() < deadline, "the finished transfer is still listed"
            time.sleep(0.05)



def test_a_transfer_that_fails_midway_ends_the_body_early_never_with_wrong_bytes(tmp_path):
    sa, sb, port_a = source_and_reader(tmp_path, reader_node={"fetch_connections": 1})
    write_config(sa, members=[node_id(sb)], node={"peer_serve_rate": 10_000_000})
    big = make_file(tmp_path / "big.bin", 45_000_000)
    with running_node(sb) as b:
        with running_node(sa, port=port_a) as a:
            stored = store(a, big, "big.bin")
            r = requests.get(f"{b.url}/sha1/{stored['sha1']}/big.bin", stream=True, timeout=60)
            assert r.status_code == 200
            received = bytearray(next(r.iter_content(1 << 20)))
        # A is gone before the rest arrived: B's transfer fails; the body stops short.
        with pytest.raises(requests.RequestException):
            for block in r.iter_content(1 << 20):
                received += block
        r.close()
        assert 0 < len(received) < 45_000_000
        assert bytes(received) == big.read_bytes()[:len(received)]
        status = requests.get(b.url + "/ui/status.json", timeout=30).json()
        assert not status["transfers"] and any("sha1://" + stored["sha1"] in e["message"]
                                               for e in status["recentErrors"]), status["recentErrors"]
    # the route's one warning line, not an h11 "Too little data for declared Content-Length" traceback
    assert " ERROR " not in b.log() and "Traceback" not in b.log(), b.log()
