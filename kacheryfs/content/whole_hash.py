"""The whole file's SHA-1 of a transfer, computed in order while its chunks still arrive.

One thread follows the download of the next chunk in file order byte by byte (the download threads
report each block written, transfer.Transfer.note_written), reading it back from the part file
(page cache) into one reused buffer. So the hash starts with the first block instead of the first
whole chunk, and ends soon after the last byte instead of one in-order pass later.

The bytes it has hashed of a chunk belong to one download attempt of that chunk. If another attempt
starts (the first failed, or its bytes did not match the chunk's hash), the hash goes back to the
state it had at the chunk's start and follows the new attempt. A chunk counts only once the fetcher
marked it present (verified) and the attempt followed is that verified one, so the result is the
hash of the verified bytes; the fetcher still compares it with the blob's hash before publishing.
"""

from __future__ import annotations

import hashlib
import os

from kachery_client.errors import IntegrityError
from kacheryfs.content.partfile import HASH_BLOCK, hash_range
from kacheryfs.content.transfer import FdHandoff, Stopped, Transfer

WAIT_SLICE = 1.0        # seconds between checks of `stop` while nothing is written (belt and braces)


def hash_following(t: Transfer, handoff: FdHandoff) -> str:
    """Run in a thread: the hex SHA-1 of the whole file, once every chunk is present. Raises
    Stopped once the transfer stops hashing (`Transfer.stop_hashing`)."""
    fd = handoff.take()
    try:
        buf = bytearray(HASH_BLOCK)
        h = hashlib.sha1()
        for i, chunk in enumerate(t.chunks):
            length = chunk.end - chunk.start
            at_start = h.copy()
            followed: int | None = None        # the download attempt whose bytes are in `h`
            done = 0                           # bytes of the chunk in `h`
            while True:
                attempt, written, present = t.wait_written(i, followed, done, WAIT_SLICE)
                if attempt != followed:
                    if done:
                        h, done = at_start.copy(), 0
                        t.hashed = chunk.start
                    followed = attempt
                    continue
                if written > done:
                    hash_range(h, fd, chunk.start + done, chunk.start + written, buf)
                    done = written
                    t.hashed = chunk.start + done
                    continue
                if present:
                    if done != length:      # a verified chunk is whole: never, but never spin
                        raise IntegrityError(f"chunk {i} of sha1://{t.sha1} is present with {done} of {length} bytes")
                    break
        return h.hexdigest()
    finally:
        os.close(fd)


__all__ = ["Stopped", "hash_following"]
