"""Our client against a real node: sharing its storage dir, and as if on another machine."""

import hashlib
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

import kachery_client as kc
from kachery_client import api
from kachery_client.errors import AuthError, NotFoundError
from kachery_client.uri import parse_file_uri
from tests.support.cli import run_cli
from tests.support.nodeproc import client_env, running_node

REMOTE_CODE = "remotecodeforworkstation"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with running_node(tmp_path_factory.mktemp("cn") / "storage") as n:
        n.post("/mutable/set", json={"key": "_other_client_auth_codes", "value": [REMOTE_CODE]})
        yield n


@pytest.fixture
def remote(node, monkeypatch, tmp_path):
    """A client that cannot see the node's storage dir: its own dir, and an operator-issued code."""
    monkeypatch.delenv("KACHERY_OFFLINE_STORAGE_DIR", raising=False)
    monkeypatch.setenv("KACHERY_DAEMON_HOST", "127.0.0.1")
    monkeypatch.setenv("KACHERY_DAEMON_PORT", str(node.port))
    monkeypatch.setenv("KACHERY_STORAGE_DIR", str(tmp_path / "workstation"))
    monkeypatch.setenv("KACHERY_CLIENT_AUTH_CODE", REMOTE_CODE)
    return node


def _names(node, sha1):
    db = sqlite3.connect(node.storage_dir / "kacheryfs.db")
    return [r[0] for r in db.execute("SELECT name FROM names WHERE sha1 = ?", (sha1,))]


def test_shared_storage_roundtrips(shared, tmp_path):
    uri = kc.store_text("hello through the node")
    sha1 = parse_file_uri(uri).sha1
    assert (shared.storage_dir / "sha1" / sha1[:2] / sha1[2:4] / sha1[4:6] / sha1).exists()
    assert kc.node_client().flush()                           # the notice goes in the background
    assert "file.txt" in _names(shared, sha1)                 # the node was told
    assert kc.load_text(uri) == "hello through the node"
    assert kc.load_json(kc.store_json({"a": 1})) == {"a": 1}
    np.testing.assert_array_equal(kc.load_npy(kc.store_npy(np.eye(3))), np.eye(3))
    assert kc.load_pkl(kc.store_pkl([1, "two"])) == [1, "two"]
    f = tmp_path / "data.bin"
    f.write_bytes(os.urandom(100_000))
    furi = kc.store_file(f)
    assert kc.load_bytes(furi, 10, 20) == f.read_bytes()[10:20]
    luri = kc.link_file(f)
    assert kc.load_file(luri) in (str(f), kc.load_file(furi))


def test_mutables(shared):
    assert kc.set("ck", {"v": 1}) is True
    assert kc.get("ck") == {"v": 1}
    assert kc.set("ck", 2, update=False) is False
    assert kc.get_string("ck") is None
    assert kc.delete("ck") is True and kc.get("ck") is None


def test_missing_content_raises_after_asking_the_node(shared):
    with pytest.raises(NotFoundError, match="not in this node.s store and it has no sources"):   # the node's reason
        kc.load_text("sha1://" + "4" * 40 + "/x")
    with pytest.raises(NotFoundError):
        kc.load_text("sha1://" + "4" * 40 + "/x", local_only=True)


def test_remote_client_streams_to_store_and_downloads(remote, tmp_path):
    uri = kc.store_text("from a workstation")
    sha1 = parse_file_uri(uri).sha1
    assert (remote.storage_dir / "sha1" / sha1[:2] / sha1[2:4] / sha1[4:6] / sha1).exists()
    assert not (tmp_path / "workstation" / "sha1").exists()          # bytes went over HTTP
    assert "file.txt" in _names(remote, sha1)
    # the node's path is visible on this test machine; fetch through /downloadFileData explicitly,
    # as a client on another host does, verifying the hash before publishing
    path = api.download(api._context(), parse_file_uri(uri))
    assert path.read_bytes() == b"from a workstation"
    assert str(path).startswith(str(tmp_path / "workstation"))
    assert kc.load_text(uri) == "from a workstation"
    assert kc.load_file(uri) == str(path)                   # the cached copy is found first


def test_wrong_code_is_an_auth_error(remote, monkeypatch):
    monkeypatch.setenv("KACHERY_CLIENT_AUTH_CODE", "notthecodeatall")
    with pytest.raises(AuthError):
        kc.store_text("x")


def test_commands_through_the_node(shared, tmp_path):
    f = tmp_path / "c.txt"
    f.write_bytes(b"cli via node")
    env = client_env(shared)
    r = run_cli("kachery-store", str(f), env=env)
    uri = r.stdout.decode().strip()
    assert r.returncode == 0 and uri.endswith("/c.txt"), r.stderr
    assert run_cli("kachery-cat", uri, env=env).stdout == b"cli via node"
    r = run_cli("kachery-cat", "sha1://" + "5" * 40 + "/x", env=env)
    assert r.returncode != 0 and b"Traceback" not in r.stderr


def test_no_node_message_from_a_command(tmp_path):
    r = run_cli("kachery-cat", "sha1://" + "5" * 40 + "/x",
                env={"KACHERY_DAEMON_PORT": "9", "KACHERY_OFFLINE_STORAGE_DIR": ""})
    err = r.stderr.decode()
    assert r.returncode != 0 and "kacheryfs run" in err and len(err.strip().splitlines()) == 1


def test_many_processes_store_through_the_node(shared):
    code = ("import kachery_client as kc, sys\n"
            "for i in range(100):\n"
            "    assert kc.load_text(kc.store_text(f'p{sys.argv[1]} {i % 7}')) == f'p{sys.argv[1]} {i % 7}'\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(p % 3)], env={**os.environ})
             for p in range(8)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 8
    for p in range(3):
        for i in range(7):
            data = f"p{p} {i}".encode()
            assert kc.load_bytes(f"sha1://{hashlib.sha1(data).hexdigest()}/x", local_only=True) == data
    assert os.listdir(shared.storage_dir / "tmp") == []
