"""Real mounts for tests: a node process with its mount, waited for with a deadline, always cleaned.

    with mounted_node(tmp_path) as (node, mnt):
        (mnt / "incoming" / "a.txt").write_bytes(b"...")
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.nodeproc import NodeProc, start_node

MOUNT_DEADLINE = 30.0


def wait_for_mount(mnt: Path, proc: subprocess.Popen[bytes], describe: str = "") -> None:
    deadline = time.monotonic() + MOUNT_DEADLINE
    while not os.path.ismount(mnt):
        if proc.poll() is not None:
            raise RuntimeError(f"the mounting process exited with {proc.returncode} before mounting {mnt}\n{describe}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{mnt} was not mounted within {MOUNT_DEADLINE} s\n{describe}")
        time.sleep(0.02)


def stored_link(entry: Path, deadline: float = 10.0) -> str:
    """The symlink an incoming/ entry becomes once stored (on the kernel's release, just after
    the writer's last close returns)."""
    end = time.monotonic() + deadline
    while True:
        try:
            return os.readlink(entry)
        except OSError:
            if time.monotonic() > end:
                raise
        time.sleep(0.005)


def force_unmount(mnt: Path) -> None:
    subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)


@contextlib.contextmanager
def mounted_node(tmp_path: Path, storage: Path | None = None, mnt: Path | None = None,
                 args: tuple[str, ...] = ()) -> Iterator[tuple[NodeProc, Path]]:
    storage = storage or tmp_path / "storage"
    mnt = mnt or tmp_path / "mnt"
    node = None
    try:
        node = start_node(storage, args=("--mount", str(mnt), *args))
        wait_for_mount(mnt, node.proc, node.log())
        yield node, mnt
    finally:
        if node is not None:
            node.stop()
        if os.path.ismount(mnt):
            force_unmount(mnt)


@contextlib.contextmanager
def mounted_script(script: str, mnt: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run a Python script that mounts something at `mnt` (a node with a stand-in fetcher)."""
    proc = subprocess.Popen([sys.executable, "-c", script, str(mnt), *args], stderr=subprocess.PIPE)
    try:
        wait_for_mount(mnt, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if os.path.ismount(mnt):
            force_unmount(mnt)
