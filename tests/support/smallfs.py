"""A real small file system for disk-full tests: a tmpfs of a few MiB, mounted by the test (root),
always unmounted afterwards.

    with small_fs(tmp_path / "small", size_mib=24) as root:
        ...   # writes under root fail with ENOSPC past 24 MiB
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def small_fs(path: Path, size_mib: int = 24) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0755", "tmpfs", str(path)],
                   check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize
