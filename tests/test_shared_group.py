"""Shared storage on a lab server: `kacheryfs run --group GROUP`, two Unix users of the group (made
here, removed after) storing directly into one node's storage directory, and a user outside the
group getting a permission error that names the group. Needs root (useradd, runuser)."""

from __future__ import annotations

import grp
import hashlib
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.nodeproc import client_env, running_node

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def lab() -> Iterator[tuple[str, list[str], str, Path]]:
    """(group, [two members], outsider, a world-traversable base directory)."""
    if os.geteuid() != 0:
        pytest.fail("this test makes Unix users: run the suite as root (CI does)")
    tag = secrets.token_hex(3)
    group, members, outsider = f"kclab{tag}", [f"kcu1{tag}", f"kcu2{tag}"], f"kcout{tag}"
    base = Path(tempfile.mkdtemp(prefix="kachery-lab-", dir="/tmp"))
    os.chmod(base, 0o755)
    made: list[str] = []
    try:
        subprocess.run(["groupadd", group], check=True)
        for user in members:
            subprocess.run(["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", "-G", group, user], check=True)
            made.append(user)
        subprocess.run(["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", outsider], check=True)
        made.append(outsider)
        yield group, members, outsider, base
    finally:
        for user in made:
            subprocess.run(["userdel", user], check=False)
        subprocess.run(["groupdel", group], check=False)
        shutil.rmtree(base, ignore_errors=True)


def _python_for(user: str) -> tuple[str, str]:
    """(interpreter, PYTHONPATH) that `user` can run: this venv's, or, when its interpreter lives
    where other users cannot reach (pyenv under /root), the system's of the same version with
    this venv's packages."""
    site = next(p for p in sys.path if p.endswith("site-packages"))
    if subprocess.run(["runuser", "-u", user, "--", sys.executable, "-c", "pass"], capture_output=True).returncode == 0:
        return sys.executable, str(REPO)
    system = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    assert os.access(system, os.X_OK), f"no interpreter that {user} may run ({sys.executable}, {system})"
    return system, f"{REPO}:{site}"


def as_user(user: str, node, code: str, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """Client code run by `user` (umask 022: the default ACLs, not the umask, make it shareable)."""
    home.mkdir(exist_ok=True)
    shutil.chown(home, user)
    python, path = _python_for(user)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "PYTHONPATH": path,
           "PYTHONDONTWRITEBYTECODE": "1", **client_env(node)}
    return subprocess.run(["runuser", "-u", user, "--", "sh", "-c", 'umask 022; exec "$@"', "sh",
                           python, "-c", "import sys, kachery_client as kc\n" + code, *args],
                          capture_output=True, text=True, timeout=120, env=env, cwd=str(home))


def _texts_sharing_a_directory() -> tuple[str, str]:
    """Two texts whose blobs land in the same sha1/aa/ directory (the second user writes into a
    directory the first user's client made)."""
    seen: dict[str, str] = {}
    for i in range(10_000):
        text = f"lab text {i}"
        prefix = hashlib.sha1(text.encode()).hexdigest()[:2]
        if prefix in seen:
            return seen[prefix], text
        seen[prefix] = text
    raise AssertionError("unreachable")


def test_two_users_of_one_group_store_into_one_node(lab):
    group, (u1, u2), outsider, base = lab
    gid = grp.getgrnam(group).gr_gid
    storage = base / "storage"
    first, second = _texts_sharing_a_directory()
    with running_node(storage, args=("--group", group)) as node:
        st = os.stat(storage)
        assert st.st_gid == gid and st.st_mode & stat.S_ISGID and not st.st_mode & 0o007
        one = as_user(u1, node, "print(kc.store_text(sys.argv[1]))", first, home=base / "h1")
        assert one.returncode == 0, one.stderr + node.log()[-2000:]
        two = as_user(u2, node, "print(kc.store_text(sys.argv[1]))", second, home=base / "h2")
        assert two.returncode == 0, two.stderr + node.log()[-2000:]
        for out, text in ((one, first), (two, second)):
            sha1 = out.stdout.strip().split("/")[2]
            blob = storage / "sha1" / sha1[:2] / sha1[2:4] / sha1[4:6] / sha1
            assert blob.read_text() == text               # stored directly, into the shared tree
            bst = os.stat(blob)
            assert bst.st_gid == gid and bst.st_mode & 0o040, oct(bst.st_mode)
        # u2's blob sits in a directory u1's client created: group-owned, setgid, group-writable.
        shared_dir = storage / "sha1" / hashlib.sha1(first.encode()).hexdigest()[:2]
        dst = os.stat(shared_dir)
        assert dst.st_uid == int(subprocess.check_output(["id", "-u", u1]))
        assert dst.st_gid == gid and dst.st_mode & stat.S_ISGID and dst.st_mode & 0o020
        # u2 stores u1's content again: it may not claim u1's blob (utime needs its owner), so it
        # puts its own copy of the same bytes in place instead (kachery_client/claims.py).
        again = as_user(u2, node, "print(kc.store_text(sys.argv[1]))", first, home=base / "h2")
        assert again.returncode == 0 and again.stdout == one.stdout, again.stderr + node.log()[-2000:]
        sha1 = one.stdout.strip().split("/")[2]
        blob = storage / "sha1" / sha1[:2] / sha1[2:4] / sha1[4:6] / sha1
        assert blob.read_text() == first
        assert os.stat(blob).st_uid == int(subprocess.check_output(["id", "-u", u2]))
        # Each user reads the other's content; the node knows both as owned.
        back = as_user(u1, node, "print(kc.load_text(sys.argv[1]))", two.stdout.strip(), home=base / "h1")
        assert back.stdout.strip() == second, back.stderr
        du = node.post("/kacheryfs/du", json={}).json()["du"]
        assert du["owned"]["count"] == 2
        # A user outside the group: a clear permission error naming the group.
        (base / "intruder.txt").write_text("intruder")
        out = as_user(outsider, node, "from kachery_client.cli import store_main as m\n"
                      "sys.argv[0] = 'kachery-store'; m()", str(base / "intruder.txt"), home=base / "h3")
        assert out.returncode != 0 and "Traceback" not in out.stderr
        assert f"group {group!r}" in out.stderr and "Permission denied" in out.stderr, out.stderr
