"""What every benchmark shares: test files, page-cache warming, timing, baselines, ratios."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

DATA_DIR = Path(os.environ.get("KACHERY_BENCH_DIR", Path(__file__).parent / "data"))


def make_file(size: int, name: str | None = None) -> Path:
    """A file of `size` pseudo-random bytes, made once and reused between runs."""
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = DATA_DIR / (name or f"random-{size}.bin")
    if not path.exists() or path.stat().st_size != size:
        tmp = path.with_suffix(".part")
        block = os.urandom(8 << 20)
        with open(tmp, "wb") as f:
            left = size
            while left:
                n = min(left, len(block))
                f.write(block[:n])
                left -= n
                block = block[1:] + block[:1]   # different blocks, so chunks differ
        os.replace(tmp, path)
    return path


@contextlib.contextmanager
def fresh_ext4(size_mib: int = 2048) -> Iterator[Path | None]:
    """A new ext4 file system in memory (an image in /dev/shm on a loop device), mounted for the
    duration: small-file rows measured without what this machine's disk carries from earlier work
    (on a VM disk after days of churn, a mkdir costs three times what it does on a fresh ext4).
    None without root or mkfs.ext4."""
    if os.geteuid() != 0 or not shutil.which("mkfs.ext4") or not os.path.isdir("/dev/shm"):
        yield None
        return
    image = Path(tempfile.mkstemp(dir="/dev/shm", suffix=".ext4")[1])
    mnt = Path(tempfile.mkdtemp(prefix="kachery-bench-ext4-"))
    try:
        os.truncate(image, size_mib << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True, capture_output=True)
        try:
            yield mnt
        finally:
            subprocess.run(["umount", str(mnt)], check=False, capture_output=True)
    finally:
        image.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            mnt.rmdir()


def warm(path: Path) -> None:
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)


def timed(fn: Callable[[], object], repeat: int = 1, setup: Callable[[], object] | None = None) -> float:
    """Best wall time of `repeat` runs, in seconds. `setup` (e.g. removing the previous copy) runs
    before each, untimed, followed by a sync, so that no run pays for the last one's writeback."""
    best = float("inf")
    for _ in range(repeat):
        if setup is not None:
            setup()
            os.sync()
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def sha1sum_seconds(path: Path, repeat: int = 2) -> float:
    return timed(lambda: subprocess.run(["sha1sum", str(path)], stdout=subprocess.DEVNULL, check=True), repeat)


def report(name: str, seconds: float, baseline_name: str, baseline: float, target: str) -> None:
    print(f"{name}: {seconds:.3f} s; {baseline_name}: {baseline:.3f} s; "
          f"ratio {seconds / baseline:.2f}x (target {target})")
