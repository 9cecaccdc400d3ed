"""Tasks across nodes: a request no local backend provides goes to the peers of its channel.

Requesting node (TaskForwarder, the TaskHub's `forwarder`):
    POST /peer/task/request {"functionId", "functionType", "kwargs", "timeoutMsec", "nonce"}  to each peer
         of the channel in turn, until one has a backend for it (the others answer noProvider);
    POST /peer/task/wait {"taskId", "taskHash", "functionType", "timeoutMsec"}       long polls on
         that peer until the task ends, mirroring each status into the local task; a finished
         task's result travels in the answer ("result": its JSON text) and is kept here like a
         local result (a pure calculation's as content), so a repeated request is answered here.
The channel is the one the request is signed for (security/peer_auth.py): a node that is not a member of
the channel on the providing node is refused (403) and its requester gets that error.

Providing node: the same two endpoints call TaskHub.request(local_only=True) / TaskHub.wait, so a
task is never forwarded twice and requests cannot loop between nodes.

A peer that stops answering while it holds the task ends it in error after MAX_FAILURES tries.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from kachery_client.errors import KacheryError
from kacheryfs.background import BackgroundHost
from kacheryfs.content.sources import SourceError, SourceRefused
from kacheryfs.content.sources.peer import PeerSource
from kacheryfs.security.peer_auth import new_nonce
from kacheryfs.tasks.hub import TaskHub
from kacheryfs.tasks.records import TERMINAL, Task, compute_task_hash

log = logging.getLogger(__name__)

WAIT_MSEC = 10_000          # each long poll on the peer (below the peer client's read timeout)
MAX_FAILURES = 3


class TaskForwarder(BackgroundHost):
    def __init__(self, hub: TaskHub, peers: dict[str, list[PeerSource]]):
        super().__init__()
        self.hub = hub
        self.peers = {channel: list(p) for channel, p in peers.items() if p}

    def accepts(self, channel: str) -> bool:
        return self.running and channel in self.peers

    def start(self, task: Task) -> None:
        self.start_soon(self._forward, task)

    async def _forward(self, task: Task) -> None:
        problems: list[str] = []
        try:
            for peer in self.peers[task.channel]:
                # A fresh one-time nonce per peer and attempt: the peer refuses a replayed request.
                body = {"functionId": task.function_id, "functionType": task.function_type, "kwargs": task.kwargs,
                        "timeoutMsec": 0, "nonce": new_nonce()}
                try:
                    out = await trio.to_thread.run_sync(peer.post_json, "/peer/task/request", body,
                                                        abandon_on_cancel=True)
                except SourceRefused as e:
                    problems.append(str(e))
                    continue
                except SourceError as e:
                    problems.append(str(e))
                    continue
                if out.get("noProvider"):
                    problems.append(f"{peer.label}: {out.get('errorMessage')}")
                    continue
                task.remote = peer.label
                await self._follow(task, peer, out)
                return
            self.hub.set_status(task, "error", f"no backend provides task function {task.function_id} on "
                                f"channel {task.channel}, here or on its peers ({'; '.join(problems)})")
        except Exception as e:            # never leave a requester waiting on a crashed forwarder
            log.exception("forwarding task %s failed", task.task_id)
            self.hub.set_status(task, "error", f"forwarding the task failed: {e}")

    async def _follow(self, task: Task, peer: PeerSource, out: dict[str, Any]) -> None:
        failures = 0
        while True:
            status = out.get("status")
            if status == "finished":
                if task.result_kind is not None:
                    result = out.get("result")
                    if not isinstance(result, str):
                        self.hub.set_status(task, "error", f"{peer.label} reported no result")
                        return
                    await self.hub.results.put(task.channel, task.task_hash, task.result_kind, result.encode())
                self.hub.set_status(task, "finished")
                return
            if status == "error" or status not in ("pending", "queued", "running", "waiting"):
                self.hub.set_status(task, "error", str(out.get("errorMessage") or f"{peer.label}: status {status}"))
                return
            if status != task.status:
                self.hub.set_status(task, status)
            if task.status in TERMINAL:
                return
            body = {"taskId": out.get("taskId"), "taskHash": task.task_hash, "functionType": task.function_type,
                    "timeoutMsec": WAIT_MSEC}
            try:
                out = await trio.to_thread.run_sync(peer.post_json, "/peer/task/wait", body,
                                                    abandon_on_cancel=True)
                failures = 0
            except SourceError as e:
                failures += 1
                if failures >= MAX_FAILURES:
                    self.hub.set_status(task, "error", f"{peer.label} stopped answering while the task was "
                                        f"{task.status}: {e}")
                    return
                await trio.sleep(0.5 * failures)
                out = {"status": task.status, "taskId": body["taskId"]}


# ---- the providing node's side (peer API handlers) -----------------------------------------

def _timeout(msec: float) -> float:
    """timeoutMsec, in seconds, capped at WAIT_MSEC."""
    return min(msec, WAIT_MSEC) / 1000


async def _with_result(hub: TaskHub, channel: str, task_hash: str, function_type: str,
                       out: dict[str, Any]) -> dict[str, Any]:
    out.pop("taskResultUrl", None)          # a URL on this node means nothing to the peer
    if out.get("status") == "finished" and function_type in ("pure-calculation", "query"):
        try:
            out["result"] = (await hub.results.read(channel, task_hash)).decode()
        except KacheryError as e:
            out.update(status="error", errorMessage=f"the result is gone: {e}")
    return out


async def serve_task_request(hub: TaskHub, channel: str, function_id: str, function_type: str,
                             kwargs: dict[str, Any], timeout_msec: float) -> dict[str, Any]:
    """/peer/task/request (the body decoded by http/schemas.PeerTaskRequest, its nonce checked)."""
    out = await hub.request(base_url="", channel=channel, function_id=function_id, function_type=function_type,
                            kwargs=kwargs, timeout=_timeout(timeout_msec), local_only=True)
    task = hub.find(channel, out.get("taskId", ""))
    out["noProvider"] = bool(task is not None and task.no_provider)
    return await _with_result(hub, channel, compute_task_hash(function_id, kwargs), function_type, out)


async def serve_task_wait(hub: TaskHub, channel: str, task_id: str, task_hash: str, function_type: str,
                          timeout_msec: float) -> dict[str, Any]:
    out = await hub.wait(base_url="", channel=channel, task_id=task_id, timeout=_timeout(timeout_msec))
    return await _with_result(hub, channel, task_hash, function_type, out)
