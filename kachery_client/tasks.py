"""Tasks: registered computations that a backend process provides and clients request by id.

    import kachery_client as kc

    @kc.taskfunction("myapp.add.1", type="pure-calculation")      # or 'query' or 'action'
    def add(a, b):
        return a + b

    kc.run_task_backend(channels=["ch1"], task_function_ids=["myapp.add.1"])   # serves until stopped

    r = kc.request_task(task_function_id="myapp.add.1", task_kwargs={"a": 1, "b": 2},
                        task_function_type="pure-calculation", channel="ch1")
    r.wait(10)        # -> 3; None while still pending; raises TaskError if the task failed

The names and behaviour follow kachery-client 1.2.0. Differences: the backend runs in this
process (a thread long-polls the node while the main thread runs tasks one at a time), reports
'running' before each run, stops on KeyboardInterrupt, SIGTERM, `stop` or `timeout_sec`, and
sends an extension field `backendSessionId` so the node can tell this process from other
backends with the same registrations. Results are JSON; a pure calculation's result is stored by
the node as content, so a repeated identical request returns at once without running again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .api import node_client
from .config import Config
from .errors import KacheryError, TaskError, UsageError
from .node_http import NodeClient

log = logging.getLogger(__name__)

FUNCTION_TYPES = ("pure-calculation", "query", "action")
REQUEST_WAIT_MSEC = 1000            # what the original sends; the node answers earlier if the task ends
BACKEND_POLL_SECONDS = 15.0
WAIT_CALL_SECONDS = 60.0            # one long poll of wait() at most; wait() repeats until its timeout
F = TypeVar("F", bound=Callable[..., Any])
_NO_RESULT = object()

_task_functions: dict[str, Callable[..., Any]] = {}
_task_types: dict[str, str] = {}


def taskfunction(function_id: str, *, type: str) -> Callable[[F], F]:
    """Register `f` under `function_id` as a 'pure-calculation', 'query' or 'action'."""
    if type not in FUNCTION_TYPES:
        raise UsageError(f"invalid task function type {type!r}: one of {', '.join(FUNCTION_TYPES)}")
    if not function_id or not isinstance(function_id, str):
        raise UsageError("a task function id is a non-empty string")

    def wrap(f: F) -> F:
        setattr(f, "_task_function_type", type)        # noqa: B010  (the original's attributes;
        setattr(f, "_task_function_id", function_id)   # noqa: B010   F has no such fields for mypy)
        _task_functions[function_id] = f
        _task_types[function_id] = type
        return f
    return wrap


def find_taskfunction(function_id: str) -> Callable[..., Any] | None:
    return _task_functions.get(function_id)


# ---- requesting ---------------------------------------------------------------------------

class TaskRequest:
    """A requested task: `.status`, `.wait(timeout_sec)`, `.result`, `.error_message`."""

    def __init__(self, *, channel: str, task_id: str, task_function_id: str, task_function_type: str,
                 task_result_url: str | None, status: str, error_message: str | None):
        self.channel = channel
        self.task_id = task_id
        self.task_function_id = task_function_id
        self.task_function_type = task_function_type
        self.task_result_url = task_result_url
        self.status = status
        self.error_message = error_message
        self._result: Any = _NO_RESULT

    def __repr__(self) -> str:
        return f"<TaskRequest {self.task_function_id} {self.task_id} {self.status}>"

    @property
    def result(self) -> Any:
        """The task's JSON result (downloaded once); only for a finished pure calculation or query."""
        if self.status != "finished":
            raise UsageError(f"task {self.task_function_id} has no result: its status is {self.status}")
        if self._result is _NO_RESULT:
            if not self.task_result_url:
                raise UsageError(f"task {self.task_function_id} is an {self.task_function_type}: it has no result")
            self._result = json.loads(node_client().get_url(self.task_result_url))
        return self._result

    def wait(self, timeout_sec: float) -> Any:
        """Wait up to timeout_sec: the result once finished (True for an action), None while still
        pending; raises TaskError if the task ended in error."""
        deadline = time.monotonic() + max(timeout_sec, 0.0)
        first = True
        while self.status not in ("finished", "error"):
            left = deadline - time.monotonic()
            if left <= 0 and not first:
                return None
            first = False
            obj = node_client().post_json("/task/waitForTaskResult", {
                "channelName": self.channel, "taskId": self.task_id, "taskResultUrl": self.task_result_url,
                "taskFunctionType": self.task_function_type,
                "timeoutMsec": round(max(0.0, min(left, WAIT_CALL_SECONDS)) * 1000)})
            if not obj.get("success"):
                raise TaskError(f"cannot wait on task {self.task_function_id}: {obj.get('error')}")
            self.status = str(obj["status"])
            self.error_message = obj.get("errorMessage")
            self.task_result_url = obj.get("taskResultUrl") or self.task_result_url
        if self.status == "error":
            raise TaskError(f"task {self.task_function_id} failed: {self.error_message}")
        return True if self.task_function_type == "action" else self.result


OutgoingTaskRequest = TaskRequest       # the original's name


