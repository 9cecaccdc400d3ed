"""BlobWriter: bytes streamed into a temp file under tmp/, hashed in the same pass, published by
`commit` under their hash (store.py holds the Store it writes into; durability.py says when the
blob is durable). Every OSError of the write side is raised as LocalStorageError, and the temp file
is removed."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import errno
import mmap
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .durability import start_write_back, storage_error, write_back_dropping
from .errors import IntegrityError
from .hashing import ContentHasher
from .store_files import unlink_quietly, writev_all

if TYPE_CHECKING:
    from .store import Store

BLOB_MODE = 0o644

# Large writes start their write-back every EARLY_FLUSH bytes, so the disk works while later bytes
# are still being hashed: by default without waiting (sync_file_range; the flush makes them
# durable), with KACHERY_SYNC=always as a background fdatasync, so the final fsync has only the tail.
EARLY_FLUSH = 64 * 1024 * 1024
# copy_from: blocks copied in the kernel and hashed from the temp file, one hashed while the next
# is copied. Offsets stay multiples of the page size (mmap needs that).
COPY_BLOCK = 16 * 1024 * 1024
COPY_AHEAD = 3                  # blocks copied and queued for hashing before the copy waits
_MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0)
_NO_COPY_RANGE = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF}
_flush_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kachery-flush")
# drop_behind waits for the disk: in a thread of its own, so that no other writer's commit waits
# behind an ingest's write-back.
_drop_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kachery-drop")


@dataclass
class _QueuedBlock:
    """A copied block, mapped, and the hashes queued on it: unmapped once they are done."""
    block: mmap.mmap
    view: memoryview
    hashes: list[concurrent.futures.Future[None]]

    def finish(self) -> None:
        try:
            for h in self.hashes:
                h.result()
        finally:
            concurrent.futures.wait(self.hashes)     # after an error too: no thread reads it any more
            self.view.release()
            with contextlib.suppress(BufferError):
                self.block.close()          # else unmapped when the hash threads drop their view


@dataclass(frozen=True)
class StoredBlob:
    sha1: str
    size: int
    manifest_sha1: str | None = None


class BlobWriter:
    """Streams bytes into a temp file while hashing them; `commit` publishes the blob.

    Use as a context manager: leaving the block without commit (an exception) removes the
    temp file. If `expected_sha1` is given, commit refuses other content (IntegrityError).
    `drop_behind`: what is written is dropped from the page cache once on disk
    (durability.write_back_dropping), for ingests nobody reads back soon (the mount's incoming/).
    """

    def __init__(self, store: Store, expected_sha1: str | None = None, manifest: bool = True,
                 drop_behind: bool = False):
        self._store = store
        self._expected = expected_sha1
        self._drop_behind = drop_behind
        self._behind: tuple[int, int] | None = None      # the range written back last (drop_behind)
        self.hasher = ContentHasher(chunks=manifest)
        self.tmp_path, fd = store.create_temp()
        self._fd: int | None = fd
        self._unflushed = 0
        self._flush: concurrent.futures.Future[None] | None = None

    @property
    def size(self) -> int:
        return self.hasher.size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.write_parts([data])

    def write_parts(self, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        """Write `parts` in order, as if joined: one writev, no copy to join them (the mount's
        incoming/ hands its FUSE write buffers on as they came)."""
        fd = self._fd
        assert fd is not None, "write after commit or abort"
        before = self.hasher.size
        try:
            if self._flush is not None and self._flush.done():
                self._wait_flush()          # raises what a finished early flush hit
            self.hasher.update_parts(parts, alongside=lambda views: writev_all(fd, views))
            self._wrote(self.hasher.size - before)
        except OSError as e:
            self.abort()
            raise storage_error(e, f"cannot write {self.tmp_path}") from None

    def copy_from(self, src_fd: int, progress: Callable[[int], None] | None = None) -> bool:
        """Copy all of the regular file `src_fd` in the kernel (copy_file_range: no trip through
        this process), hashing each block from the temp file itself (mapped) while later blocks
        are copied: the bytes hashed are the bytes stored, and the source is read once. The two
        hash threads take the blocks in order from a queue up to COPY_AHEAD blocks long, so that
        neither waits for the other or for the copy. False if the kernel cannot copy between these
        files (nothing written): the caller streams instead."""
        fd = self._fd
        assert fd is not None and self.hasher.size == 0, "copy_from on a used writer"
        try:
            n = self._copy_block(src_fd, fd, 0)
        except OSError as e:
            if e.errno in _NO_COPY_RANGE:
                return False
            self.abort()
            raise storage_error(e, f"cannot write {self.tmp_path}") from None
        queued: collections.deque[_QueuedBlock] = collections.deque()
        off = 0
        try:
            try:
                while n:
                    block = mmap.mmap(fd, n, flags=mmap.MAP_SHARED | _MAP_POPULATE, prot=mmap.PROT_READ,
                                      offset=off)
                    view = memoryview(block)
                    queued.append(_QueuedBlock(block, view, self.hasher.update_later([view])))
                    off += n
                    self._wrote(n)
                    n = self._copy_block(src_fd, fd, off)      # while the hash threads hash
                    while len(queued) > COPY_AHEAD:
                        queued.popleft().finish()
                    if progress:
                        progress(off)
            finally:
                while queued:                                   # never unmap under a hash thread
                    queued.popleft().finish()
        except OSError as e:
            self.abort()
            raise storage_error(e, f"cannot write {self.tmp_path}") from None
        return True

    @staticmethod
    def _copy_block(src_fd: int, fd: int, off: int) -> int:
        """Copy COPY_BLOCK bytes (fewer at the end of the file) at `off`; the count copied."""
        done = 0
        while done < COPY_BLOCK:
            n = os.copy_file_range(src_fd, fd, COPY_BLOCK - done, off + done, off + done)
            if n == 0:
                break
            done += n
        return done

    def _wrote(self, n: int) -> None:
        fd = self._fd
        assert fd is not None
        self._unflushed += n
        if self._flush is not None and self._flush.done():
            self._wait_flush()              # raises what a finished early flush hit
        if self._unflushed >= EARLY_FLUSH:
            if not self._store.sync_always:
                # In the flush thread: sync_file_range blocks while the device queue is full, and
                # the writer should go on copying meanwhile. A range whose turn comes while the
                # last one still runs goes with the next.
                if self._flush is None:
                    written = (self.hasher.size - self._unflushed, self._unflushed)
                    if self._drop_behind:
                        self._flush = _drop_pool.submit(write_back_dropping, fd, *written, self._behind)
                        self._behind = written
                    else:
                        self._flush = _flush_pool.submit(start_write_back, fd, *written)
                    self._unflushed = 0
            elif self._flush is None:
                self._flush = _flush_pool.submit(os.fdatasync, fd)
                self._unflushed = 0

    def _wait_flush(self) -> None:
        """Wait for the background fdatasync (it must not outlive the descriptor); re-raise its
        error: a failed write-back fails the store."""
        flush, self._flush = self._flush, None
        if flush is not None:
            flush.result()

    def commit(self) -> StoredBlob:
        assert self._fd is not None, "commit after commit or abort"
        sha1 = self.hasher.sha1()
        if self._expected is not None and sha1 != self._expected:
            self.abort()
            raise IntegrityError(f"content hashes to {sha1}, expected {self._expected}")
        fd, self._fd = self._fd, None
        size = self.hasher.size
        try:
            try:
                self._wait_flush()
                final = self._store.path_for(sha1)
                if self._store._claim(final, sha1, size):
                    pass                    # already stored, now claimed: drop our copy unsynced
                else:
                    os.fchmod(fd, BLOB_MODE)
                    if self._store.sync_always:
                        os.fsync(fd)
                    os.close(fd)
                    fd = -1
                    self._store._publish_unsynced(self.tmp_path, final, sha1, size)
            finally:
                if fd >= 0:
                    os.close(fd)
                    unlink_quietly(self.tmp_path)
        except OSError as e:
            unlink_quietly(self.tmp_path)
            raise storage_error(e, f"cannot store sha1://{sha1} in {self._store.root}") from None
        except BaseException:
            unlink_quietly(self.tmp_path)
            raise
        manifest = self.hasher.manifest_bytes()
        manifest_sha1 = self._store.add_bytes(manifest).sha1 if manifest is not None else None
        return StoredBlob(sha1, size, manifest_sha1)

    def abort(self) -> None:
        if self._fd is not None:
            try:
                self._wait_flush()
            except OSError:
                pass                        # discarding anyway
            os.close(self._fd)
            self._fd = None
            unlink_quietly(self.tmp_path)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()
