"""A real small file system (a 24 MiB tmpfs mounted by the test) as storage, filled four ways:
an offline store, a store through the node, `cp` into the mount's incoming/, a fetch from a peer.

Each must give one clear error (LocalStorageError; one line and exit code 6 from the commands;
ENOSPC from cp), leave no temp or part file and no bad blob, and a small store (or fetch) must work
again right after (the failed write's space is freed).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import requests

from kachery_client.store import Store
from tests.support.cli import run_cli
from tests.support.mount import mounted_node, stored_link
from tests.support.network import source_and_reader
from tests.support.nodeproc import client_env, running_node
from tests.support.smallfs import free_bytes, small_fs
from tests.support.storecheck import bad_blobs, leftovers, make_file, sha1_of

BIG = 40 << 20              # more than the file system holds; two chunks (a manifest)
LOCAL_STORAGE_EXIT = 6      # kachery_client/exit_codes.py


def assert_one_clear_line(result: subprocess.CompletedProcess[bytes]) -> None:
    err = result.stderr.decode()
    assert result.returncode == LOCAL_STORAGE_EXIT, (result.returncode, err)
    assert err.count("\n") == 1 and "no space left" in err.lower() and "Traceback" not in err, err


def assert_clean(storage: Path, big_sha1: str) -> None:
    assert leftovers(storage) == []
    assert not Store(storage).has(big_sha1)
    assert bad_blobs(storage) == []


def test_offline_store(tmp_path):
    big = make_file(tmp_path / "big.bin", BIG)
    with small_fs(tmp_path / "small") as root:
        env = {"KACHERY_OFFLINE_STORAGE_DIR": str(root / "storage")}
        before = free_bytes(root)
        assert_one_clear_line(run_cli("kachery-store", str(big), env=env))
        assert_clean(root / "storage", sha1_of(big))
        assert free_bytes(root) >= before - (1 << 20)        # the temp file's space came back
        (tmp_path / "small.txt").write_text("fits")
        ok = run_cli("kachery-store", str(tmp_path / "small.txt"), env=env)
        assert ok.returncode == 0, ok.stderr
        assert Store(root / "storage").read_bytes(ok.stdout.decode().split("/")[2]) == b"fits"


def test_store_through_the_node(tmp_path):
    big = make_file(tmp_path / "big.bin", BIG)
    with small_fs(tmp_path / "small") as storage, running_node(storage) as node:
        # A client that cannot see the node's directory streams the bytes to POST /store.
        env = {**client_env(node), "KACHERY_STORAGE_DIR": str(tmp_path / "elsewhere"),
               "KACHERY_CLIENT_AUTH_CODE": node.auth_code()}
        assert_one_clear_line(run_cli("kachery-store", str(big), env=env))
        with open(big, "rb") as f:
            r = node.post("/store", data=f)
        assert r.status_code == 507 and r.json()["kind"] == "local-storage", r.text
        assert_clean(storage, sha1_of(big))
        (tmp_path / "small.txt").write_text("fits")
        ok = run_cli("kachery-store", str(tmp_path / "small.txt"), env=env)
        assert ok.returncode == 0, ok.stderr
        assert requests.get(node.url + "/probe", timeout=10).status_code == 200
        assert "Traceback" not in node.log()


def test_cp_into_incoming(tmp_path):
    big = make_file(tmp_path / "big.bin", BIG)
    with small_fs(tmp_path / "small") as storage, \
            mounted_node(tmp_path, storage=storage, mnt=tmp_path / "mnt") as (node, mnt):
        cp = subprocess.run(["cp", str(big), str(mnt / "incoming" / "big.bin")], capture_output=True)
        assert cp.returncode != 0 and b"No space left on device" in cp.stderr, cp.stderr
        assert not os.path.lexists(mnt / "incoming" / "big.bin")
        assert_clean(storage, sha1_of(big))
        (tmp_path / "small.txt").write_text("fits")
        subprocess.run(["cp", str(tmp_path / "small.txt"), str(mnt / "incoming" / "small.txt")], check=True)
        target = stored_link(mnt / "incoming" / "small.txt")
        assert (mnt / "incoming" / target).read_bytes() == b"fits"
        assert os.statvfs(mnt).f_blocks > 0                                   # statfs answers too


def test_fetch_from_a_peer(tmp_path):
    big = make_file(tmp_path / "big.bin", BIG)
    with small_fs(tmp_path / "b" / "storage") as sb:
        sa, sb2, port_a = source_and_reader(tmp_path)
        assert sb2 == sb
        uri = Store(sa).add_file(big)
        with running_node(sa, port=port_a) as a, running_node(sb) as b:
            result = run_cli("kachery-load", f"sha1://{uri.sha1}/big.bin?manifest={uri.manifest_sha1}",
                             env=client_env(b))
            assert_one_clear_line(result)
            assert_clean(sb, uri.sha1)
            # The peer was not blamed: no chunk failure was counted against it.
            assert re.search(r"chunk \d+ of sha1://\S+ from .* failed", b.log()) is None, b.log()[-3000:]
            (tmp_path / "small.txt").write_text("fits")
            small = run_cli("kachery-store", str(tmp_path / "small.txt"), env=client_env(a))
            assert small.returncode == 0, small.stderr
            got = run_cli("kachery-cat", small.stdout.decode().strip(), env=client_env(b))
            assert got.returncode == 0 and got.stdout == b"fits", got.stderr


def test_auth_rotation_on_a_full_disk(tmp_path):
    with small_fs(tmp_path / "small") as storage, \
            running_node(storage, args=("--auth-rotation-seconds", "0.2")) as node:
        filler = storage / "filler"
        with open(filler, "wb", buffering=0) as f, pytest.raises(OSError):
            while True:
                f.write(b"\0" * (1 << 20))
        deadline = time.monotonic() + 20
        while "rotating the client auth code failed" not in node.log():
            assert time.monotonic() < deadline, node.log()[-2000:]
            time.sleep(0.05)
        code = node.auth_code()
        assert node.post("/probe").status_code == 200            # the published code still works
        assert not list(storage.glob("client-auth.tmp.*"))
        filler.unlink()
        while node.auth_code() == code:                          # and rotation resumes
            assert time.monotonic() < deadline + 20, node.log()[-2000:]
            time.sleep(0.05)
        assert node.proc.poll() is None and node.post("/probe").status_code == 200
