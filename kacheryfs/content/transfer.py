"""One transfer of one blob (the fetcher runs it, fetcher.py): its chunk plan, which chunks are
verified, who waits for it, and the writes of its download threads into the part file.

Readers call `wait_range(start, end)`: the chunks covering the range jump the queue, and the call
returns as soon as they are verified. Whoever waits holds the transfer (`held()`); the fetcher
abandons one nobody holds for its grace period. `stop_writes` makes every download thread of the
transfer write nothing more (checked under the same lock as each write), so an abandoned thread
that finishes later never touches a part file a new transfer is using.
"""

from __future__ import annotations

import copy
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from kachery_client.errors import KacheryError, LocalStorageError
from kachery_client.storage_errors import local_storage_error
from kacheryfs.content.sources import Source, SourceError

ProgressFn = Callable[[int, int], None]


@dataclass
class Chunk:
    start: int
    end: int
    sha1: str | None            # None: a large file without a manifest; only the whole is checked


@dataclass
class Transfer:
    sha1: str
    size: int = 0
    chunks: list[Chunk] = field(default_factory=list)
    part_path: Path | None = None
    present: list[bool] = field(default_factory=list)
    ready: trio.Event = field(default_factory=trio.Event)       # size and chunk plan are known
    done: trio.Event = field(default_factory=trio.Event)
    path: Path | None = None                                     # the published blob
    error: KacheryError | None = None
    progress: list[ProgressFn] = field(default_factory=list)
    source: str | None = None                                    # label of the best source
    started: float = field(default_factory=time.monotonic)
    waiters: int = 0                                             # holders: see held()
    abandoned: bool = False
    _changed: trio.Event = field(default_factory=trio.Event)     # waiters changed, or done
    _write_lock: threading.Lock = field(default_factory=threading.Lock)
    _scope: trio.CancelScope | None = None
    _events: list[trio.Event] = field(default_factory=list)
    _urgent: list[int] = field(default_factory=list)
    _queue: list[int] = field(default_factory=list)
    _in_flight: set[int] = field(default_factory=set)
    # Download progress for the whole-file hash that follows it (whole_hash.py): per chunk, the
    # number of download attempts begun and the bytes the current one has written.
    _progress: threading.Condition = field(default_factory=threading.Condition)
    _attempts: list[int] = field(default_factory=list)
    _written: list[int] = field(default_factory=list)
    _hash_stopped: bool = False
    _following: int = -1            # the chunk the whole-file hash waits on: only its writes wake it
    hashed: int = 0                 # bytes from the file's start in the whole-file hash so far

    @property
    def bytes_present(self) -> int:
        if self.path is not None:
            return self.size
        return sum(c.end - c.start for c, p in zip(self.chunks, self.present, strict=True) if p)

    @contextmanager
    def held(self) -> Iterator[Transfer]:
        """Keep the transfer going while the block runs (someone waits for its bytes)."""
        self.hold()
        try:
            yield self
        finally:
            self.release()

    def hold(self) -> None:
        self.waiters += 1
        self._wake()

    def release(self) -> None:
        self.waiters -= 1
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def stop_writes(self) -> bool:
        """Download threads write nothing after this (they check under the same lock)."""
        with self._write_lock:
            already = self.abandoned
            self.abandoned = True
        return not already

    def begin_attempt(self, i: int) -> int:
        """A download of chunk i starts (over whatever an earlier attempt wrote)."""
        with self._progress:
            self._attempts[i] += 1
            self._written[i] = 0
            self._progress.notify_all()
            return self._attempts[i]

    def note_written(self, i: int, attempt: int, written: int) -> None:
        with self._progress:
            if self._attempts[i] == attempt:
                self._written[i] = written
                if i == self._following:
                    self._progress.notify_all()

    def note_present(self) -> None:
        """Called on the loop after marking a chunk present (the lock is never held across I/O)."""
        with self._progress:
            self._progress.notify_all()

    def stop_hashing(self) -> None:
        with self._progress:
            self._hash_stopped = True
            self._progress.notify_all()

    def wait_written(self, i: int, attempt: int | None, done: int, timeout: float) -> tuple[int, int, bool]:
        """(attempt, bytes written, present) of chunk i once any differs from what the caller has
        (`attempt`, `done` bytes, not present). Raises Stopped after stop_hashing."""
        with self._progress:
            while True:
                if self._hash_stopped:
                    raise Stopped(f"hashing of sha1://{self.sha1} stopped")
                now = self._attempts[i], self._written[i], self.present[i]
                if now[0] != attempt or now[1] > done or now[2]:
                    return now
                self._following = i
                self._progress.wait(timeout)

    def raise_error(self) -> None:
        if self.error is not None:
            raise copy.copy(self.error).with_traceback(None)     # keeps LocalStorageError.errno

    async def wait_range(self, start: int, end: int) -> None:
        """Return once bytes [start, end) are verified in the part file (or the blob is published)."""
        await self.ready.wait()
        self.raise_error()
        if self.path is not None:
            return
        wanted = [i for i, c in enumerate(self.chunks) if c.start < end and c.end > start]
        if any(self.chunks[i].sha1 is None for i in wanted):      # only the whole file is checkable
            await self.done.wait()
            self.raise_error()
            return
        self._urgent[:0] = [i for i in wanted if not self.present[i]]
        for i in wanted:
            await self._events[i].wait()
            self.raise_error()

    def _plan(self, size: int, chunks: list[Chunk], part_path: Path, present: set[int]) -> None:
        self.size, self.chunks, self.part_path = size, chunks, part_path
        self.present = [i in present for i in range(len(chunks))]
        self._attempts = [0] * len(chunks)
        self._written = [c.end - c.start if i in present else 0 for i, c in enumerate(chunks)]
        self._events = [trio.Event() for _ in chunks]
        for i in present:
            self._events[i].set()
        self._queue = [i for i in range(len(chunks)) if i not in present]
        self.ready.set()

    def _next_chunk(self) -> int | None:
        for pool in (self._urgent, self._queue):
            while pool:
                i = pool.pop(0)
                if not self.present[i] and i not in self._in_flight:
                    self._in_flight.add(i)
                    return i
        return None

    def _finish(self, path: Path | None, error: KacheryError | None) -> None:
        self.path, self.error = path, error
        self.ready.set()
        for e in self._events:
            e.set()
        self.done.set()
        self._changed.set()


