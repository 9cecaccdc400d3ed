"""A byte-rate limit shared by many streams: `await limiter.take(n)` before sending n bytes.

Used for `[node] peer_serve_rate`, so a node serving peers leaves bandwidth for its other work.
A virtual clock: each call reserves the next n / rate seconds of the link and waits for the start
of its slot; an idle link earns no credit, so a burst after a pause is not faster than the rate.
"""

from __future__ import annotations

import trio


class RateLimiter:
    def __init__(self, bytes_per_second: int):
        if bytes_per_second <= 0:
            raise ValueError("a rate limit must be positive")
        self.rate = bytes_per_second
        self._free_at = 0.0          # trio clock time when the link is free again

    async def take(self, n: int) -> None:
        now = trio.current_time()
        start = max(now, self._free_at)
        self._free_at = start + n / self.rate
        await trio.sleep_until(start)
