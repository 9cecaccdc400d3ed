"""A bounded stop: connections still open when the grace after a stop ends are cut.

Hypercorn (0.18, trio worker) already closes idle keep-alive connections as soon as its shutdown
trigger fires (`TCPServer._idle_timeout` waits on `context.terminated`), and after
`graceful_timeout` it cancels the requests still running. But it writes response bytes inside a
shielded cancel scope (`TCPServer.protocol_send`), so a response to a client that stopped reading
(a paused browser download, `kachery-cat big | less`) cannot be cancelled: the node waited for
that client forever, systemd killed it after TimeoutStopSec and the mount was left dangling.
Closing the socket wakes a blocked send with ClosedResourceError, which is not a cancellation, so
the shield does not hold it; hypercorn then ends that connection like one the client closed.

To reach the sockets, `_TrackedTCPServer` (hypercorn's TCPServer, noting its stream per server
Config) takes the place of hypercorn's in its trio worker.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from hypercorn.config import Config
from hypercorn.trio import run as _hypercorn_run
from hypercorn.trio.tcp_server import TCPServer

log = logging.getLogger(__name__)

# Each server's open connection streams, keyed by the server's Config (one per hypercorn serve).
_open: weakref.WeakKeyDictionary[Config, set[trio.abc.Stream]] = weakref.WeakKeyDictionary()


class _TrackedTCPServer(TCPServer):
    async def run(self) -> None:
        streams = _open.setdefault(self.config, set())
        streams.add(self.stream)
        try:
            await super().run()
        finally:
            streams.discard(self.stream)


_hypercorn_run.TCPServer = _TrackedTCPServer  # type: ignore[misc]


def cut_connections(config: Config) -> int:
    """Close every open connection of this server now; how many there were."""
    streams = list(_open.get(config, ()))
    for stream in streams:
        sock = getattr(stream, "socket", None)        # trio.SocketStream (we serve no TLS)
        if sock is not None:
            try:
                log.debug("cutting the connection of %s", sock.getpeername())
            except OSError:
                pass
            sock.close()                               # wakes its blocked send/receive
    return len(streams)


@asynccontextmanager
async def bounded_stop(config: Config, what: str, stop: trio.Event, hurry: trio.Event) -> AsyncIterator[None]:
    """Run a hypercorn serve inside; once `stop` is set, requests in flight get
    `config.graceful_timeout` seconds (none once `hurry` is set: a second signal), then their
    connections are cut and the serve is cancelled."""
    async with trio.open_nursery() as nursery:
        async def cut_after_grace() -> None:
            await stop.wait()
            with trio.move_on_after(config.graceful_timeout):
                await hurry.wait()
            n = cut_connections(config)
            if n:
                log.info("%s: cut %d connection(s) still open %s", what, n,
                         "on a second signal" if hurry.is_set() else f"after {config.graceful_timeout} s")
            nursery.cancel_scope.cancel()

        nursery.start_soon(cut_after_grace)
        yield
        nursery.cancel_scope.cancel()
