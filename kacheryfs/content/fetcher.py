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
 4. hashes the whole file in order while the chunks arrive, following the download of the next
    chunk block by block (whole_hash.py), and publishes it into the store only if that matches
    too. Nothing unverified is ever served.

Readers that want part of a file before the end (the mount) call `open_transfer` and then
`Transfer.wait_range(start, end)`: the chunks covering the range jump the queue, and the call
returns as soon as they are verified.

Interest: whoever waits for a transfer holds it (`Transfer.held()`: `ensure` callers, open files
in the mount, ranged reads). A transfer nobody holds for `grace` seconds is abandoned: it stops
(its download threads write nothing more) and keeps its verified chunks in partial/ for a later
resume; partial/ is bounded (partial.py). The search for sources is search.py: a source that
fails or hangs there is a TransferError naming it, never "not found".
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from kachery_client.errors import IntegrityError, KacheryError, LocalStorageError, TransferError
from kachery_client.hashing import CHUNK_SIZE, parse_manifest
from kachery_client.storage_errors import storage_errors
from kachery_client.store import Store
from kachery_client.uri import check_sha1
from kacheryfs import metrics
from kacheryfs.background import BackgroundHost
from kacheryfs.content.partfile import record_chunk, remove, resume
from kacheryfs.content.partial import trim_partial
from kacheryfs.content.search import SourceSearch
from kacheryfs.content.sources import Source, SourceError, SourceRefused
from kacheryfs.content.transfer import Chunk, FdHandoff, ProgressFn, Transfer, download_chunk
from kacheryfs.content.whole_hash import hash_following
from kacheryfs.exception_groups import first_error

__all__ = ["Chunk", "Fetcher", "ProgressFn", "Transfer"]

log = logging.getLogger(__name__)

STAT_TIMEOUT = 15.0               # the longest a search for sources waits (less if --fetch-timeout is)
ABANDON_GRACE = 30.0             # seconds a transfer nobody waits for keeps going
PARTIAL_MAX_BYTES = 20 << 30
MAX_SOURCE_FAILURES = 3          # consecutive failures before a source is dropped from a transfer
BACKOFF_BASE = 0.2               # seconds, doubled per failure
BAD_BYTES_STRIKES = 2            # a source that serves bad bytes this often is dropped
# (sha1, size, source label, the manifest its chunks were checked against or None): the blob is now local
FetchedFn = Callable[[str, int, str, "str | None"], None]


@dataclass
class SourceState:
    source: Source
    failures: int = 0
    bad_bytes: int = 0
    dropped: str | None = None       # why it is out of this transfer


