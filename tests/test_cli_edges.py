"""What a user sees at the edges: a taken address or mount point is one line and exit 2 (also
through the mount helper); `kacheryfs status --port P` finds a node on any port; command-line
mistakes are one line; the mount refuses directories and overwrites with EPERM."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys

import pytest

from tests.support.cli import run_cli
from tests.support.mount import force_unmount, mounted_node, stored_link
from tests.support.network import write_config
from tests.support.nodeproc import client_env, free_port, running_node

KACHERYFS = [sys.executable, "-m", "kacheryfs"]


def _kacheryfs(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KACHERYFS, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def _one_line(text: str) -> str:
    """stderr is one line, with no traceback."""
    assert "Traceback" not in text and "ExceptionGroup" not in text, text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture
def taken_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


def test_busy_client_port_is_one_line_exit_2(tmp_path, taken_port):
    r = _kacheryfs("run", "--storage-dir", str(tmp_path / "s"), "--port", str(taken_port), "--no-mount")
    assert r.returncode == 2
    line = _one_line(r.stderr)
    assert f"127.0.0.1:{taken_port}" in line and "already in use" in line, r.stderr


def test_busy_peer_listen_is_one_line_exit_2(tmp_path, taken_port):
    write_config(tmp_path / "s", node={"peer_listen": f"127.0.0.1:{taken_port}"})
    r = _kacheryfs("run", "--storage-dir", str(tmp_path / "s"), "--port", str(free_port()), "--no-mount")
    assert r.returncode == 2
    line = _one_line(r.stderr)
    assert f"127.0.0.1:{taken_port}" in line and "peer" in line and "already in use" in line, r.stderr


def test_busy_mount_point_is_one_line_exit_2_also_through_the_helper(tmp_path, taken_port):
    with mounted_node(tmp_path) as (_, mnt):
        r = _kacheryfs("run", "--storage-dir", str(tmp_path / "other"), "--port", str(free_port()),
                       "--mount", str(mnt))
        assert r.returncode == 2
        line = _one_line(r.stderr)
        assert str(mnt) in line and "mount point" in line, r.stderr
        # The mount(8) helper form: same message, same code, and no node left behind.
        (tmp_path / "s2").mkdir()
        r = _kacheryfs(str(tmp_path / "s2"), str(mnt), "-o", f"port={free_port()}")
        assert r.returncode == 2 and str(mnt) in _one_line(r.stderr), r.stderr
    # A taken port through the helper: the node's one line, passed on.
    mnt2 = tmp_path / "mnt2"
    mnt2.mkdir()
    try:
        r = _kacheryfs(str(tmp_path / "s2"), str(mnt2), "-o", f"port={taken_port}")
        assert r.returncode == 2, r.stderr
        assert f"127.0.0.1:{taken_port}" in _one_line(r.stderr) and not os.path.ismount(mnt2)
    finally:
        if os.path.ismount(mnt2):
            force_unmount(mnt2)


def test_status_asks_the_node_on_any_port(tmp_path):
    write_config(tmp_path / "s", node={"peer_listen": f"127.0.0.1:{free_port()}"})
    with running_node(tmp_path / "s") as node:
        # No storage dir given, none in the environment, HOME elsewhere: /probe says where it is.
        env = {"HOME": str(tmp_path / "home"), "KACHERY_STORAGE_DIR": "", "KACHERY_DAEMON_PORT": ""}
        r = _kacheryfs("status", "--port", str(node.port), env=env)
        assert r.returncode == 0, r.stderr
        node_id = (tmp_path / "s" / "kachery-node-id").read_text()
        assert f"Node ID:           {node_id}" in r.stdout
        assert str(node.storage_dir) in r.stdout and "Peer API:          127.0.0.1:" in r.stdout
        assert "Mount point:       not mounted" in r.stdout
        idr = _kacheryfs("id", "--storage-dir", str(tmp_path / "s"))
        assert idr.stdout == node_id + "\n"
    r = _kacheryfs("status", "--port", str(node.port))
    assert r.returncode == 7 and f"no kachery node answers at http://127.0.0.1:{node.port}" in r.stderr


def test_command_line_mistakes_are_one_line(tmp_path):
    env = {"KACHERY_OFFLINE_STORAGE_DIR": str(tmp_path / "storage")}
    (tmp_path / "a.txt").write_text("hello")
    uri = run_cli("kachery-store", str(tmp_path / "a.txt"), env=env).stdout.decode().strip()
    r = run_cli("kachery-load", uri, "--dest", "/nonexistent/dir/x.json", env=env)
    assert r.returncode == 2 and _one_line(r.stderr.decode()) == \
        "Error: cannot write /nonexistent/dir/x.json: No such file or directory"
    r = run_cli("kachery-cat", uri, "--start", "10", "--end", "5", env=env)
    assert r.returncode == 2 and "--end (5) is before --start (10)" in r.stderr.decode()
    r = run_cli("kachery-cat", "sha1:/" + "a" * 40 + "/x", env=env)
    assert r.returncode == 2 and "URI" in _one_line(r.stderr.decode()) and "no such file" not in r.stderr.decode()
    # Anything readable, as the original accepted: a pipe from the shell's <(...)
    script = f"{sys.executable} -c \"import sys; from kachery_client.cli import store_main as m; " \
             f"sys.argv[0]='kachery-store'; m()\" <(printf hello)"
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert r.returncode == 0 and r.stdout.startswith("sha1://aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d/"), r.stderr


def test_node_messages_are_the_reason_without_internals(tmp_path):
    port = free_port()
    r = run_cli("kachery-cat", "sha1://" + "a" * 40 + "/x",
                env={"KACHERY_DAEMON_PORT": str(port), "KACHERY_OFFLINE_STORAGE_DIR": ""})
    err = _one_line(r.stderr.decode())
    assert r.returncode == 7 and f"no kachery node answers at http://localhost:{port}" in err
    assert "HTTPConnectionPool" not in err and "Max retries" not in err
    with running_node(tmp_path / "s") as node:
        # A workstation: the node's storage directory is not visible here, and no code was issued.
        env = {**client_env(node), "KACHERY_STORAGE_DIR": str(tmp_path / "elsewhere")}
        r = run_cli("kachery-cat", "sha1://" + "a" * 40 + "/x", env=env)
        assert r.returncode == 8 and "KACHERY_CLIENT_AUTH_CODE" in _one_line(r.stderr.decode()), r.stderr
        # --upload to a channel the node lacks: the node's reason, not "HTTP 500: {...}"
        (tmp_path / "f.txt").write_text("x")
        r = run_cli("kachery-store", "--upload", "nochan", str(tmp_path / "f.txt"), env=client_env(node))
        err = _one_line(r.stderr.decode())
        assert r.returncode == 1 and "not a member of channel 'nochan'" in err, err
        assert "HTTP" not in err and "{" not in err


def test_mount_refuses_directories_and_overwrites_with_eperm(tmp_path):
    with mounted_node(tmp_path) as (_, mnt):
        with pytest.raises(OSError) as e:
            os.mkdir(mnt / "incoming" / "sub")
        assert e.value.errno == errno.EPERM
        (mnt / "incoming" / "a.txt").write_bytes(b"first")
        stored_link(mnt / "incoming" / "a.txt")
        with pytest.raises(OSError) as e:
            (mnt / "incoming" / "a.txt").write_bytes(b"second")
        assert e.value.errno in (errno.EPERM, errno.EEXIST)
        assert (mnt / "incoming" / "a.txt").read_bytes() == b"first"
