"""partial/: transfers in progress or abandoned (<sha1>.part with its <sha1>.chunks record).

A transfer nobody waits for any more stops and keeps its verified chunks there, so a later load
resumes. The directory is bounded (`[node] partial_max_bytes`): when it grows past the bound, the
oldest files of transfers that are not running are removed first. Synchronous: call from a thread.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartialFile:
    sha1: str
    disk_bytes: int          # blocks actually used: a part file is sparse until complete
    mtime: float             # last write: the age of an abandoned transfer


def list_partial(partial_dir: Path) -> list[PartialFile]:
    out = []
    try:
        parts = list(partial_dir.glob("*.part"))
    except OSError:
        return []
    for part in parts:
        try:
            st = part.stat()
        except FileNotFoundError:
            continue
        used = st.st_blocks * 512
        try:
            used += part.with_suffix(".chunks").stat().st_size
        except FileNotFoundError:
            pass
        out.append(PartialFile(part.stem, used, st.st_mtime))
    return sorted(out, key=lambda p: p.mtime)


def trim_partial(partial_dir: Path, max_bytes: int, running: Collection[str]) -> list[str]:
    """Remove the oldest abandoned transfers until partial/ uses at most `max_bytes`.
    Files of running transfers are counted but never removed. Returns the hashes removed."""
    files = list_partial(partial_dir)
    total = sum(f.disk_bytes for f in files)
    removed = []
    for f in files:
        if total <= max_bytes:
            break
        if f.sha1 in running:
            continue
        for suffix in (".part", ".chunks"):
            try:
                (partial_dir / (f.sha1 + suffix)).unlink()
            except FileNotFoundError:
                pass
        total -= f.disk_bytes
        removed.append(f.sha1)
    if removed:
        log.info("partial/ over %d bytes: removed %d abandoned transfer(s), oldest first: %s",
                 max_bytes, len(removed), ", ".join(removed))
    return removed
