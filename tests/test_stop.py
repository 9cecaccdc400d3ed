"""Stopping a real node (SIGTERM) with clients connected: idle keep-alive connections do not hold
it, a download in flight gets the grace (daemon.GRACE_SECONDS) and is then cut, a second signal
cuts at once; a client that goes away mid-stream leaves no ERROR in the node's log."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from kacheryfs.daemon import GRACE_SECONDS
from tests.support.mount import mounted_node
from tests.support.nodeproc import NodeProc, running_node, start_node
from tests.support.storecheck import make_file

BIG = 64 << 20          # far more than the socket buffers of a client that stops reading
PROMPT = 3.0            # a stop with nothing in flight: well under this


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> tuple[Path, str]:
    path = make_file(tmp_path_factory.mktemp("stop") / "big.bin", BIG)
    return path, hashlib.sha1(path.read_bytes()).hexdigest()


def store(node: NodeProc, path: Path) -> str:
    with open(path, "rb") as f:
        out = node.post("/store", data=f).json()
    assert out["success"], out
    return out["sha1"]


def idle_keep_alive(node: NodeProc, path: str = "/probe") -> http.client.HTTPConnection:
    """A connection whose request is finished and answered, kept open for the next one."""
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=30)
    conn.request("GET", path)
    r = conn.getresponse()
    assert r.status == 200 and not r.will_close
    r.read()
    return conn


def stalled_download(node: NodeProc, request: bytes) -> socket.socket:
    """A download in flight whose client read the headers and then stops reading."""
    s = socket.create_connection(("127.0.0.1", node.port), timeout=30)
    s.sendall(request)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        assert chunk, "the node closed the download before its headers"
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    return s


def gateway_get(sha1: str) -> bytes:
    return f"GET /sha1/{sha1}/big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def download_file_data(node: NodeProc, sha1: str) -> bytes:
    body = json.dumps({"fileKey": {"sha1": sha1}}).encode()
    return (f"POST /downloadFileData HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"KACHERY-CLIENT-AUTH-CODE: {node.auth_code()}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def sigterm_and_time_exit(node: NodeProc, limit: float) -> float:
    t0 = time.monotonic()
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(timeout=limit) == 0, node.log()
    return time.monotonic() - t0


def still_running_for(node: NodeProc, seconds: float) -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        node.proc.wait(timeout=seconds)


def test_idle_keep_alive_connections_do_not_hold_a_stop(tmp_path):
    # Kept alive after a streamed answer (gateway, /downloadFileData, /loadFile): these held a
    # stop for the whole grace before (http/streaming.py), a plain JSON answer never did.
    with running_node(tmp_path / "storage") as node:
        sha1 = node.post("/store", data=b"streamed to a kept connection").json()["sha1"]
        conns = [idle_keep_alive(node), idle_keep_alive(node, f"/sha1/{sha1}/a.txt")]
        session = requests.Session()                        # the client's way (node_http.py)
        for path, body in (("/downloadFileData", {"fileKey": {"sha1": sha1}}), ("/loadFile", {"uri": f"sha1://{sha1}"})):
            r = session.post(node.url + path, json=body, headers=node.headers(), timeout=30)
            assert r.status_code == 200 and r.content
        assert sigterm_and_time_exit(node, PROMPT) < PROMPT
        for conn in conns:
            conn.close()
        session.close()
    assert "cut" not in node.log()                          # nothing was in flight


def test_a_task_long_poll_does_not_hold_a_stop(tmp_path):
    """A requester waits in /task/requestTask for a task a backend holds (up to a minute here): at
    a stop its long poll is answered with the task's status, like a feed's long poll. (A backend's
    /task/registerTaskFunctions poll ends the same way.)"""
    fn = [{"channelName": "local", "taskFunctionId": "f", "taskFunctionType": "query"}]
    with running_node(tmp_path / "storage") as node:
        def backend_poll() -> list:
            out = node.post("/task/registerTaskFunctions", json={"taskFunctions": fn, "timeoutMsec": 0}).json()
            return out["requestedTasks"]
        assert backend_poll() == []                        # a live backend session for f
        answers: list[requests.Response] = []
        requester = threading.Thread(target=lambda: answers.append(node.post("/task/requestTask", json={
            "channelName": "local", "taskFunctionId": "f", "taskFunctionType": "query", "taskKwargs": {},
            "timeoutMsec": 60_000})))
        requester.start()
        deadline = time.monotonic() + 10
        while not (delivered := backend_poll()):           # the request is in; its requester waits
            assert time.monotonic() < deadline and requester.is_alive(), answers
            time.sleep(0.02)
        assert requester.is_alive()
        assert sigterm_and_time_exit(node, PROMPT) < PROMPT
        requester.join(timeout=10)
        assert answers and answers[0].status_code == 200, answers
        assert answers[0].json()["taskId"] == delivered[0]["taskId"] and answers[0].json()["status"] == "queued"


def test_a_download_in_flight_may_finish_within_the_grace(tmp_path, big):
    path, _ = big
    with running_node(tmp_path / "storage") as node:
        sha1 = store(node, path)
        conn = idle_keep_alive(node)
        s = stalled_download(node, gateway_get(sha1))
        t0 = time.monotonic()
        node.proc.send_signal(signal.SIGTERM)
        still_running_for(node, 1.5)                        # idle ones alone stop in ~0.1 s
        h, got = hashlib.sha1(), 0                          # the client reads on: all of it arrives
        while True:
            data = s.recv(1 << 20)
            if not data:
                break
            h.update(data)
            got += len(data)
        assert got == BIG and h.hexdigest() == sha1         # then the node closed the connection
        assert node.proc.wait(timeout=PROMPT) == 0, node.log()
        assert time.monotonic() - t0 < GRACE_SECONDS - 2    # at the download's end, not the grace's
        s.close()
        conn.close()
    assert "cut" not in node.log()


def test_a_stalled_download_is_cut_when_the_grace_ends(tmp_path, big):
    path, _ = big
    with running_node(tmp_path / "storage") as node:
        sha1 = store(node, path)
        s = stalled_download(node, download_file_data(node, sha1))       # kachery-cat's route
        took = sigterm_and_time_exit(node, GRACE_SECONDS + 5)
        assert GRACE_SECONDS - 0.5 < took < GRACE_SECONDS + 5
        assert f"cut 1 connection(s) still open after {GRACE_SECONDS} s" in node.log()
        s.close()


def test_a_second_sigterm_cuts_at_once(tmp_path, big):
    path, _ = big
    with running_node(tmp_path / "storage") as node:
        sha1 = store(node, path)
        s = stalled_download(node, gateway_get(sha1))
        node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while "received SIGTERM" not in node.log():         # the first one is taken
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert sigterm_and_time_exit(node, PROMPT) < PROMPT
        assert "cut 1 connection(s) still open on a second signal" in node.log()
        s.close()


def test_with_the_mount_up_an_idle_client_does_not_hold_the_stop(tmp_path):
    with mounted_node(tmp_path) as (node, mnt):
        sha1 = node.post("/store", data=b"kept").json()["sha1"]
        conn = idle_keep_alive(node, f"/sha1/{sha1}/kept.txt")
        assert sigterm_and_time_exit(node, PROMPT) < PROMPT
        assert not os.path.ismount(mnt)                     # unmounted by the node, not left behind
        assert "unmounted" in node.log()
        conn.close()
    # the storage lock is free: a node starts on the same directory
    again = start_node(tmp_path / "storage")
    again.stop()


def test_clients_going_away_mid_stream_log_no_error(tmp_path, big):
    path, _ = big
    with running_node(tmp_path / "storage") as node:
        sha1 = store(node, path)
        for request in (gateway_get(sha1), download_file_data(node, sha1)):
            gone = stalled_download(node, request)
            gone.close()                                               # FIN
            reset = stalled_download(node, request)
            reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            reset.close()                                              # RST
        # the node keeps serving: a whole download after the abandoned ones
        r = requests.get(f"{node.url}/sha1/{sha1}/big.bin", timeout=60)
        assert r.status_code == 200 and hashlib.sha1(r.content).hexdigest() == sha1
        assert sigterm_and_time_exit(node, PROMPT) < PROMPT           # nothing left in flight
    log = node.log()
    assert " ERROR " not in log and "Traceback" not in log, log
