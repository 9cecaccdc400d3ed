"""The fetcher: `ensure(sha1)` makes a blob local, from the peers and buckets of the node's channels.

Single flight: at most one Transfer per hash; every caller waits for the same one, and a caller
that gives up (a cancelled request) does not stop it. Transfers run in the fetcher's own nursery
(`run`, started by the daemon). A Transfer:

 1. asks every source for the blob's size, all at once in worker threads; keeps those that have
    it, peers before buckets, quickest answer first;
 2. plans chunks: one for a file of up to CHUNK_SIZE bytes (its hash is the file's); else the
    chunks of its manifest (docs/PROTOCOL.md section 7; fetched as a blob itself, and checked to be
    the manifest of this hash);
 3. downloads chunks into <storage>/partial/<sha1>.part with `connections` workers, each chunk
    streamed, written and hashed in one pass in a thread. A chunk that hashes wrong is discarded
    and its source dropped from this transfer (it served bad bytes); a source that fails is
    retried with backoff, then dropped. A verified chunk is readable at once; in the background
    it is fdatasync'ed, then its index appended to <sha1>.chunks: after a crash or stop the next
    transfer resumes from those;
 4. hashes the whole file in order while chunks arrive, and publishes it into the store only
    if that matches too. Nothing unverified is ever served.

Readers that want part of a file before the end (the mount) call `open_transfer` and then
`Transfer.wait_range(start, end)`: the chunks covering the range jump the queue, and the call
returns as soon as they are verified.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from kachery_client.errors import IntegrityError, KacheryError, NotFoundError, TransferError
from kachery_client.hashing import CHUNK_SIZE, parse_manifest
from kachery_client.store import Store
from kachery_client.uri import check_sha1
from kacheryfs.background import BackgroundHost
from kacheryfs.content.sources import RemoteBlob, Source, SourceError, SourceRefused

log = logging.getLogger(__name__)

STAT_TIMEOUT = 15.0
MAX_SOURCE_FAILURES = 3          # consecutive failures before a source is dropped from a transfer
BACKOFF_BASE = 0.2               # seconds, doubled per failure
HASH_BLOCK = 8 << 20
BAD_BYTES_STRIKES = 2            # a source that serves bad bytes this often is dropped
_RECORD_RE = re.compile(r"^chunk (\d+)\n$")
ProgressFn = Callable[[int, int], None]
FetchedFn = Callable[[str, int, str], None]        # (sha1, size, source label): the blob is now local


class NotOnAnySource(NotFoundError):
    """No source has the content; the message names each source asked and what it answered."""


@dataclass
class Chunk:
    start: int
    end: int
    sha1: str | None            # None: a large file without a manifest; only the whole is checked


@dataclass
class SourceState:
    source: Source
    failures: int = 0
    bad_bytes: int = 0
    dropped: str | None = None       # why it is out of this transfer


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
    _events: list[trio.Event] = field(default_factory=list)
    _urgent: list[int] = field(default_factory=list)
    _queue: list[int] = field(default_factory=list)
    _in_flight: set[int] = field(default_factory=set)

    @property
    def bytes_present(self) -> int:
        if self.path is not None:
            return self.size
        return sum(c.end - c.start for c, p in zip(self.chunks, self.present, strict=True) if p)

    def raise_error(self) -> None:
        if self.error is not None:
            raise type(self.error)(str(self.error))

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


class Fetcher(BackgroundHost):
    def __init__(self, store: Store, sources: Sequence[Source], *, connections: int = 4,
                 partial_dir: Path | None = None, on_fetched: FetchedFn | None = None):
        super().__init__()
        self.store = store
        self.sources = list(sources)
        self.connections = connections
        self.partial_dir = partial_dir or store.root / "partial"
        self.on_fetched = on_fetched
        self._transfers: dict[str, Transfer] = {}     # run() hosts them; partial files outlive a stop

    # ---- the API the node calls ----------------------------------------------------------

    async def ensure(self, sha1: str, manifest_sha1: str | None = None,
                     progress: ProgressFn | None = None) -> Path:
        t = self.open_transfer(check_sha1(sha1), manifest_sha1)
        if progress is not None:
            t.progress.append(progress)
        await t.done.wait()
        t.raise_error()
        assert t.path is not None
        return t.path

    def open_transfer(self, sha1: str, manifest_sha1: str | None = None) -> Transfer:
        """The running transfer of this hash, or a new one (single flight)."""
        t = self._transfers.get(sha1)
        if t is None:
            t = self._transfers[sha1] = Transfer(sha1)
            self.start_soon(self._run_transfer, t, manifest_sha1)
        return t

    def transfer(self, sha1: str) -> Transfer | None:
        return self._transfers.get(sha1)

    # ---- one transfer --------------------------------------------------------------------

    async def _run_transfer(self, t: Transfer, manifest_sha1: str | None) -> None:
        started = time.monotonic()
        try:
            path = await self._fetch(t, manifest_sha1)
        except KacheryError as e:
            log.warning("fetch of sha1://%s failed: %s", t.sha1, e)
            t._finish(None, e)
        except Exception as e:       # a bug: fail this transfer, keep the node
            log.exception("fetch of sha1://%s crashed", t.sha1)
            t._finish(None, TransferError(f"internal error fetching sha1://{t.sha1}: {e}"))
        else:
            log.info("fetched sha1://%s (%d bytes) in %.2f s", t.sha1, t.size, time.monotonic() - started)
            t._finish(path, None)
        finally:
            self._transfers.pop(t.sha1, None)

    async def _fetch(self, t: Transfer, manifest_sha1: str | None) -> Path:
        local = await trio.to_thread.run_sync(self.store.locate, t.sha1)
        if local is not None:
            t._plan(os.stat(local).st_size, [], local, set())
            return local
        found = await self._find(t.sha1)
        size = found[0][1].size
        sources = [SourceState(s) for s, info in found if info.size == size]
        if manifest_sha1 is None:
            manifest_sha1 = next((info.manifest_sha1 for _, info in found if info.manifest_sha1), None)
        chunks = await self._plan_chunks(t.sha1, size, manifest_sha1)
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        part = self.partial_dir / f"{t.sha1}.part"
        record = self.partial_dir / f"{t.sha1}.chunks"
        present = await trio.to_thread.run_sync(_resume, part, record, size, chunks, manifest_sha1)
        if present:
            log.info("resuming sha1://%s with %d of %d chunks already verified", t.sha1, len(present), len(chunks))
        fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, size)
            t._plan(size, chunks, part, present)      # readers may open the part file from here on
            with open(record, "a") as rec:
                try:
                    async with trio.open_nursery() as nursery:
                        for _ in range(min(self.connections, max(1, len(chunks)))):
                            nursery.start_soon(self._worker, t, sources, fd, rec, nursery)
                        whole = await self._hash_in_order(t, fd)
                except BaseExceptionGroup as group:
                    raise _first_error(group) from None
            if whole != t.sha1:
                await trio.to_thread.run_sync(_remove, part, record)
                raise IntegrityError(f"sha1://{t.sha1}: the assembled file hashes to {whole}; discarded")
            await trio.to_thread.run_sync(os.fsync, fd)
        finally:
            os.close(fd)
        path = await trio.to_thread.run_sync(self.store.publish_verified, part, t.sha1)
        await trio.to_thread.run_sync(_remove, record)
        if self.on_fetched is not None:
            self.on_fetched(t.sha1, size, sources[0].source.label)
        return path

    async def _find(self, sha1: str) -> list[tuple[Source, RemoteBlob]]:
        """Sources that have the blob: peers first, then buckets, each group quickest first."""
        answers: list[tuple[float, Source, RemoteBlob]] = []
        problems: list[str] = []
        told = {s.label: f"no answer within {STAT_TIMEOUT:g} s" for s in self.sources}

        async def ask(source: Source) -> None:
            t0 = time.monotonic()
            try:
                info = await trio.to_thread.run_sync(source.stat, sha1, abandon_on_cancel=True)
            except SourceError as e:
                problems.append(str(e))
                told[source.label] = str(e)
                return
            told[source.label] = "has it" if info is not None else "not found"
            if info is not None:
                answers.append((time.monotonic() - t0, source, info))

        with trio.move_on_after(STAT_TIMEOUT):
            async with trio.open_nursery() as nursery:
                for s in self.sources:
                    nursery.start_soon(ask, s)
        if not answers:
            where = "; ".join(problems)
            if problems and len(problems) == len(self.sources):
                raise TransferError(f"sha1://{sha1}: no source could be asked: {where}")
            raise NotOnAnySource(f"sha1://{sha1} is not on this node nor on any of its {len(self.sources)} "
                                 "sources; asked: " + "; ".join(f"{k}: {v}" for k, v in told.items()))
        answers.sort(key=lambda a: (a[1].kind != "peer", a[0]))
        return [(s, info) for _, s, info in answers]

    async def _plan_chunks(self, sha1: str, size: int, manifest_sha1: str | None) -> list[Chunk]:
        if size <= CHUNK_SIZE:
            return [Chunk(0, size, sha1)] if size else []
        if manifest_sha1 is None:
            log.warning("sha1://%s has no manifest on any source: only the whole file can be verified", sha1)
            return [Chunk(s, min(s + CHUNK_SIZE, size), None) for s in range(0, size, CHUNK_SIZE)]
        manifest_path = await self.ensure(manifest_sha1)
        data = await trio.to_thread.run_sync(manifest_path.read_bytes)
        m = parse_manifest(data, expected_sha1=sha1)
        if m.size != size:
            raise IntegrityError(f"manifest of sha1://{sha1} says {m.size} bytes, the sources {size}")
        return [Chunk(s, e, h) for s, e, h in m.chunks]

    async def _worker(self, t: Transfer, sources: list[SourceState], fd: int, record: Any,
                      nursery: trio.Nursery) -> None:
        while (i := t._next_chunk()) is not None:
            try:
                await self._fetch_chunk(t, i, sources, fd)
            finally:
                t._in_flight.discard(i)
            # Verified: readers may have it now (from the page cache); the worker moves on while
            # the chunk is made durable and recorded for a resume.
            t.present[i] = True
            t._events[i].set()
            done = t.bytes_present
            for fn in t.progress:
                fn(done, t.size)
            if t.chunks[i].sha1 is not None:
                nursery.start_soon(_record_chunk, fd, record, i)

    async def _fetch_chunk(self, t: Transfer, i: int, sources: list[SourceState], fd: int) -> None:
        chunk = t.chunks[i]
        turn = 0
        while True:
            live = [s for s in sources if s.dropped is None]
            if not live:
                reasons = "; ".join(f"{s.source.label}: {s.dropped}" for s in sources)
                raise TransferError(f"sha1://{t.sha1}: every source failed: {reasons}")
            # The best source first (peers, quickest first, then buckets); a retry of the same
            # chunk tries the next one, so a source with one bad chunk still serves the others.
            state = live[turn % len(live)]
            turn += 1
            try:
                digest = await trio.to_thread.run_sync(_download, state.source, t.sha1, chunk, fd)
            except SourceRefused as e:
                state.dropped = str(e)
                continue
            except SourceError as e:
                state.failures += 1
                log.info("chunk %d of sha1://%s from %s failed (%d): %s", i, t.sha1, state.source.label,
                         state.failures, e)
                if state.failures >= MAX_SOURCE_FAILURES:
                    state.dropped = f"failed {state.failures} times; last: {e}"
                else:
                    await trio.sleep(BACKOFF_BASE * 2 ** (state.failures - 1))
                continue
            if chunk.sha1 is not None and digest != chunk.sha1:
                state.bad_bytes += 1
                log.warning("%s served bad bytes for chunk %d of sha1://%s (%d); discarded",
                            state.source.label, i, t.sha1, state.bad_bytes)
                if state.bad_bytes >= BAD_BYTES_STRIKES:
                    state.dropped = f"served bad bytes for chunk {i}"
                continue
            state.failures = 0
            return

    async def _hash_in_order(self, t: Transfer, fd: int) -> str:
        """The whole file's SHA-1, computed chunk by chunk as they become present."""
        if len(t.chunks) == 1 and t.chunks[0].sha1 is not None:
            await t._events[0].wait()
            t.raise_error()
            return t.chunks[0].sha1            # the one chunk was verified against the file's hash
        h = hashlib.sha1()
        for i, chunk in enumerate(t.chunks):
            await t._events[i].wait()
            await trio.to_thread.run_sync(_hash_range, h, fd, chunk.start, chunk.end)
        return h.hexdigest()


