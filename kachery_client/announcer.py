"""`/kacheryfs/added` notices in the background: a client that put blobs into the node's storage
directory itself tells the node about them without waiting (node_http.NodeClient.notify_added)."""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from .errors import KacheryError, NodeUnavailableError

if TYPE_CHECKING:
    from .node_http import NodeClient

log = logging.getLogger(__name__)


class Announcer:
    """Sends `/kacheryfs/added` notices from a background thread, in batches, with its own
    NodeClient (a requests.Session is not shared between threads). A store returns once its blob
    is durable in the storage directory, without waiting for the node's answer; what is pending
    when the process exits is sent first (atexit, bounded by FLUSH_AT_EXIT seconds). A notice
    the node refuses is logged: the blob itself is already in place either way."""

    BATCH = 500
    # After the first notice of a burst, wait this long for more (flush() cuts it short): a loop of
    # stores then costs one POST per LINGER, not one each. A POST per store took ~1 ms of the
    # storing process's CPU and GIL beside its 0.1 ms store.
    LINGER = 0.05
    FLUSH_AT_EXIT = 10.0
    GIVE_UP = 120.0

    def __init__(self, client: NodeClient):
        self._client = client
        self._queue: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._pending = 0
        self._idle = threading.Condition()
        self._hurry = threading.Event()          # set while someone waits in flush(): no lingering
        threading.Thread(target=self._run, name="kachery-announce", daemon=True).start()
        atexit.register(self.flush, self.FLUSH_AT_EXIT)

    def add(self, notice: dict[str, Any]) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put(notice)

    def flush(self, timeout: float) -> bool:
        self._hurry.set()
        try:
            with self._idle:
                return self._idle.wait_for(lambda: self._pending == 0, timeout)
        finally:
            self._hurry.clear()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            self._hurry.wait(self.LINGER)
            while len(batch) < self.BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._send(batch)
            with self._idle:
                self._pending -= len(batch)
                self._idle.notify_all()

    def _send(self, batch: list[dict[str, Any]]) -> None:
        """Post one batch; while the node is away (restarting), retry with a growing pause, up to
        GIVE_UP seconds: the node that comes back picks the notices up."""
        delay, deadline = 0.05, time.monotonic() + self.GIVE_UP
        while True:
            try:
                self._client.post_json("/kacheryfs/added", {"blobs": batch})
                return
            except NodeUnavailableError as e:
                if time.monotonic() + delay > deadline:
                    log.warning("the node did not come back: %d stored blob(s) not announced: %s", len(batch), e)
                    return
                time.sleep(delay)
                delay = min(1.0, delay * 2)
                self._client._probe = None          # probe again once it answers
            except KacheryError as e:
                log.warning("could not tell the node about %d stored blob(s): %s", len(batch), e)
                return
