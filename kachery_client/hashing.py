"""Hashing content as it streams by: the SHA-1 of the whole, the SHA-1 of each chunk, the manifest.

A manifest (docs/PROTOCOL.md section 7) lists the SHA-1 of each CHUNK_SIZE chunk of a file larger
than one chunk, so that a reader can verify a range without the whole file. Pure: no file I/O.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import IntegrityError
from .uri import check_sha1

CHUNK_SIZE = 20_000_000          # manifest chunk size (docs/PROTOCOL.md section 7)
_PARALLEL_MIN = 1024 * 1024      # below this, hashing twice inline beats a thread hand-off

# Helper threads hash the whole file and its chunks while the caller writes: SHA-1 and write(2)
# release the GIL, so they run on separate cores. Each hash of each hasher is a _Lane: its blocks
# are hashed one at a time in the order given (update_later may queue several blocks ahead), while
# the lanes of other hashers and of the other hash use the pool's other threads.
_hash_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="kachery-hash")


class _Lane:
    """Work run one item at a time, in the order submitted, on the shared hash pool: one pool job
    drains the lane, and another is started only when the lane was idle."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: collections.deque[tuple[concurrent.futures.Future[None], Callable[[], None]]] = \
            collections.deque()
        self._busy = False

    def submit(self, work: Callable[[], None]) -> concurrent.futures.Future[None]:
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._lock:
            self._waiting.append((done, work))
            if self._busy:
                return done
            self._busy = True
        _hash_pool.submit(self._drain)
        return done

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._waiting:
                    self._busy = False
                    return
                done, work = self._waiting.popleft()
            if done.set_running_or_notify_cancel():
                try:
                    work()
                except BaseException as e:
                    done.set_exception(e)
                else:
                    done.set_result(None)


class ContentHasher:
    """SHA-1 of the whole stream plus the SHA-1 of each CHUNK_SIZE chunk, fed in one pass."""

    def __init__(self, chunks: bool = True) -> None:
        """`chunks=False`: the whole file's hash only (no manifest; one hash pass)."""
        self._with_chunks = chunks
        self._whole = hashlib.sha1()
        self._chunk = hashlib.sha1()
        self._chunk_fill = 0
        self.chunk_sha1s: list[str] = []
        self.size = 0
        self._whole_lane = _Lane()
        self._chunk_lane = _Lane()

    def update(self, data: bytes | bytearray | memoryview,
               alongside: Callable[[memoryview], None] | None = None) -> None:
        """Hash `data`; `alongside(view)` (e.g. writing it out) runs while the hashes run."""
        self.update_parts([data], None if alongside is None else lambda views: alongside(views[0]))

    def update_parts(self, parts: Sequence[bytes | bytearray | memoryview],
                     alongside: Callable[[list[memoryview]], None] | None = None) -> None:
        """Hash `parts` in order, as if joined (no copy to join them); `alongside(views)` runs while
        the hashes run (e.g. one writev of all of them)."""
        views = [memoryview(p).cast("B") for p in parts]
        total = sum(len(v) for v in views)
        if total >= _PARALLEL_MIN:
            # The hashes in helper threads, the copy (alongside) here: all at once.
            hashes = self.update_later(views)
            try:
                if alongside:
                    alongside(views)
            finally:
                for h in hashes:
                    h.result()
            return
        self._update_whole(views)
        if self._with_chunks:
            self._update_chunk_parts(views)
        if alongside:
            alongside(views)
        self.size += total

    def update_later(self, views: list[memoryview]) -> list[concurrent.futures.Future[None]]:
        """Queue `views` to be hashed after everything queued before; the caller keeps them
        unchanged (and mapped) until every future returned is done, and waits for them."""
        self.size += sum(len(v) for v in views)
        hashes = [self._whole_lane.submit(lambda: self._update_whole(views))]
        if self._with_chunks:
            hashes.append(self._chunk_lane.submit(lambda: self._update_chunk_parts(views)))
        return hashes

    def _update_whole(self, views: list[memoryview]) -> None:
        for view in views:
            self._whole.update(view)

    def _update_chunk_parts(self, views: list[memoryview]) -> None:
        for view in views:
            self._update_chunks(view)

    def _update_chunks(self, view: memoryview) -> None:
        while len(view):
            take = min(len(view), CHUNK_SIZE - self._chunk_fill)
            self._chunk.update(view[:take])
            self._chunk_fill += take
            view = view[take:]
            if self._chunk_fill == CHUNK_SIZE:
                self.chunk_sha1s.append(self._chunk.hexdigest())
                self._chunk = hashlib.sha1()
                self._chunk_fill = 0

    def sha1(self) -> str:
        return self._whole.hexdigest()

    def manifest_bytes(self) -> bytes | None:
        """The manifest (exact bytes of docs/PROTOCOL.md section 7), or None at one chunk or less."""
        if self.size <= CHUNK_SIZE or not self._with_chunks:
            return None
        hashes = list(self.chunk_sha1s)
        if self._chunk_fill:
            hashes.append(self._chunk.hexdigest())
        return manifest_bytes(self.size, self.sha1(), hashes)


def manifest_bytes(size: int, sha1: str, chunk_sha1s: list[str]) -> bytes:
    chunks = [{"start": i * CHUNK_SIZE, "end": min((i + 1) * CHUNK_SIZE, size), "sha1": h}
              for i, h in enumerate(chunk_sha1s)]
    return json.dumps({"size": size, "sha1": sha1, "chunks": chunks}, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Manifest:
    size: int
    sha1: str
    chunks: list[tuple[int, int, str]]      # (start, end, sha1)


def parse_manifest(data: bytes, expected_sha1: str | None = None) -> Manifest:
    """Accept any JSON with size, sha1 and chunks[{start,end,sha1}] (section 7); check it is whole."""
    try:
        obj = json.loads(data)
        chunks = [(int(c["start"]), int(c["end"]), check_sha1(c["sha1"])) for c in obj["chunks"]]
        m = Manifest(int(obj["size"]), check_sha1(obj["sha1"]), chunks)
    except (ValueError, KeyError, TypeError) as e:
        raise IntegrityError(f"malformed manifest: {e}") from None
    if expected_sha1 is not None and m.sha1 != expected_sha1:
        raise IntegrityError(f"manifest is for {m.sha1}, not {expected_sha1}")
    pos = 0
    for start, end, _ in m.chunks:
        if start != pos or end <= start:
            raise IntegrityError("manifest chunks do not tile the file")
        pos = end
    if pos != m.size:
        raise IntegrityError("manifest chunks do not cover the file")
    return m
