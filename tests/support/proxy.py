"""Small TCP stand-ins on 127.0.0.1 for misbehaving peers: one that accepts connections and never
answers, and a forwarding proxy that slows the answers down.

    with silent_listener() as port: ...              # connects, then nothing, ever
    with slow_proxy(target_port, rate=8e6) as port:  # answers at about 8 MB/s

Threads, closed on exit; every socket has a timeout so nothing outlives the test.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

IDLE_LIMIT = 120.0          # no connection lives longer than this


def _listener() -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    s.settimeout(0.2)
    return s


def _accept_loop(server: socket.socket, stop: threading.Event, handle) -> None:  # type: ignore[no-untyped-def]
    while not stop.is_set():
        try:
            conn, _ = server.accept()
        except (TimeoutError, OSError):
            continue
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


@contextlib.contextmanager
def _serving(server: socket.socket, stop: threading.Event, handle) -> Iterator[int]:  # type: ignore[no-untyped-def]
    """Accept in a thread until the block ends; yields the port."""
    t = threading.Thread(target=_accept_loop, args=(server, stop, handle), daemon=True)
    t.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        t.join(5)
        server.close()


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A peer that accepts, reads whatever comes, and never answers."""
    stop = threading.Event()
    server = _listener()

    def handle(conn: socket.socket) -> None:
        conn.settimeout(0.2)
        end = time.monotonic() + IDLE_LIMIT
        with conn:
            while not stop.is_set() and time.monotonic() < end:
                try:
                    if not conn.recv(65536):
                        return
                except TimeoutError:
                    continue
                except OSError:
                    return

    with _serving(server, stop, handle) as port:
        yield port


@contextlib.contextmanager
def slow_proxy(target_port: int, rate: float) -> Iterator[int]:
    """Forward to 127.0.0.1:target_port; answers flow at about `rate` bytes per second per
    connection."""
    stop = threading.Event()
    server = _listener()

    def pump(src: socket.socket, dst: socket.socket, limit: float | None) -> None:
        ready_at = time.monotonic()          # when the bytes sent so far "arrive"; idle time earns no credit
        try:
            while not stop.is_set():
                try:
                    data = src.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                dst.sendall(data)
                if limit:
                    now = time.monotonic()
                    ready_at = max(ready_at, now) + len(data) / limit
                    if ready_at > now:
                        time.sleep(ready_at - now)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def handle(conn: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", target_port), timeout=5)
        except OSError:
            conn.close()
            return
        for s in (conn, upstream):
            s.settimeout(0.5)
        up = threading.Thread(target=pump, args=(conn, upstream, None), daemon=True)
        up.start()
        pump(upstream, conn, rate)
        up.join(5)
        conn.close()
        upstream.close()

    with _serving(server, stop, handle) as port:
        yield port
