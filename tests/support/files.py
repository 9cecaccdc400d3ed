"""Test files of random bytes (incompressible, so no layer can shortcut them)."""

from __future__ import annotations

import os
from pathlib import Path


def make_file(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 4 << 20))
            f.write(block)
            left -= len(block)
    return path
