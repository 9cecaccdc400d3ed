"""A home for tasks that outlive the request that started them (transfers, feed followers, tasks
forwarded to peers): `run` is started once in the node's services nursery and hosts them until
the node stops, when they are cancelled with it. Long-running loops log an unexpected error, wait
`backoff(failures)` and go on: one bad item never ends a loop, nor the node."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


def backoff(failures: int) -> float:
    """Seconds a background loop waits after its `failures`-th consecutive unexpected error."""
    return RETRY_SECONDS[min(max(failures, 1), len(RETRY_SECONDS)) - 1]


class BackgroundHost:
    def __init__(self) -> None:
        self._nursery: trio.Nursery | None = None

    @property
    def running(self) -> bool:
        return self._nursery is not None

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        if self._nursery is None:
            raise RuntimeError(f"{type(self).__name__}.run is not running")
        self._nursery.start_soon(fn, *args)