class Stopped(SourceError):
    pass


class FdHandoff:
    """A descriptor handed to a thread that may never start (cancelled first): whoever comes first,
    the thread (take) or the loop (reclaim), owns it; the owner closes it."""

    def __init__(self, fd: int):
        self._fd: int | None = fd
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is None:
            raise Stopped("the transfer was stopped before this download started")
        return fd

    def reclaim(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def download_chunk(source: Source, t: Transfer, i: int, handoff: FdHandoff) -> str:
    """Stream chunk i into the part file at its offset, hashing it in the same pass, and report
    each block written (the whole-file hash follows them).

    A write the local disk refuses is a LocalStorageError, whatever the source wraps it in: it fails
    the transfer without counting against the source."""
    fd = handoff.take()
    chunk = t.chunks[i]
    attempt = t.begin_attempt(i)
    h = hashlib.sha1()
    pos = chunk.start
    refused: LocalStorageError | None = None

    def sink(view: memoryview) -> None:
        nonlocal pos, refused
        h.update(view)
        with t._write_lock:
            if t.abandoned:
                raise Stopped("the transfer was abandoned")
            while len(view):
                try:
                    n = os.pwrite(fd, view, pos)
                except OSError as e:
                    refused = local_storage_error(e, "the partial/ directory") or \
                        LocalStorageError(f"cannot write a part file: {e}", e.errno)
                    raise refused from None
                pos += n
                view = view[n:]
        t.note_written(i, attempt, pos - chunk.start)
    try:
        source.read_range(t.sha1, chunk.start, chunk.end, sink)
    except Exception:
        if refused is not None:
            raise refused from None
        raise
    finally:
        os.close(fd)
    return h.hexdigest()
