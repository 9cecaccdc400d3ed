"""Where a content lives: ask every source at once (peers of every channel, every bucket), timed.

Each source answers found (with size and manifest), not found, or an error; the answers come back
in the order of the sources given. Used by `kachery-whereis`, by `kacheryfs drop` (numcopies) and
by the fetcher's search for sources (search.py).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

from kacheryfs.content.sources import Source, SourceError, SourceRefused

ASK_TIMEOUT = 15.0


@dataclass(frozen=True)
class Answer:
    source: str               # the source's label
    kind: str                 # "local", "peer" or "bucket"
    found: bool
    size: int | None = None
    manifest_sha1: str | None = None
    seconds: float = 0.0
    error: str | None = None
    refused: bool = False     # the error is the source refusing (credentials, membership), not failing
    answered: bool = True     # False: no answer within the timeout

    def as_json(self) -> dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "found": self.found, "size": self.size,
                "manifestSha1": self.manifest_sha1, "seconds": round(self.seconds, 4), "error": self.error}

    def describe(self) -> str:
        if self.error:
            return f"{self.source}: {self.error}"
        return f"{self.source}: {'has it' if self.found else 'not found'}"


async def ask_all(sources: Sequence[Source], sha1: str, timeout: float = ASK_TIMEOUT,
                  need_manifest: bool = True) -> list[Answer]:
    """`need_manifest=False`: the asker has the manifest (Source.stat)."""
    answers: list[Answer | None] = [None] * len(sources)

    async def ask(i: int, source: Source) -> None:
        t0 = time.monotonic()
        stat = source.stat if need_manifest else partial(source.stat, need_manifest=False)
        try:
            info = await trio.to_thread.run_sync(stat, sha1, abandon_on_cancel=True)
        except SourceError as e:
            answers[i] = Answer(source.label, source.kind, False, seconds=time.monotonic() - t0, error=str(e),
                                refused=isinstance(e, SourceRefused))
            return
        elapsed = time.monotonic() - t0
        answers[i] = Answer(source.label, source.kind, info is not None, info.size if info else None,
                            info.manifest_sha1 if info else None, elapsed)

    with trio.move_on_after(timeout):
        async with trio.open_nursery() as nursery:
            for i, s in enumerate(sources):
                nursery.start_soon(ask, i, s)
    return [a if a is not None else Answer(s.label, s.kind, False, seconds=timeout,
                                           error=f"no answer within {timeout:g} s", answered=False)
            for a, s in zip(answers, sources, strict=True)]
