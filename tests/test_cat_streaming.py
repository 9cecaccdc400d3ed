"""`kachery-cat URI` of a remote file streams: bytes reach stdout as soon as the chunks covering them
are verified, not when the whole file has arrived, and the output is the file, byte for byte. A
source that dies mid-way ends the command with exit 5 after writing only a prefix of the file.

Real nodes: A holds the files and serves peers at SERVE_RATE; B fetches with one connection (the
chunks arrive in order), so the whole transfer lasts several times as long as its first chunk.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests

from kachery_client.store import Store
from kachery_client.uri import parse_file_uri
from tests.support.cli import ENTRY_POINTS
from tests.support.network import node_id, source_and_reader, write_config
from tests.support.nodeproc import NodeProc, client_env, running_node
from tests.support.storecheck import make_file
from tests.support.tasks import poll_until
from tests.test_network import store_on

SIZE = 70_000_000             # 4 chunks of 20 MB (the last one 10 MB), with a manifest
SERVE_RATE = 14_000_000       # bytes/s A serves: the transfer lasts about five seconds
DEADLINE = 60.0


@dataclass
class CatRun:
    """What one `kachery-cat` process wrote, and when."""
    out: bytearray = field(default_factory=bytearray)
    first_at: float | None = None         # seconds after start when the first bytes came
    ended_at: float = 0.0
    local_at_first: bool | None = None    # was the blob complete on B when the first bytes came?
    returncode: int | None = None
    stderr: str = ""


@contextlib.contextmanager
def slow_network(root: Path, size: int = SIZE, rate: int = SERVE_RATE,
                 **reader: object) -> Iterator[tuple[NodeProc, NodeProc, str, Path]]:
    """(A, B, URI of a `size`-byte file on A, that file)."""
    sa, sb, port_a = source_and_reader(root, reader_node={"fetch_connections": 1, **reader})
    write_config(sa, members=[node_id(sb)], node={"peer_serve_rate": rate})
    data = make_file(root / "data.bin", size)
    with running_node(sa, port=port_a) as a, running_node(sb) as b:
        yield a, b, store_on(a, data), data


def run_cat(b: NodeProc, uri: str, when_first: object = None) -> CatRun:
    """Run kachery-cat (stdout a pipe), read its output as it comes; `when_first()` is called once,
    right after the first bytes arrived."""
    code = f"import sys; from kachery_client.cli import {ENTRY_POINTS['kachery-cat']} as m; " \
           "sys.argv[0] = 'kachery-cat'; m()"
    run = CatRun()
    sha1 = parse_file_uri(uri).sha1
    t0 = time.monotonic()
    cat = subprocess.Popen([sys.executable, "-c", code, uri], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env={**os.environ, **client_env(b)})
    try:
        fd = cat.stdout.fileno()  # type: ignore[union-attr]
        while True:
            assert time.monotonic() - t0 < DEADLINE, f"kachery-cat ran over {DEADLINE} s"
            if not select.select([fd], [], [], 1.0)[0]:
                continue
            block = os.read(fd, 1 << 20)
            if not block:
                break
            if run.first_at is None:
                run.first_at = time.monotonic() - t0
                run.local_at_first = Store(b.storage_dir).locate(sha1) is not None
                if callable(when_first):
                    when_first()
            run.out += block
        run.ended_at = time.monotonic() - t0
        run.returncode = cat.wait(DEADLINE)
        run.stderr = cat.stderr.read().decode()  # type: ignore[union-attr]
    finally:
        if cat.poll() is None:
            cat.kill()
            cat.wait()
    return run


def test_first_bytes_come_before_the_transfer_ends_and_the_output_is_the_file(tmp_path):
    with slow_network(tmp_path) as (a, b, uri, data):
        sha1 = parse_file_uri(uri).sha1
        run = run_cat(b, uri)
        assert run.returncode == 0 and run.stderr == "", run.stderr
        assert hashlib.sha1(run.out).hexdigest() == sha1 and bytes(run.out) == data.read_bytes()
        assert run.first_at is not None
        # The first bytes came while the transfer still ran, well before its end (one chunk of
        # four is needed for them; all four for the end).
        assert run.local_at_first is False
        assert run.first_at < 0.6 * run.ended_at, (run.first_at, run.ended_at)
        assert Store(b.storage_dir).locate(sha1) is not None        # and the node keeps the file


def test_a_source_that_dies_mid_way_ends_cat_with_exit_5_and_a_prefix_only(tmp_path):
    with slow_network(tmp_path) as (a, b, uri, data):
        run = run_cat(b, uri, when_first=lambda: a.stop(signal.SIGKILL))
        expected = data.read_bytes()
        assert run.returncode == 5, (run.returncode, run.stderr)
        assert 0 < len(run.out) < SIZE and bytes(run.out) == expected[:len(run.out)]   # nothing wrong
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), run.stderr
        assert f"http://127.0.0.1:{a.port}" in lines[0], lines[0]
        # The node kept what it verified and serves nothing it did not.
        assert Store(b.storage_dir).locate(parse_file_uri(uri).sha1) is None
        assert not stats(b)["transfers"]


def test_ctrl_c_while_the_first_range_is_awaited_lets_the_transfer_go(tmp_path):
    """The node stops waiting for a client that hung up: the transfer is abandoned a grace period
    after Ctrl-C, long before the range that client waited for would have arrived."""
    grace, rate = 1, 2_000_000                 # the first 20 MB chunk would take ten seconds
    with slow_network(tmp_path, size=25_000_000, rate=rate, transfer_grace_seconds=grace) as (a, b, uri, _):
        sha1 = parse_file_uri(uri).sha1
        code = f"import sys; from kachery_client.cli import {ENTRY_POINTS['kachery-cat']} as m; " \
               "sys.argv[0] = 'kachery-cat'; m()"
        cat = subprocess.Popen([sys.executable, "-c", code, uri], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               env={**os.environ, **client_env(b)})
        try:
            held = poll_until(lambda: next((t for t in stats(b)["transfers"] if t["sha1"] == sha1
                                            and t["bytesTotal"] and t["waiters"] == 1), None), 30, "the transfer")
            assert held["bytesLoaded"] == 0
            cat.send_signal(signal.SIGINT)
            assert cat.wait(10) != 0 and cat.stdout.read() == b""  # type: ignore[union-attr]
        finally:
            if cat.poll() is None:
                cat.kill()
                cat.wait()
        t0 = time.monotonic()
        poll_until(lambda: not any(t["sha1"] == sha1 for t in stats(b)["transfers"]), grace + 4, "the stop")
        assert time.monotonic() - t0 < 20_000_000 / rate - 2 and "abandoned" in b.log()


def stats(node: NodeProc) -> dict:
    return requests.get(node.url + "/stats", headers=node.headers(), timeout=10).json()["stats"]