async def _record_chunk(fd: int, record: Any, i: int) -> None:
    """A verified chunk is listed for a resume only once its bytes are on disk."""
    await trio.to_thread.run_sync(os.fdatasync, fd)
    record.write(f"chunk {i}\n")
    record.flush()


def _download(source: Source, sha1: str, chunk: Chunk, fd: int) -> str:
    """Stream one chunk into the part file at its offset, hashing it in the same pass."""
    h = hashlib.sha1()
    pos = chunk.start

    def sink(view: memoryview) -> None:
        nonlocal pos
        h.update(view)
        while len(view):
            n = os.pwrite(fd, view, pos)
            pos += n
            view = view[n:]
    source.read_range(sha1, chunk.start, chunk.end, sink)
    return h.hexdigest()


def _hash_range(h: Any, fd: int, start: int, end: int) -> None:
    pos = start
    while pos < end:
        block = os.pread(fd, min(HASH_BLOCK, end - pos), pos)
        if not block:
            raise IntegrityError("part file shorter than planned")
        h.update(block)
        pos += len(block)


def _resume(part: Path, record: Path, size: int, chunks: list[Chunk], manifest_sha1: str | None) -> set[int]:
    """Chunks verified by an earlier, interrupted transfer of the same plan."""
    header = f"plan {manifest_sha1 or '-'} {size}\n"
    try:
        lines = record.read_text().splitlines(keepends=True)
        if part.stat().st_size == size and lines and lines[0] == header:
            # Whole lines only: a torn append ("chu" + "chunk 2") never names a chunk.
            found = {int(m.group(1)) for x in lines[1:] if (m := _RECORD_RE.match(x))}
            return {i for i in found if i < len(chunks) and chunks[i].sha1 is not None}
    except (OSError, ValueError):
        pass
    _remove(part, record)
    record.write_text(header)
    return set()


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The error to report from a nursery's group: the first of ours, else the first."""
    leaves: list[BaseException] = []
    todo: list[BaseException] = [group]
    while todo:
        e = todo.pop(0)
        if isinstance(e, BaseExceptionGroup):
            todo[:0] = list(e.exceptions)
        else:
            leaves.append(e)
    return next((e for e in leaves if isinstance(e, KacheryError)), leaves[0])


def _remove(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass
