"""Tasks through one node (docs/PROTOCOL.md section 10): backends register functions, clients request them.

    backend process                          TaskHub (this node)                 requester
    /task/registerTaskFunctions (long poll)                                  <-  /task/requestTask
                                             route_request: pending
      <- requestedTasks                      queued (delivered to a backend)
    /task/updateTaskStatus running           running
    /task/createSignedTaskResultUploadUrl -> signed PUT URL on this node
    PUT <url> (result JSON bytes)            stored (pure-calculation: content + index)
    /task/updateTaskStatus finished|error    finished | error                ->  /task/waitForTaskResult
                                                                             ->  GET taskResultUrl
(Our client skips the signed URL: it sends the result with 'finished' as "resultJson".)

Task id: for a pure calculation the task hash (SHA-1 of canonical JSON of {"functionId", "kwargs"}),
so identical requests share one run and, once finished, are answered from the stored result (the
blob in the node's store, indexed by results.py) without running again, also after a restart.
Queries and actions get a random id per request.

Liveness without a background task: every entry point and every long poll (waking at least every
SWEEP_SECONDS) calls `_sweep`, which ends in `error`
- a pending task nobody picked up within `pickup_seconds`, or whose backends all went away;
- a queued/running task whose backend session stopped polling for `backend_grace_seconds`.
A backend session is one backend process (our client sends an extension field
`backendSessionId`; for clients that do not, the registration set is the session). While a session
holds tasks its polls are answered after at most `heartbeat_seconds`, so a backend killed mid-task
is noticed within heartbeat + grace.

Routing (`TaskHub.route_request(task)`, the one place that decides where a new task goes): to a
live local backend session providing (channel, function id, type); else, for a channel with
peers in the node config, to the `forwarder` (forwarding.py), which asks the peers, follows
the task there and reports back with `set_status` and `put_result`; else an immediate `error`.
Tasks that came from a peer are `local_only`, so requests never loop between nodes. The
sweep leaves forwarded tasks to the forwarder. Tasks are keyed by (channel, task id).

Known limit: two backends that send no backendSessionId (kachery-client 1.2.0) with identical
registrations count as one session, so one of them dying mid-task while the other keeps polling
is not noticed (the requester's wait times out instead).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import time
from typing import Any

import trio

from kachery_client.errors import NotFoundError, UsageError
from kachery_client.uri import check_sha1
from kacheryfs import metrics
from kacheryfs.tasks.records import (
    STATUSES,
    TERMINAL,
    Forwarder,
    Session,
    Task,
    TaskTimeouts,
    check_function_type,
    check_name,
    compute_task_hash,
)
from kacheryfs.tasks.results import TaskResults
from kacheryfs.tasks.urls import ResultUrls

log = logging.getLogger(__name__)

SWEEP_SECONDS = 0.25
MAX_WAIT_SECONDS = 3600.0


class TaskHub:
    def __init__(self, results: TaskResults, urls: ResultUrls, timeouts: TaskTimeouts | None = None):
        self.results = results
        self.urls = urls
        self.timeouts = timeouts or TaskTimeouts()
        self._tasks: dict[tuple[str, str], Task] = {}            # (channel, task id) -> task
        self._pending: dict[tuple[str, str], Task] = {}          # the same key, in request order
        self._sessions: dict[str, Session] = {}
        self._work: trio.Event | None = None                     # set when a task becomes pending
        self.forwarder: Forwarder | None = None                  # routes to peers (forwarding.py)
        self._last_sweep = 0.0
        self._closing = False

    def close(self) -> None:
        """The node is stopping: long polls (a backend's registration, a requester's wait) answer
        within SWEEP_SECONDS, so they do not hold the stop for its whole grace."""
        self._closing = True
        self._wake_backends()

    # ---- requesters ---------------------------------------------------------------------

    async def request(self, *, base_url: str, channel: str, function_id: str, function_type: str,
                      kwargs: Any, backend_id: str | None = None, timeout: float = 0.0,
                      local_only: bool = False) -> dict[str, Any]:
        """A new request; waits up to `timeout` for it to finish (fast tasks answer in one call)."""
        check_name(channel, "channel name")
        check_name(function_id, "task function id")
        check_function_type(function_type)
        if not isinstance(kwargs, dict):
            raise UsageError("taskKwargs must be a JSON object")
        task_hash = compute_task_hash(function_id, kwargs)
        self._sweep()
        if function_type == "pure-calculation":
            if await self.results.stored_sha1(channel, task_hash) is not None:
                return self._finished_from_store(base_url, channel, task_hash)
            task = self._tasks.get((channel, task_hash))
            if task is None or task.status in TERMINAL:
                task = self._new_task(task_hash, task_hash, channel, function_id, function_type, kwargs, backend_id)
                task.local_only = local_only
                await self.route_request(task)
        else:
            task = self._new_task(secrets.token_hex(16), task_hash, channel, function_id, function_type,
                                  kwargs, backend_id)
            task.local_only = local_only
            await self.route_request(task)
        await self._wait_terminal(task, timeout)
        return self._response(base_url, task)

    async def wait(self, *, base_url: str, channel: str, task_id: str, timeout: float) -> dict[str, Any]:
        """Long poll: the task's status once it is finished or error, or after `timeout`."""
        check_name(channel, "channel name")
        if not isinstance(task_id, str) or not 0 < len(task_id) <= 40:
            raise UsageError("invalid taskId")
        self._sweep()
        task = self._tasks.get((channel, task_id))
        if task is None:
            if re.fullmatch(r"[0-9a-f]{40}", task_id) and \
                    await self.results.stored_sha1(channel, task_id) is not None:
                return self._finished_from_store(base_url, channel, task_id)
            return {"success": True, "taskId": task_id, "status": "error",
                    "errorMessage": f"unknown task {task_id} on channel {channel}: this node forgets tasks "
                                    f"{self.timeouts.record_seconds:.0f} s after they end, and in-flight "
                                    "tasks when it restarts"}
        await self._wait_terminal(task, timeout)
        return self._response(base_url, task)

    def find(self, channel: str, task_id: str) -> Task | None:
        return self._tasks.get((channel, task_id))

    async def route_request(self, task: Task) -> None:
        """Decide where a new task goes. Today: a live local backend session, else error.

        Network layer: insert peer forwarding where marked; keep the local preference first."""
        providers = self._providers(task)
        typed = [s for s in providers if s.functions[(task.channel, task.function_id)] == task.function_type]
        if typed:
            self._pending[task.key] = task
            self._wake_backends()
            return
        if not providers and not task.local_only and self.forwarder is not None \
                and self.forwarder.accepts(task.channel):
            task.remote = "peers"
            self.forwarder.start(task)
            return
        task.no_provider = True
        if providers:
            registered = providers[0].functions[(task.channel, task.function_id)]
            self.set_status(task, "error", f"task function {task.function_id} is registered as "
                            f"'{registered}', but was requested as '{task.function_type}'")
        else:
            self.set_status(task, "error", f"no backend provides task function {task.function_id} "
                            f"on channel {task.channel}")

    def _providers(self, task: Task) -> list[Session]:
        now = time.monotonic()
        return [s for s in self._sessions.values()
                if (task.channel, task.function_id) in s.functions and self._alive(s, now)
                and (task.backend_id is None or task.backend_id == s.backend_id)]

    # ---- backends -----------------------------------------------------------------------

    async def register(self, *, functions: list[tuple[str, str, str]], backend_id: str | None,
                       session_id: str | None, timeout: float) -> list[dict[str, Any]]:
        """One backend poll: (channel, function id, type) registrations; returns delivered tasks."""
        regs = {}
        for channel, function_id, function_type in functions:
            regs[(check_name(channel, "channel name"), check_name(function_id, "task function id"))] = \
                check_function_type(function_type)
        if backend_id is not None and not isinstance(backend_id, str):
            raise UsageError("backendId must be a string or null")
        if session_id is None:      # clients without the extension: the registration set is the session
            session_id = "registrations:" + hashlib.sha1(json.dumps(
                [backend_id, sorted(regs)]).encode()).hexdigest()
        session = self._sessions.get(session_id)
        if session is None:
            session = self._sessions[session_id] = Session(session_id, backend_id, regs)
        session.backend_id, session.functions = backend_id, regs
        session.open_polls += 1
        try:
            self._sweep()
            holds_tasks = any(t.session_id == session_id and t.status not in TERMINAL for t in self._tasks.values())
            if holds_tasks:
                timeout = min(timeout, self.timeouts.heartbeat_seconds)
            deadline = time.monotonic() + min(max(timeout, 0.0), MAX_WAIT_SECONDS)
            while True:
                delivered = self._deliver(session)
                if delivered:
                    return delivered
                left = deadline - time.monotonic()
                if left <= 0 or self._closing:
                    return []
                with trio.move_on_after(min(left, SWEEP_SECONDS)):
                    await self._work_event().wait()
                self._sweep()
        finally:
            session.open_polls -= 1
            session.last_poll_end = time.monotonic()

    def _deliver(self, session: Session) -> list[dict[str, Any]]:
        out = []
        for task in list(self._pending.values()):
            if session.functions.get((task.channel, task.function_id)) == task.function_type and \
                    (task.backend_id is None or task.backend_id == session.backend_id):
                task.session_id = session.session_id
                self.set_status(task, "queued")
                out.append({"channelName": task.channel, "backendId": session.backend_id, "taskId": task.task_id,
                            "taskHash": task.task_hash, "taskFunctionId": task.function_id,
                            "kwargs": task.kwargs, "taskFunctionType": task.function_type})
        return out

    async def update_status(self, *, channel: str, task_id: str, status: str, error_message: str | None,
                            result: bytes | None = None) -> None:
        """A backend's report. 'finished' for a task with a result needs the result: uploaded first
        (the original client), or given here (`result`, our client: two round trips fewer)."""
        check_name(channel, "channel name")
        if status not in STATUSES:
            raise UsageError(f"invalid task status {status!r}")
        if error_message is not None and not isinstance(error_message, str):
            raise UsageError("errorMessage must be a string")
        task = self._tasks.get((channel, task_id))
        if task is None:
            if status == "finished" and isinstance(task_id, str) and re.fullmatch(r"[0-9a-f]{40}", task_id) \
                    and await self.results.stored_sha1(channel, task_id) is not None:
                return      # a pure result computed by the client itself (kachery-client's _run_task)
            raise NotFoundError(f"no task {task_id} on channel {channel}")
        if task.status in TERMINAL or status in ("waiting", "pending"):
            return
        if status == "finished" and task.result_kind is not None:
            if result is not None:
                await self.results.put(channel, task.task_hash, task.result_kind, result)
            elif not await self.results.has(task.channel, task.task_hash, task.result_kind):
                self.set_status(task, "error", "the backend reported the task finished without uploading "
                                "its result")
                return
        if status == "error":
            error_message = error_message or "the backend reported an error without a message"
        self.set_status(task, status, error_message if status == "error" else None)

    # ---- statuses -----------------------------------------------------------------------

    def create_upload_url(self, *, base_url: str, channel: str, task_hash: str, size: int) -> str:
        """Where the result may be PUT; 'query' results are kept in memory, others as content."""
        check_name(channel, "channel name")
        check_sha1(task_hash)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise UsageError("size must be a non-negative integer")
        in_flight = [t for t in self._tasks.values() if t.task_hash == task_hash and t.channel == channel
                     and t.status not in TERMINAL]
        kind = "query" if any(t.function_type == "query" for t in in_flight) else "pure"
        return self.urls.upload_url(base_url, channel, task_hash, kind, size)

    def set_status(self, task: Task, status: str, error_message: str | None = None) -> None:
        """Change a task's status and wake whoever waits on it (also for the network layer)."""
        if task.status in TERMINAL:
            return
        if status != "pending":
            self._pending.pop(task.key, None)
        log.debug("task %s (%s): %s -> %s %s", task.task_id, task.function_id, task.status, status, error_message or "")
        task.status, task.error_message, task.changed_at = status, error_message, time.monotonic()
        metrics.TASK_STATUS_CHANGES.labels(status).inc()
        task.changed.set()
        task.changed = trio.Event()

    def _new_task(self, task_id: str, task_hash: str, channel: str, function_id: str, function_type: str,
                  kwargs: dict[str, Any], backend_id: str | None) -> Task:
        task = Task(task_id, task_hash, channel, function_id, function_type, kwargs, backend_id)
        self._tasks[task.key] = task
        return task

    async def _wait_terminal(self, task: Task, timeout: float) -> None:
        deadline = time.monotonic() + min(max(timeout, 0.0), MAX_WAIT_SECONDS)
        while task.status not in TERMINAL:
            left = deadline - time.monotonic()
            if left <= 0 or self._closing:
                return
            with trio.move_on_after(min(left, SWEEP_SECONDS)):
                await task.changed.wait()
            self._sweep()

    def _response(self, base_url: str, task: Task) -> dict[str, Any]:
        out: dict[str, Any] = {"success": True, "taskId": task.task_id, "status": task.status}
        if task.error_message is not None:
            out["errorMessage"] = task.error_message
        if task.result_kind is not None:
            out["taskResultUrl"] = self.urls.read_url(base_url, task.channel, task.task_hash)
        return out

    def _finished_from_store(self, base_url: str, channel: str, task_hash: str) -> dict[str, Any]:
        return {"success": True, "taskId": task_hash, "status": "finished",
                "taskResultUrl": self.urls.read_url(base_url, channel, task_hash)}

    # ---- wake-ups and expiry ------------------------------------------------------------

    def _work_event(self) -> trio.Event:
        if self._work is None:
            self._work = trio.Event()
        return self._work

    def _wake_backends(self) -> None:
        self._work_event().set()
        self._work = trio.Event()

    def _alive(self, session: Session, now: float) -> bool:
        return session.open_polls > 0 or now - session.last_poll_end <= self.timeouts.backend_grace_seconds

    def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < SWEEP_SECONDS / 2:
            return
        self._last_sweep = now
        t = self.timeouts
        for task in list(self._tasks.values()):
            if task.remote is not None and task.status not in TERMINAL:
                continue                        # the forwarder follows it on the peer
            if task.status == "pending":
                if now - task.created > t.pickup_seconds:
                    self.set_status(task, "error", f"no backend picked up the task within "
                                    f"{t.pickup_seconds:.0f} s (task function {task.function_id})")
                elif not self._providers(task):
                    self.set_status(task, "error", f"the backend providing task function "
                                    f"{task.function_id} went away before picking up the task")
            elif task.status in TERMINAL:
                if now - task.changed_at > t.record_seconds:
                    del self._tasks[task.key]
            else:
                session = self._sessions.get(task.session_id or "")
                if session is None or not self._alive(session, now):
                    self.set_status(task, "error", f"the backend running task function {task.function_id} "
                                    f"stopped responding (no poll for over {t.backend_grace_seconds:.0f} s) "
                                    f"while the task was {task.status}")
        for sid, session in list(self._sessions.items()):
            if not self._alive(session, now):
                del self._sessions[sid]
        self.results.expire_queries(now, t.record_seconds)
