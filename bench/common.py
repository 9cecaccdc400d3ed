"""What every benchmark shares: test files, page-cache warming, timing, baselines, ratios."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
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