class Fetcher(BackgroundHost):
    def __init__(self, store: Store, sources: Sequence[Source], *, connections: int = 4,
                 partial_dir: Path | None = None, on_fetched: FetchedFn | None = None,
                 stat_timeout: float = STAT_TIMEOUT, grace: float = ABANDON_GRACE,
                 partial_max_bytes: int = PARTIAL_MAX_BYTES):
        super().__init__()
        self.store = store
        self.sources = list(sources)
        self.search = SourceSearch(self.sources, stat_timeout)
        self.grace = grace
        self.partial_max_bytes = partial_max_bytes
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
        with t.held():
            await t.done.wait()
        t.raise_error()
        assert t.path is not None
        return t.path

    def open_transfer(self, sha1: str, manifest_sha1: str | None = None) -> Transfer:
        """The running transfer of this hash, or a new one (single flight)."""
        previous = t = self._transfers.get(sha1)
        if t is None or t.abandoned:
            # An abandoned transfer still winding down: the new one starts once it is gone.
            t = self._transfers[sha1] = Transfer(sha1)
            self.start_soon(self._run_transfer, t, manifest_sha1, previous)
        return t

    def transfer(self, sha1: str) -> Transfer | None:
        return self._transfers.get(sha1)

    def in_progress(self) -> list[Transfer]:
        """The transfers in progress now (status page, /stats; read, never change them)."""
        return list(self._transfers.values())

    async def remote_size(self, sha1: str) -> int:
        """The size of a blob the sources have, without downloading it (NotFoundError if none
        has it, TransferError naming the sources that could not be asked)."""
        t = self._transfers.get(sha1)
        if t is not None and t.ready.is_set() and t.error is None:
            return t.size
        return await self.search.size(check_sha1(sha1), self.start_soon)

    # ---- one transfer --------------------------------------------------------------------

    async def _run_transfer(self, t: Transfer, manifest_sha1: str | None, previous: Transfer | None = None) -> None:
        if previous is not None and previous is not t:
            await previous.done.wait()
        started = t.started = time.monotonic()
        metrics.TRANSFERS_IN_PROGRESS.inc()
        try:
            with trio.CancelScope() as t._scope:
                self.start_soon(self._abandon_when_idle, t)
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
            if not t.done.is_set():
                log.info("sha1://%s abandoned after %.1f s (nobody waits for it); %d of %d bytes kept in "
                         "partial/ for a resume", t.sha1, time.monotonic() - started, t.bytes_present, t.size)
                t._finish(None, TransferError(f"the transfer of sha1://{t.sha1} was abandoned: nobody waited for it"))
        finally:
            if self._transfers.get(t.sha1) is t:
                del self._transfers[t.sha1]
            metrics.TRANSFERS_IN_PROGRESS.dec()
            if t.chunks or t.error is not None:        # not for a blob that turned out to be local
                metrics.FETCH_DURATION.labels("ok" if t.error is None else "error").observe(
                    time.monotonic() - started)
            if t.path is None:
                await trio.to_thread.run_sync(self._trim_partial)

    async def _abandon_when_idle(self, t: Transfer) -> None:
        """Stop the transfer once nobody has held it for `grace` seconds."""
        while not t.done.is_set():
            changed = t._changed
            if t.waiters > 0:
                await changed.wait()
                continue
            with trio.move_on_after(self.grace) as idle:
                await changed.wait()
            if idle.cancelled_caught and t.waiters == 0 and not t.done.is_set():
                t.stop_writes()
                assert t._scope is not None
                t._scope.cancel()
                return

    def _trim_partial(self) -> None:
        trim_partial(self.partial_dir, self.partial_max_bytes, set(self._transfers))

    async def _fetch(self, t: Transfer, manifest_sha1: str | None) -> Path:
        local = await trio.to_thread.run_sync(self.store.locate, t.sha1)
        if local is not None:
            t._plan(os.stat(local).st_size, [], local, set())
            return local
        found = await self.search.find(t.sha1, self.start_soon, need_manifest=manifest_sha1 is None)
        size = found[0][1].size
        sources = [SourceState(s) for s, info in found if info.size == size]
        t.source = sources[0].source.label
        if manifest_sha1 is None:
            manifest_sha1 = next((info.manifest_sha1 for _, info in found if info.manifest_sha1), None)
        chunks = await self._plan_chunks(t.sha1, size, manifest_sha1)
        part = self.partial_dir / f"{t.sha1}.part"
        record = self.partial_dir / f"{t.sha1}.chunks"
        try:
            with storage_errors(str(self.partial_dir)):
                self.partial_dir.mkdir(parents=True, exist_ok=True)
                await trio.to_thread.run_sync(self._trim_partial)
                present = await trio.to_thread.run_sync(resume, part, record, size, chunks, manifest_sha1)
                if present:
                    log.info("resuming sha1://%s with %d of %d chunks already verified", t.sha1, len(present),
                             len(chunks))
                fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                with storage_errors(str(self.partial_dir)):
                    os.ftruncate(fd, size)
                t._plan(size, chunks, part, present)      # readers may open the part file from here on
                with open(record, "a") as rec:
                    try:
                        async with trio.open_nursery() as nursery:
                            for _ in range(min(self.connections, max(1, len(chunks)))):
                                nursery.start_soon(self._worker, t, sources, fd, rec, nursery)
                            whole = await self._hash_in_order(t, fd)
                    except BaseExceptionGroup as group:
                        raise first_error(group) from None
                if whole != t.sha1:
                    await trio.to_thread.run_sync(remove, part, record)
                    raise IntegrityError(f"sha1://{t.sha1}: the assembled file hashes to {whole}; discarded")
            finally:
                os.close(fd)
            with storage_errors(str(self.store.root)):
                path = await trio.to_thread.run_sync(self.store.publish_verified, part, t.sha1)
        except LocalStorageError:
            # This disk refused the bytes (not the source's fault): free the space the part took;
            # the next transfer starts over.
            await trio.to_thread.run_sync(remove, part, record)
            raise
        await trio.to_thread.run_sync(remove, record)
        metrics.count_fetched(sources[0].source.kind)
        self.search.forget(t.sha1)
        if self.on_fetched is not None:
            self.on_fetched(t.sha1, size, sources[0].source.label, manifest_sha1 if len(chunks) > 1 else None)
        return path

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
            t.note_present()
            done = t.bytes_present
            for fn in t.progress:
                fn(done, t.size)
            if t.chunks[i].sha1 is not None:
                nursery.start_soon(record_chunk, fd, record, i)

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
                # Abandonable, so that a stopped transfer does not wait for a slow source; the
                # thread writes through its own descriptor and stops writing once told (stop_writes).
                handoff = FdHandoff(os.dup(fd))
                try:
                    digest = await trio.to_thread.run_sync(download_chunk, state.source, t, i, handoff,
                                                           abandon_on_cancel=True)
                finally:
                    handoff.reclaim()      # a thread that never started never uses it
            except SourceRefused as e:
                state.dropped = str(e)
                metrics.SOURCE_ERRORS.labels(state.source.kind, "refused").inc()
                continue
            except SourceError as e:
                metrics.SOURCE_ERRORS.labels(state.source.kind, "failed").inc()
                state.failures += 1
                log.info("chunk %d of sha1://%s from %s failed (%d): %s", i, t.sha1, state.source.label,
                         state.failures, e)
                if state.failures >= MAX_SOURCE_FAILURES:
                    state.dropped = f"failed {state.failures} times; last: {e}"
                else:
                    await trio.sleep(BACKOFF_BASE * 2 ** (state.failures - 1))
                continue
            if chunk.sha1 is not None and digest != chunk.sha1:
                metrics.CHUNK_VERIFICATION_FAILURES.labels(state.source.kind).inc()
                metrics.SOURCE_ERRORS.labels(state.source.kind, "bad_bytes").inc()
                state.bad_bytes += 1
                log.warning("%s served bad bytes for chunk %d of sha1://%s (%d); discarded",
                            state.source.label, i, t.sha1, state.bad_bytes)
                if state.bad_bytes >= BAD_BYTES_STRIKES:
                    state.dropped = f"served bad bytes for chunk {i}"
                continue
            state.failures = 0
            t.source = state.source.label
            metrics.FETCHED_BYTES.labels(state.source.kind).inc(chunk.end - chunk.start)
            return

    async def _hash_in_order(self, t: Transfer, fd: int) -> str:
        """The whole file's SHA-1, computed chunk by chunk as they become present."""
        if len(t.chunks) == 1 and t.chunks[0].sha1 is not None:
            await t._events[0].wait()
            t.raise_error()
            return t.chunks[0].sha1            # the one chunk was verified against the file's hash
        handoff = FdHandoff(os.dup(fd))
        try:
            return await trio.to_thread.run_sync(hash_following, t, handoff, abandon_on_cancel=True)
        finally:
            t.stop_hashing()          # an abandoned thread ends at its next look
            handoff.reclaim()

