"""Wait for something on behalf of a client, and stop waiting when the client goes away.

A handler that waits before it answers (a range of a transfer in progress, /downloadFileData)
would otherwise keep holding the transfer after the client hung up (Ctrl-C of `kachery-cat`), and
the transfer would not be abandoned after its grace period (docs/PROTOCOL.md 17.2). Call this only
after the request's body has been read: the next ASGI message is then the disconnect.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio
from starlette.requests import Request

from kacheryfs.exception_groups import first_error

T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected while the node waited for its answer."""


async def unless_disconnected(request: Request, wait: Callable[[], Awaitable[T]]) -> T:
    """`await wait()`, cancelled (ClientGone) as soon as the client disconnects."""
    result: list[T] = []

    async def watch(scope: trio.CancelScope) -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        scope.cancel()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, nursery.cancel_scope)
            result.append(await wait())
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise first_error(group) from None
    if not result:
        raise ClientGone(f"the client of {request.url.path} went away")
    return result[0]
