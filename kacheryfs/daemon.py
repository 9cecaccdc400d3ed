"""The node's process: one trio nursery running the HTTP API, auth rotation and extra tasks (the mount).

Lifecycle:
    start: Node(...) (identity, auth file, lock) -> HTTP server bound -> extra tasks started
           -> READY=1 to systemd (if NOTIFY_SOCKET is set)
    stop:  SIGTERM / SIGINT / GET /halt -> the HTTP server drains: idle connections close at once,
           requests in flight get GRACE_SECONDS (none after a second SIGTERM/SIGINT), then their
           connections are cut (http/connections.py; a cancelled /store removes its temp file)
           -> extra tasks are cancelled (the mount unmounts) -> the storage lock is released.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from hypercorn.trio import tcp_server as _hypercorn_tcp

from kacheryfs.background import backoff
from kacheryfs.http.app import make_app
from kacheryfs.http.connections import bounded_stop
from kacheryfs.http.peer_routes import make_peer_app
from kacheryfs.node import Node, StartupError

log = logging.getLogger(__name__)

# Hypercorn reads sockets 64 KiB at a time: 16k trips through h11 and ASGI per GiB uploaded.
# 1 MiB reads cut that per-read overhead 16-fold for /store (measured in bench/node.py).
_hypercorn_tcp.MAX_RECV = 1 << 20

# An extra task is started like a trio nursery task: it calls task_status.started() once up.
ExtraTask = Callable[..., Awaitable[Any]]
AUTH_ROTATION_SECONDS = 180.0
GRACE_SECONDS = 10           # for requests in flight at a stop (peers: PEER_GRACE_SECONDS); below
PEER_GRACE_SECONDS = 5       # the unit's TimeoutStopSec, so systemd never has to SIGKILL the node


async def serve(node: Node, host: str, port: int, *, extra_tasks: Sequence[ExtraTask] = (),
                auth_rotation_seconds: float = AUTH_ROTATION_SECONDS,
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    stop, hurry = trio.Event(), trio.Event()       # hurry: a second signal, no grace
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = GRACE_SECONDS
    config.keep_alive_timeout = 75
    config.h11_max_incomplete_size = 64 * 1024
    app = make_app(node, halt_event=stop, host=host)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signals, stop, hurry)
        nursery.start_soon(_rotate_auth, node, auth_rotation_seconds)
        await nursery.start(node.run_services)
        if node.config.peer_listen is not None:
            await nursery.start(_serve_peers, node, stop, hurry)

        async def http(task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
            async with _named_bind_errors("the client API", host, port), \
                    bounded_stop(config, "client API", stop, hurry):
                await hypercorn_serve(app, config, shutdown_trigger=partial(_stopping, node, stop),
                                      task_status=task_status)
            log.info("HTTP server drained; stopping")
            nursery.cancel_scope.cancel()        # then the mount, rotation and signal tasks

        await nursery.start(http)
        _log_setup(node)             # once the addresses are ours: a failed start says only why
        log.info("node %s serving %s; client API on http://%s:%d", node.node_id, node.storage_dir, host, port)
        for task in extra_tasks:
            await nursery.start(_stop_when_done, task, stop)
        notify_systemd("READY=1")
        task_status.started()


async def _serve_peers(node: Node, stop: trio.Event, hurry: trio.Event,
                       task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """The peer API on its own address (`peer_listen`), so the client API can stay on loopback."""
    assert node.config.peer_listen is not None
    host, port = node.config.peer_listen
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = PEER_GRACE_SECONDS

    def started(value: Any = None) -> None:
        log.info("peer API on http://%s:%d", host, port)
        task_status.started(value)
    async with _named_bind_errors("the peer API (peer_listen)", host, port), \
            bounded_stop(config, "peer API", stop, hurry):
        await hypercorn_serve(make_peer_app(node), config, shutdown_trigger=stop.wait,
                              task_status=_Started(started))
    log.info("peer API on %s:%d stopped", host, port)


class _Started:
    """A task_status whose started() runs a callback (to log once the listener is up)."""

    def __init__(self, fn: Callable[[Any], None]):
        self._fn = fn

    def started(self, value: Any = None) -> None:
        self._fn(value)


def _log_setup(node: Node) -> None:
    """What an operator checks first: which config file, which channels, with whom."""
    where = node.config.path or f"none (no {node.storage_dir / 'kacheryfs.toml'}): a purely local node"
    log.info("configuration: %s (changes need a restart)", where)
    for c in node.config.channels:
        log.info("channel %s: roles %s; peers %s; %d member(s)%s", c.name, "/".join(c.roles),
                 ", ".join(c.peers) or "none", len(c.members), f"; bucket {c.bucket.describe()}" if c.bucket else "")


@asynccontextmanager
async def _named_bind_errors(what: str, host: str, port: int) -> AsyncIterator[None]:
    """An address that is taken, as one line naming it, not a traceback of nurseries."""
    try:
        yield
    except BaseException as e:
        found = _find_os_error(e)
        if found is None:
            raise
        reason = "address already in use" if found.errno == errno.EADDRINUSE else (found.strerror or str(found))
        raise StartupError(f"cannot listen on {host}:{port} for {what}: {reason}") from None


def _find_os_error(e: BaseException) -> OSError | None:
    if isinstance(e, BaseExceptionGroup):
        return next((f for x in e.exceptions if (f := _find_os_error(x)) is not None), None)
    if isinstance(e, OSError) and e.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
        return e
    return None


async def _stopping(node: Node, stop: trio.Event) -> None:
    """Hypercorn's shutdown trigger: on stop, feed and task long polls answer at once so requests drain."""
    await stop.wait()
    node.feeds.close()
    node.tasks.close()


async def _stop_when_done(task: ExtraTask, stop: trio.Event,
                          task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """An extra task that ends by itself (the mount, unmounted from outside) stops the node."""
    await task(task_status=task_status)
    log.info("%s ended; stopping the node", getattr(task, "func", task).__name__)
    stop.set()


async def _stop_on_signals(stop: trio.Event, hurry: trio.Event) -> None:
    """The first signal stops with a grace for requests in flight; a second one cuts them now.
    (The receiver stays open until the end: Python's default SIGTERM would kill the process
    before the mount is unmounted.)"""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if stop.is_set():
                log.info("received %s again: cutting the requests in flight", name)
                hurry.set()
            else:
                log.info("received %s", name)
                stop.set()


async def _rotate_auth(node: Node, period: float) -> None:
    failures = 0
    while True:
        await trio.sleep(backoff(failures) if failures else period)
        try:
            await trio.to_thread.run_sync(node.auth.rotate)
            failures = 0
        except Exception:           # e.g. a full disk: keep the current code, try again soon
            failures += 1
            log.exception("rotating the client auth code failed (attempt %d)", failures)


def notify_systemd(message: str) -> None:
    """sd_notify without a dependency: one datagram to $NOTIFY_SOCKET."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.connect(address)
            s.sendall(message.encode())
        except OSError as e:
            log.warning("could not notify systemd: %s", e)
