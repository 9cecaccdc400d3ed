"""The unmodified kachery-client 1.2.0 from PyPI, in its own virtualenv, against our node."""

import os
import subprocess
import textwrap
from pathlib import Path

from tests.support.nodeproc import client_env, running_node


def run120(python, env, script, *args, cwd):
    # cwd outside the repo: `python -c` puts cwd first on sys.path, and ours is also kachery_client
    out = subprocess.run([python, "-c", textwrap.dedent(script), *args], capture_output=True, text=True,
                         timeout=120, env={**os.environ, **env, "PYTHONPATH": ""}, cwd=cwd)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_original_client_through_our_node(kc120_python, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20_000_001))
    small = tmp_path / "small.txt"
    small.write_bytes(b"small file")
    linked = tmp_path / "linked.bin"
    linked.write_bytes(os.urandom(1000))
    with running_node(tmp_path / "storage") as node:
        out = run120(kc120_python, client_env(node), """
            import sys, os, hashlib, numpy as np, kachery_client as kc
            big, small, linked = sys.argv[1:4]
            u = kc.store_text("hello")
            assert u == "sha1://aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d/file.txt", u
            assert kc.load_text(u) == "hello"
            assert kc.load_json(kc.store_json({"a": [1, 2]})) == {"a": [1, 2]}
            a = np.arange(10.0)
            assert (kc.load_npy(kc.store_npy(a)) == a).all()
            assert kc.load_pkl(kc.store_pkl({"x": 1})) == {"x": 1}
            ub = kc.store_file(big)
            assert "?manifest=" in ub, ub
            assert hashlib.sha1(open(kc.load_file(ub), "rb").read()).hexdigest() == hashlib.sha1(open(big, "rb").read()).hexdigest()
            us = kc.store_file(small)
            assert open(kc.load_file(us), "rb").read() == b"small file"
            assert kc.load_bytes(u, start=1, end=3) == b"el"
            ul = kc.link_file(linked)
            assert kc.load_file(ul) == linked
            assert kc.set("k", "v") is True and kc.get("k") == "v"
            assert kc.set("k", "w", update=False) is False
            assert kc.delete("k") is True and kc.get("k") is None
            assert kc.load_file("sha1://" + "3" * 40 + "/x") is None
            assert kc.load_file("sha1://" + "3" * 40 + "/x", channel="ch1") is None
            for i in range(200):
                kc.store_json({"i": i})
            print("OK")
            """, str(big), str(small), str(linked), cwd=tmp_path)
        assert out.strip().endswith("OK")
        assert os.listdir(node.storage_dir / "tmp") == []


def test_original_commands_through_our_node(kc120_python, tmp_path):
    bindir = Path(kc120_python).parent
    f = tmp_path / "f.txt"
    f.write_bytes(b"hello")
    with running_node(tmp_path / "storage") as node:
        env = {**os.environ, **client_env(node), "PYTHONPATH": "", "PATH": f"{bindir}:{os.environ['PATH']}"}
        uri = subprocess.run([bindir / "kachery-store", str(f)], capture_output=True, text=True, env=env, cwd=tmp_path,
                             timeout=60).stdout.strip().splitlines()[-1]
        assert uri == "sha1://aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d/f.txt"
        cat = subprocess.run([bindir / "kachery-cat", uri, "--start", "1", "--end", "3"], capture_output=True,
                             env=env, cwd=tmp_path, timeout=60)
        assert cat.stdout == b"el"
        load = subprocess.run([bindir / "kachery-load", uri], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
        assert open(load.stdout.strip().splitlines()[-1], "rb").read() == b"hello"
        if (bindir / "kachery-info").exists():
            info = subprocess.run([bindir / "kachery-info"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
            assert "Node ID:" in info.stdout and "You have access to this daemon" in info.stdout
