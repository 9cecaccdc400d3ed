"""The systemd units verify, and `mount -t fuse.kacheryfs` (the fstab/.mount path) mounts for real."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kacheryfs.daemon import GRACE_SECONDS, PEER_GRACE_SECONDS
from tests.support.mount import force_unmount, wait_for_mount
from tests.support.nodeproc import free_port

UNITS = Path(__file__).resolve().parent.parent / "systemd"


def _shim(tmp_path: Path) -> Path:
    """A `kacheryfs` on PATH that runs this checkout with this interpreter."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    shim = bindir / "kacheryfs"
    root = Path(__file__).resolve().parent.parent
    shim.write_text(f'#!/bin/sh\nPYTHONPATH="{root}" exec "{sys.executable}" -m kacheryfs "$@"\n')
    shim.chmod(0o755)
    return shim


def test_the_stop_timeout_outlasts_the_grace():
    """systemd SIGKILLs a node still running after TimeoutStopSec (KillMode=mixed), leaving its
    mount dangling: the grace for requests in flight plus the unmount must fit well within it."""
    service = (UNITS / "kachery-node.service").read_text()
    stop_sec = int(re.search(r"^TimeoutStopSec=(\d+)$", service, re.M).group(1))
    assert max(GRACE_SECONDS, PEER_GRACE_SECONDS) + 10 <= stop_sec


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is installed by make deps")
def test_units_verify(tmp_path):
    shim = _shim(tmp_path)
    units = tmp_path / "units"
    units.mkdir()
    for unit in UNITS.iterdir():
        (units / unit.name).write_text(unit.read_text().replace("/usr/local/bin/kacheryfs", str(shim)))
    service = (units / "kachery-node.service").read_text()
    assert "Type=notify" in service and "Restart=on-failure" in service
    out = subprocess.run(["systemd-analyze", "verify", *map(str, sorted(units.iterdir()))],
                         capture_output=True, text=True, env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})
    problems = [line for line in (out.stdout + out.stderr).splitlines()
                if "kachery" in line and "Failed to" not in line.split(":")[0]]
    assert out.returncode == 0, out.stdout + out.stderr
    assert not [p for p in problems if "not executable" in p or "Unknown" in p or "bad" in p.lower()]


def test_mount_dash_t_fuse_kacheryfs(tmp_path):
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip("mount(8) needs root and /dev/fuse")
    # mount(8) runs helpers with a sanitized PATH: kacheryfs must be in a standard directory.
    # Put this checkout's there for the test only, unless an operator installed one already.
    installed = Path("/usr/local/bin/kacheryfs")
    placed = not installed.exists()
    if placed:
        shutil.copy(_shim(tmp_path), installed)
    storage, mnt = tmp_path / "storage", tmp_path / "mnt"
    storage.mkdir()                                       # the helper form takes existing directories only
    mnt.mkdir()
    port = free_port()
    try:
        out = subprocess.run(["mount", "-t", "fuse.kacheryfs", "-o", f"port={port},log_file={tmp_path}/node.log",
                              str(storage), str(mnt)], capture_output=True, text=True, timeout=90)
        assert out.returncode == 0, out.stderr
        assert os.path.ismount(mnt)                       # the helper returned with the mount up
        (mnt / "incoming" / "m.txt").write_bytes(b"via mount(8)")
        deadline = time.monotonic() + 10
        while not (mnt / "incoming" / "m.txt").is_symlink():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert (mnt / "incoming" / "m.txt").read_bytes() == b"via mount(8)"
        assert "fuse.kacheryfs" in Path("/proc/mounts").read_text()
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        if os.path.ismount(mnt):
            force_unmount(mnt)
        if placed:
            installed.unlink()
    # unmounted from outside: the background node stops by itself and frees the storage dir
    deadline = time.monotonic() + 15
    while not _lock_is_free(storage / "kacheryfs.lock"):
        assert time.monotonic() < deadline, "the node kept running after umount"
        time.sleep(0.05)


def _lock_is_free(path: Path) -> bool:
    import fcntl
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False


def test_helper_rejects_unknown_options(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "m").mkdir()
    out = subprocess.run([sys.executable, "-m", "kacheryfs", str(tmp_path / "s"), str(tmp_path / "m"), "-o", "bogus"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "unknown mount option 'bogus'" in out.stderr


def test_wait_for_mount_fails_fast_if_the_child_dies(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    with pytest.raises(RuntimeError, match="exited with 3"):
        wait_for_mount(tmp_path, proc)