def request_task(*, task_function_id: str, task_kwargs: dict[str, Any], task_function_type: str,
                 channel: str, backend_id: str | None = None) -> TaskRequest:
    """Ask the node for a task; returns at once with the task's status (a fast task may be finished)."""
    if task_function_type not in FUNCTION_TYPES:
        raise UsageError(f"invalid task function type {task_function_type!r}: one of {', '.join(FUNCTION_TYPES)}")
    if not isinstance(task_kwargs, dict):
        raise UsageError("task_kwargs must be a dict (a JSON object)")
    try:
        json.dumps(task_kwargs, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise UsageError(f"task_kwargs must be JSON-serialisable: {e}") from None
    body: dict[str, Any] = {"channelName": channel, "taskFunctionId": task_function_id, "taskKwargs": task_kwargs,
                            "taskFunctionType": task_function_type, "timeoutMsec": REQUEST_WAIT_MSEC}
    if backend_id is not None:
        body["backendId"] = backend_id
    obj = node_client().post_json("/task/requestTask", body)
    if not obj.get("success"):
        raise TaskError(f"cannot request task {task_function_id}: {obj.get('error')}")
    return TaskRequest(channel=channel, task_id=str(obj["taskId"]), task_function_id=task_function_id,
                       task_function_type=task_function_type, task_result_url=obj.get("taskResultUrl"),
                       status=str(obj["status"]), error_message=obj.get("errorMessage"))


# ---- providing ----------------------------------------------------------------------------

class _Terminated(BaseException):     # not caught by a task's `except Exception`
    pass


def run_task_backend(*, channels: list[str], task_function_ids: list[str], backend_id: str | None = None,
                     stop: threading.Event | None = None, timeout_sec: float | None = None) -> None:
    """Serve the registered functions on these channels until KeyboardInterrupt (re-raised),
    SIGTERM, `stop` being set, or `timeout_sec`. A function that raises ends its task in error
    with the exception's message; the backend keeps serving."""
    registrations = []
    for function_id in task_function_ids:
        f = find_taskfunction(function_id)
        if f is None:
            raise UsageError(f"no task function {function_id!r} (decorate it with @taskfunction first)")
        for channel in channels:
            registrations.append({"channelName": channel, "taskFunctionId": function_id,
                                  "taskFunctionType": _task_types[function_id]})
    stopping = threading.Event()
    inbox: queue.Queue[dict[str, Any]] = queue.Queue()
    poller = threading.Thread(target=_poll, name="kachery-task-poll", daemon=True,
                              args=(registrations, backend_id, secrets.token_hex(16), inbox, stopping))
    poller.start()
    client = node_client()
    # Said once on stderr (a backend otherwise sits silent): what it serves, where, how to stop it.
    print(f"kachery task backend: serving {', '.join(task_function_ids)} on channel(s) {', '.join(channels)} "
          f"through the node at {client.url}; Ctrl-C to stop", file=sys.stderr, flush=True)
    deadline = None if timeout_sec is None else time.monotonic() + timeout_sec
    current: dict[str, Any] | None = None
    try:
        with _sigterm_raises():
            while not stopping.is_set() and not (stop is not None and stop.is_set()) \
                    and (deadline is None or time.monotonic() < deadline):
                try:
                    current = inbox.get(timeout=0.1)
                except queue.Empty:
                    continue
                _run_one(client, current)
                current = None
    except (_Terminated, KeyboardInterrupt) as e:
        log.info("task backend stopping (%s)", type(e).__name__)
        if current is not None:
            _report(client, current, "error", "the task backend was stopped while running the task")
        if isinstance(e, KeyboardInterrupt):
            raise
    finally:
        stopping.set()
        while not inbox.empty():     # delivered but never run: tell the node rather than let them hang
            _report(client, inbox.get_nowait(), "error", "the task backend stopped before running the task")


def _poll(registrations: list[dict[str, Any]], backend_id: str | None, session_id: str,
          inbox: queue.Queue[dict[str, Any]], stopping: threading.Event) -> None:
    """Long-poll the node for requested tasks (own NodeClient: a requests.Session per thread)."""
    client = NodeClient(Config.from_env())
    failures = 0
    while not stopping.is_set():
        try:
            obj = client.post_json("/task/registerTaskFunctions", {
                "taskFunctions": registrations, "backendId": backend_id, "backendSessionId": session_id,
                "timeoutMsec": BACKEND_POLL_SECONDS * 1000})
            failures = 0
        except KacheryError as e:
            failures += 1
            log.warning("cannot reach the node to register task functions (%s); retrying", e)
            stopping.wait(min(10.0, 0.5 * failures))
            continue
        for task in obj.get("requestedTasks") or []:
            if stopping.is_set():
                _report(client, task, "error", "the task backend stopped before running the task")
            else:
                inbox.put(task)


def _run_one(client: NodeClient, task: dict[str, Any]) -> None:
    function_id, function_type = task["taskFunctionId"], task["taskFunctionType"]
    f = find_taskfunction(function_id)
    if f is None:
        _report(client, task, "error", f"this backend has no task function {function_id}")
        return
    _report(client, task, "running")
    try:
        result = f(**task["kwargs"])
    except Exception as e:
        log.info("task %s raised %s: %s", function_id, type(e).__name__, e)
        _report(client, task, "error", f"{function_id} raised {type(e).__name__}: {e}")
        return
    if function_type == "action":
        _report(client, task, "finished")
        return
    try:
        text = json.dumps(result, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        _report(client, task, "error", f"the result of {function_id} is not JSON-serialisable: {e}")
        return
    # the result travels with the status (a node extension; the original PUT it to a signed URL)
    if not _report(client, task, "finished", result_json=text):
        _report(client, task, "error", f"cannot hand the result of {function_id} to the node")


def _report(client: NodeClient, task: dict[str, Any], status: str, error_message: str | None = None,
            result_json: str | None = None) -> bool:
    body: dict[str, Any] = {"channelName": task["channelName"], "taskId": task["taskId"], "status": status}
    if error_message is not None:
        body["errorMessage"] = error_message
    if result_json is not None:
        body["resultJson"] = result_json
    try:
        client.post_json("/task/updateTaskStatus", body)
        return True
    except KacheryError as e:
        log.warning("cannot report status %s of task %s: %s", status, task.get("taskId"), e)
        return False


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM stops the backend like Ctrl-C (only the main thread can install handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise _Terminated()
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
