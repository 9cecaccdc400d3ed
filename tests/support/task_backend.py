"""A task backend process for tests: `python -m tests.support.task_backend <channel> [<channel> ...]`.

Functions (every run appends a line "<function id> <kwargs JSON>" to $TASK_RUN_LOG, so tests
can count runs):
    test.ping        query            -> "pong" (readiness probe)
    test.add         pure-calculation -> a + b
    test.fail        pure-calculation -> raises ValueError with a message naming x
    test.now         query            -> {"kwargs": ..., "runs": number of runs so far}
    test.touch       action           -> creates the file `path`
    test.slow        pure-calculation -> creates `started`, then sleeps `seconds` (a long task to kill)
    test.unjsonable  query            -> a set (not JSON)
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import kachery_client as kc

_runs = 0


def _log(function_id: str, kwargs: dict[str, Any]) -> None:
    global _runs
    _runs += 1
    path = os.environ.get("TASK_RUN_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{function_id} {json.dumps(kwargs, sort_keys=True)}\n")


@kc.taskfunction("test.ping", type="query")
def ping() -> str:
    return "pong"


@kc.taskfunction("test.add", type="pure-calculation")
def add(a: float, b: float) -> float:
    _log("test.add", {"a": a, "b": b})
    return a + b


@kc.taskfunction("test.fail", type="pure-calculation")
def fail(x: Any) -> None:
    _log("test.fail", {"x": x})
    raise ValueError(f"cannot handle x={x!r}")


@kc.taskfunction("test.now", type="query")
def now(**kwargs: Any) -> dict[str, Any]:
    _log("test.now", kwargs)
    return {"kwargs": kwargs, "runs": _runs}


@kc.taskfunction("test.touch", type="action")
def touch(path: str) -> None:
    _log("test.touch", {"path": path})
    Path(path).write_text("done")


@kc.taskfunction("test.slow", type="pure-calculation")
def slow(started: str, seconds: float) -> str:
    _log("test.slow", {"started": started, "seconds": seconds})
    Path(started).write_text(str(os.getpid()))
    time.sleep(seconds)                 # the workload (a long computation), not synchronisation
    return "slept"


@kc.taskfunction("test.unjsonable", type="query")
def unjsonable() -> Any:
    return {1, 2}


if __name__ == "__main__":
    kc.run_task_backend(channels=sys.argv[1:] or ["ch1"],
                        task_function_ids=["test.ping", "test.add", "test.fail", "test.now", "test.touch",
                                           "test.slow", "test.unjsonable"])
