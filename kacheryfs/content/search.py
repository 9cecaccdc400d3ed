"""Asking every source whether it has a blob, and how big it is.

One search per hash at a time (single flight), bounded by `timeout`: a source that fails or does
not answer in time is recorded and named. If no source has the blob and any source could not be
asked, the answer is a TransferError naming those sources: a peer that hangs must read as "the
peer failed", never as "no such content". Only when every source answered "not here" is it a
NotFoundError.

Answers are remembered briefly (REMEMBER_FOUND / REMEMBER_FAILED seconds) so that the kernel's
lookups, getattrs and an open right after each other ask the network once, and a retried request
fails at once instead of waiting another timeout. The size alone (`size`) never starts a download:
`ls -l` and `stat` in the mount use it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio

from kachery_client.errors import KacheryError, NotFoundError, TransferError
from kacheryfs import metrics
from kacheryfs.content.sources import RemoteBlob, Source
from kacheryfs.content.whereis import ask_all

REMEMBER_FOUND = 30.0
REMEMBER_FAILED = 5.0
Found = list[tuple[Source, RemoteBlob]]
Spawn = Callable[..., None]          # start_soon(fn, *args) of a nursery that outlives the caller


@dataclass
class _Search:
    done: trio.Event = field(default_factory=trio.Event)
    found: Found | None = None
    error: KacheryError | None = None
    finished_at: float = 0.0


class SourceSearch:
    def __init__(self, sources: Sequence[Source], timeout: float):
        self.sources = list(sources)
        self.timeout = timeout
        # Keyed by (hash, manifest wanted): a search that asked for manifests also serves a caller
        # that has one; not the other way round.
        self._searches: dict[tuple[str, bool], _Search] = {}

    async def find(self, sha1: str, spawn: Spawn | None = None, need_manifest: bool = True) -> Found:
        """Sources that have the blob: peers first, then buckets, each group quickest first.

        `spawn` runs the search where a cancelled caller does not stop it (the fetcher's host).
        `need_manifest=False`: the caller has the manifest already; a peer that has none recorded
        answers without making one (a pass over the whole blob), docs/PROTOCOL.md section 20."""
        now = time.monotonic()
        s = None
        for key in [(sha1, True)] if need_manifest else [(sha1, True), (sha1, False)]:
            s = self._searches.get(key)
            if s is not None and s.done.is_set():
                keep = REMEMBER_FOUND if s.found is not None else REMEMBER_FAILED
                if now - s.finished_at > keep:
                    s = None
            if s is not None:
                break
        if s is None:
            s = self._searches[(sha1, need_manifest)] = _Search()
            if spawn is not None:
                spawn(self._run, sha1, s, need_manifest)
            else:
                await self._run(sha1, s, need_manifest)
        await s.done.wait()
        if s.error is not None:
            raise type(s.error)(str(s.error))
        assert s.found is not None
        return s.found

    async def size(self, sha1: str, spawn: Spawn | None = None) -> int:
        return (await self.find(sha1, spawn))[0][1].size

    def forget(self, sha1: str) -> None:
        """The blob is local now (or gone): the next search asks again."""
        self._searches.pop((sha1, True), None)
        self._searches.pop((sha1, False), None)

    async def _run(self, sha1: str, s: _Search, need_manifest: bool = True) -> None:
        try:
            s.found = await self._ask_all(sha1, need_manifest)
        except KacheryError as e:
            s.error = e
        finally:
            s.finished_at = time.monotonic()
            s.done.set()
            self._prune(s.finished_at)

    def _prune(self, now: float) -> None:
        old = [k for k, v in self._searches.items()
               if v.done.is_set() and now - v.finished_at > REMEMBER_FOUND]
        for k in old:
            del self._searches[k]

    async def _ask_all(self, sha1: str, need_manifest: bool) -> Found:
        answers = await ask_all(self.sources, sha1, self.timeout, need_manifest)   # in the order of self.sources
        found = [(a, src) for a, src in zip(answers, self.sources, strict=True) if a.found and a.size is not None]
        missing = [a for a in answers if not a.found and a.error is None]
        problems: dict[str, str] = {}
        for a in answers:
            if not a.answered:
                problems[a.source] = f"did not answer within {self.timeout:g} s"
            elif a.error is not None:
                problems[a.source] = _without_label(a.error, a.source)
                metrics.SOURCE_ERRORS.labels(a.kind, "refused" if a.refused else "failed").inc()
        if not found:
            if problems:
                raise TransferError(f"sha1://{sha1} could not be looked up: "
                                    + "; ".join(f"{label} {why}" for label, why in problems.items())
                                    + (f" ({len(missing)} other source(s) do not have it)" if missing else ""))
            raise NotFoundError(f"sha1://{sha1} is not on this node nor on any of its {len(self.sources)} sources "
                                "(asked: " + "; ".join(f"{a.source}: not found" for a in missing) + ")")
        found.sort(key=lambda f: (f[0].kind != "peer", f[0].seconds))
        return [(src, RemoteBlob(a.size, a.manifest_sha1)) for a, src in found if a.size is not None]


def _without_label(message: str, label: str) -> str:
    """Source errors start with the source's label; the search names the source itself."""
    for prefix in (label + ": ", label + " "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message
