"""A peer that accepts connections and never answers is a source error naming the peer, within
--fetch-timeout, never "not found": through the API (error frame), the CLI (one line) and the
mount (EIO, not doubled by the kernel's retries). Real node, real mount, a real silent listener."""

from __future__ import annotations

import errno
import io
import os
import time

import pytest

from kachery_client.node_http import iter_frames
from tests.support.cli import run_cli
from tests.support.mount import mounted_node
from tests.support.network import write_config
from tests.support.nodeproc import client_env
from tests.support.proxy import silent_listener

FETCH_TIMEOUT = 3.0
MARGIN = 2.5                     # process start-up, a loaded machine


def test_unresponsive_peer_is_a_source_error_naming_it(tmp_path):
    with silent_listener() as silent_port:
        peer = f"127.0.0.1:{silent_port}"
        write_config(tmp_path / "storage", peers=[f"http://{peer}"])
        with mounted_node(tmp_path, args=("--fetch-timeout", str(FETCH_TIMEOUT))) as (node, mnt):
            # API: an error frame of kind "source-failed" that names the peer
            t0 = time.monotonic()
            # Connection: close, else the idle keep-alive connection delays the node's stop by 10 s.
            r = node.post("/loadFile", json={"fileKey": {"sha1": "1" * 40}}, headers={"Connection": "close"})
            frames = list(iter_frames(io.BytesIO(r.content)))
            elapsed = time.monotonic() - t0
            last = frames[-1]
            assert last["type"] == "error" and last["kind"] == "source-failed", last
            assert peer in last["error"] and "did not answer" in last["error"], last
            assert "Unable to find" not in last["error"]
            assert FETCH_TIMEOUT - 0.5 <= elapsed <= FETCH_TIMEOUT + MARGIN, elapsed

            # CLI: one line naming the peer, exit 1, no "not found", no traceback
            t0 = time.monotonic()
            out = run_cli("kachery-cat", "sha1://" + "2" * 40 + "/x.txt", env=client_env(node))
            elapsed = time.monotonic() - t0
            err = out.stderr.decode()
            assert out.returncode == 5 and out.stdout == b""      # source-failed (kachery_client/exit_codes.py)
            assert len(err.strip().splitlines()) == 1, err
            assert peer in err and "did not answer" in err and "Unable to find" not in err, err
            assert err.count("sha1://" + "2" * 40) == 1, err          # the URI once
            assert elapsed <= FETCH_TIMEOUT + MARGIN + 1.5, elapsed      # + the client's start-up

            # Mount: EIO (not ENOENT) within --fetch-timeout; a kernel retry does not double it
            t0 = time.monotonic()
            with pytest.raises(OSError) as e:
                (mnt / "sha1" / ("3" * 40) / "x.txt").read_bytes()
            elapsed = time.monotonic() - t0
            assert e.value.errno == errno.EIO, e.value
            assert elapsed <= FETCH_TIMEOUT + MARGIN, elapsed
            assert peer in node.log() and "is not on this node nor on any" not in node.log()


def test_missing_everywhere_is_still_not_found(tmp_path):
    """The other side of the line: when every source answers "not here", it is not found, at once."""
    from tests.support.network import source_and_reader
    from tests.support.nodeproc import running_node
    sa, sb, port_a = source_and_reader(tmp_path)
    with running_node(sa, port=port_a), running_node(sb, args=("--fetch-timeout", "30")) as b:
        t0 = time.monotonic()
        out = run_cli("kachery-cat", "sha1://" + "4" * 40 + "/x", env=client_env(b))
        err = out.stderr.decode()
        assert out.returncode == 3 and time.monotonic() - t0 < 10, err      # not found
        assert "is not on this node nor on any of its 1 sources" in err, err
        assert len(err.strip().splitlines()) == 1 and err.count("sha1://" + "4" * 40) == 1, err


def test_a_slow_source_is_eio_within_fetch_timeout_not_twice(tmp_path):
    """A read waiting for a chunk that arrives too slowly fails once, after --fetch-timeout; the
    kernel's retry of the failed read is answered at once instead of waiting again."""
    from tests.support.network import node_id, source_and_reader
    from tests.support.nodeproc import running_node
    from tests.support.proxy import slow_proxy
    sa, sb, port_a = source_and_reader(tmp_path)
    data = os.urandom(1_000_000)
    with running_node(sa, port=port_a) as a, slow_proxy(port_a, 50_000) as proxy_port:
        (tmp_path / "f.bin").write_bytes(data)
        uri = run_cli("kachery-store", str(tmp_path / "f.bin"), env=client_env(a)).stdout.decode().strip()
        sha1 = uri.split("/")[2]
        write_config(sb, peers=[f"http://127.0.0.1:{proxy_port}"], members=[node_id(sa)])
        with mounted_node(tmp_path, storage=sb, args=("--fetch-timeout", "2")) as (b, mnt):
            path = mnt / "sha1" / sha1 / "f.bin"
            assert os.stat(path).st_size == len(data)          # the size arrives quickly
            t0 = time.monotonic()
            with pytest.raises(OSError) as e:
                path.read_bytes()
            elapsed = time.monotonic() - t0
            assert e.value.errno == errno.EIO
            assert 1.5 <= elapsed < 3.8, elapsed                # 2 s, not 4
            assert f"127.0.0.1:{proxy_port}" in b.log()         # the log names the slow source
