"""The task hub's records: a Task, a backend Session, the timeouts, the forwarder's interface, and
the checks of names and function types (hub.py runs them; forwarding.py mirrors peers' tasks)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from kachery_client.canonical_json import canonical_sha1
from kachery_client.errors import UsageError

FUNCTION_TYPES = ("pure-calculation", "query", "action")
STATUSES = ("waiting", "pending", "queued", "running", "finished", "error")
TERMINAL = ("finished", "error")
_NAME_RE = re.compile(r"^[A-Za-z0-9@_-]+(\.[A-Za-z0-9@_-]+)*$")


class Forwarder(Protocol):
    def accepts(self, channel: str) -> bool: ...
    def start(self, task: Task) -> None: ...


@dataclass(frozen=True)
class TaskTimeouts:
    pickup_seconds: float = 10.0            # the original expired unclaimed requests after 10 s
    backend_grace_seconds: float = 3.0      # no poll open for this long: the backend is gone
    heartbeat_seconds: float = 1.0          # poll length while the backend holds tasks
    record_seconds: float = 600.0           # finished/error records (and query results) kept this long


@dataclass
class Task:
    task_id: str
    task_hash: str
    channel: str
    function_id: str
    function_type: str
    kwargs: dict[str, Any]
    backend_id: str | None
    status: str = "pending"
    error_message: str | None = None
    created: float = field(default_factory=time.monotonic)
    changed_at: float = field(default_factory=time.monotonic)
    session_id: str | None = None           # the backend session it was delivered to
    local_only: bool = False                # asked by a peer: never forwarded again (no loops)
    remote: str | None = None               # forwarded to this peer, which reports its statuses
    no_provider: bool = False               # ended because nothing here provides the function
    changed: trio.Event = field(default_factory=trio.Event)   # set (and replaced) on each change

    @property
    def key(self) -> tuple[str, str]:
        return (self.channel, self.task_id)

    @property
    def result_kind(self) -> str | None:
        return {"pure-calculation": "pure", "query": "query"}.get(self.function_type)


@dataclass
class Session:
    """One backend process polling /task/registerTaskFunctions."""
    session_id: str
    backend_id: str | None
    functions: dict[tuple[str, str], str]   # (channel, function id) -> function type
    open_polls: int = 0
    last_poll_end: float = field(default_factory=time.monotonic)


def check_name(value: Any, what: str) -> str:
    """Function ids and (for now) channel names: <= 400 chars of dot-separated [A-Za-z0-9@_-]+."""
    if not isinstance(value, str) or not 0 < len(value) <= 400 or not _NAME_RE.match(value):
        raise UsageError(f"invalid {what}: {value!r} (dot-separated parts of A-Z a-z 0-9 @ _ -, "
                         "at most 400 characters)")
    return value


def check_function_type(value: Any) -> str:
    if value not in FUNCTION_TYPES:
        raise UsageError(f"invalid task function type {value!r}: one of {', '.join(FUNCTION_TYPES)}")
    return str(value)


def compute_task_hash(function_id: str, kwargs: dict[str, Any]) -> str:
    return canonical_sha1({"functionId": function_id, "kwargs": kwargs})
