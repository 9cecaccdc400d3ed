"""Part files of transfers in progress (docs/PROTOCOL.md section 14.5): chunks written into
<storage>/partial/<sha1>.part at their offsets, hashed as they are written, and the resume record
<sha1>.chunks listing the chunks that are verified and on disk.

A write the local disk refuses is a LocalStorageError (never an OSError a source could mistake
for its own failure): it fails the transfer without blaming the source. The chunk downloads
themselves are transfer.download_chunk.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from kachery_client.errors import IntegrityError
from kachery_client.storage_errors import storage_errors
from kacheryfs.content.transfer import Chunk

HASH_BLOCK = 8 << 20
_RECORD_RE = re.compile(r"^chunk (\d+)\n$")


async def record_chunk(fd: int, record: Any, i: int) -> None:
    """A verified chunk is listed for a resume. Not synced: a resume hashes the listed chunks again
    (`resume`), so a chunk whose bytes a crash lost is fetched again, and the transfer never
    waits for the disk."""
    with storage_errors("the partial/ directory"):
        record.write(f"chunk {i}\n")
        record.flush()


def hash_range(h: Any, fd: int, start: int, end: int, buf: bytearray | None = None) -> None:
    """Feed bytes [start, end) of the file to `h`. Reads go into one buffer (`buf`, reused across
    calls when given): a fresh 8 MiB bytes object per read costs as much as hashing it (page faults
    of the new allocation)."""
    view = memoryview(buf if buf is not None else bytearray(min(HASH_BLOCK, max(end - start, 1))))
    pos = start
    while pos < end:
        n = os.preadv(fd, [view[:min(len(view), end - pos)]], pos)
        if not n:
            raise IntegrityError("part file shorter than planned")
        h.update(view[:n])
        pos += n


def resume(part: Path, record: Path, size: int, chunks: list[Chunk], manifest_sha1: str | None) -> set[int]:
    """Chunks verified by an earlier, interrupted transfer of the same plan."""
    header = f"plan {manifest_sha1 or '-'} {size}\n"
    try:
        lines = record.read_text().splitlines(keepends=True)
        if part.stat().st_size == size and lines and lines[0] == header:
            # Whole lines only: a torn append ("chu" + "chunk 2") never names a chunk.
            found = {int(m.group(1)) for x in lines[1:] if (m := _RECORD_RE.match(x))}
            return {i for i in found if i < len(chunks) and chunks[i].sha1 is not None
                    and _chunk_is_whole(part, chunks[i])}
    except (OSError, ValueError):
        pass
    remove(part, record)
    record.write_text(header)
    return set()


def _chunk_is_whole(part: Path, chunk: Chunk) -> bool:
    """The chunk's bytes in the part file still hash right (they were recorded without a sync)."""
    h = hashlib.sha1()
    with open(part, "rb") as f:
        hash_range(h, f.fileno(), chunk.start, chunk.end)
    return h.hexdigest() == chunk.sha1


def remove(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass
