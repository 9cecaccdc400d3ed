"""Checks of a storage directory after a fault: nothing partial left, every blob verifies."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from kachery_client.store import Store


def make_file(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 4 << 20))
            f.write(block)
            left -= len(block)
    return path


def sha1_of(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def leftovers(storage: Path) -> list[str]:
    """Temp files of interrupted writes and part files of transfers (tmp/, partial/)."""
    return sorted(str(p.relative_to(storage)) for d in ("tmp", "partial") if (storage / d).is_dir()
                  for p in (storage / d).iterdir())


def bad_blobs(storage: Path) -> list[str]:
    """Blobs whose content does not hash to their name (target: none, ever)."""
    store = Store(storage)
    return [sha1 for sha1 in store.iter_hashes() if not store.verify(sha1)]


def blob_count(storage: Path) -> int:
    return sum(1 for _ in Store(storage).iter_hashes())
