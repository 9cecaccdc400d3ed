"""The answer of /downloadFileData: the bytes of an OpenRange, streamed from its open file.

However the response ends (sent, client gone, node stopping), the range is let go: its file
closed and, for a blob still being fetched, the transfer's hold released — the hold taken while
the range was waited for lasts until the last byte is sent, so `waiters` in /stats never drops to
0 while a client reads (docs/PROTOCOL.md 17.2, 17.4). Headers of ours: `X-Kachery-Size` (the whole
blob's size) and, while it is fetched, `X-Kachery-Source` (the label of its best source).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import trio

from kacheryfs.content.ranges import OpenRange
from kacheryfs.http.streaming import StreamedResponse
from kacheryfs.node import Node

READ_BLOCK = 4 << 20


class RangeResponse(StreamedResponse):
    def __init__(self, node: Node, rng: OpenRange):
        self.rng = rng
        headers = {"Content-Length": str(rng.end - rng.start), "X-Kachery-Size": str(rng.size)}
        if rng.transfer is not None:
            headers["X-Kachery-Source"] = (rng.transfer.source or "").encode("ascii", "replace").decode()
        super().__init__(self._blocks(node), headers=headers, media_type="application/octet-stream")

    async def _blocks(self, node: Node) -> AsyncIterator[bytes]:
        f = self.rng.file
        f.seek(self.rng.start)
        left = self.rng.end - self.rng.start
        while left > 0:
            block = await trio.to_thread.run_sync(f.read, min(left, READ_BLOCK))
            if not block:
                break
            left -= len(block)
            node.stats.bytes_sent += len(block)
            yield block

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.rng.close()
