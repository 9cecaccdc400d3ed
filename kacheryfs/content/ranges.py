"""A byte range of a blob as soon as it is verified: from the store, or from a transfer in progress.

`kachery-cat --start/--end` of a remote file, through /downloadFileData, waits only for the chunks
covering the range (the mount does the same with Transfer.wait_range in fuse/vfs.py), not for the
whole file. The open file returned stays valid when the part file is renamed into the store.
`kachery-cat` without --end reads a whole file this way, range after range, each waited for as
long as the transfer runs (timeout None) instead of --fetch-timeout (docs/PROTOCOL.md 17.4).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import BinaryIO

import trio

from kachery_client.errors import TransferError, UsageError
from kacheryfs.content.fetcher import Transfer


@dataclass
class OpenRange:
    file: BinaryIO
    size: int          # of the whole blob
    start: int
    end: int
    transfer: Transfer | None = None       # the transfer bringing the blob: held until close()

    def close(self) -> None:
        """Close the file and let go of the transfer (once; a second call does nothing)."""
        self.file.close()
        if self.transfer is not None:
            self.transfer.release()
            self.transfer = None


def check_range(start: int | None, end: int | None, size: int, clamp_end: bool) -> tuple[int, int]:
    if start is None and end is None:
        return 0, size
    if start is None or end is None:
        raise UsageError("give both startByte and endByte, or neither")
    if clamp_end:
        end = min(end, size)
    if not 0 <= start <= end <= size:
        raise UsageError(f"invalid byte range [{start}, {end}) for a file of {size} bytes")
    return start, end


async def open_transfer_range(t: Transfer, start: int | None, end: int | None, clamp_end: bool,
                              timeout: float | None) -> OpenRange:
    """Wait (holding the transfer) until [start, end) is verified, then open what holds the bytes.
    timeout None: as long as the transfer runs (it fails by itself when its sources do). A transfer
    still running stays held by the returned range until its close(): its reader still needs it."""
    with t.held():
        with trio.move_on_after(math.inf if timeout is None else timeout) as scope:
            await t.ready.wait()
            t.raise_error()
            lo, hi = check_range(start, end, t.size, clamp_end)
            await t.wait_range(lo, hi)
        if scope.cancelled_caught:
            raise TransferError(f"sha1://{t.sha1}: the range did not arrive within {timeout:g} s "
                                f"(from {t.source or 'its sources'})")
        path = t.path or t.part_path
        assert path is not None
        try:
            f = open(path, "rb")
        except FileNotFoundError:              # renamed into the store meanwhile
            await t.done.wait()
            t.raise_error()
            assert t.path is not None
            f = open(t.path, "rb")
        running = t if t.path is None else None
        if running is not None:
            running.hold()                     # before the wait's hold goes: never unheld between
    return OpenRange(f, t.size, lo, hi, running)


def open_local_range(path: os.PathLike[str], start: int | None, end: int | None, clamp_end: bool) -> OpenRange:
    f = open(path, "rb")
    try:
        size = os.fstat(f.fileno()).st_size
        lo, hi = check_range(start, end, size, clamp_end)
    except BaseException:
        f.close()
        raise
    return OpenRange(f, size, lo, hi)
