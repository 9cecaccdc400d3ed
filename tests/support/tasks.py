"""Task backends in subprocesses for tests: start one, wait until the node routes to it, stop it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import requests

from .nodeproc import NodeProc, client_env

ROOT = Path(__file__).resolve().parent.parent.parent
READY_DEADLINE = 30.0
_outputs: dict[int, Path] = {}


def start_backend(node: NodeProc, channels: Sequence[str], run_log: Path,
                  command: Sequence[str] | None = None, cwd: Path | None = None,
                  env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Our test backend (tests/support/task_backend.py) or `command`, in its own process group;
    its output goes to <run_log>.out (a file: a full pipe would block the backend)."""
    with open(run_log.with_suffix(".out"), "ab") as out:
        proc = subprocess.Popen(
            list(command or [sys.executable, "-m", "tests.support.task_backend", *channels]),
            env={**os.environ, "PYTHONPATH": str(ROOT), **client_env(node), "TASK_RUN_LOG": str(run_log),
                 **(env or {})},
            cwd=cwd or ROOT, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
    _outputs[proc.pid] = run_log.with_suffix(".out")
    return proc


def stop_backend(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> str:
    """Stop the backend's whole process group (the 1.2.0 backend forks a worker); returns its output."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)     # leftover children (a forked worker) of that group
    except ProcessLookupError:
        pass
    path = _outputs.pop(proc.pid, None)
    return path.read_text(errors="replace") if path and path.exists() else ""


def raw_request(node: NodeProc, channel: str, function_id: str, kwargs: Any, function_type: str = "query",
                timeout_msec: int = 0) -> dict[str, Any]:
    r = node.post("/task/requestTask", json={"channelName": channel, "taskFunctionId": function_id,
                                             "taskKwargs": kwargs, "taskFunctionType": function_type,
                                             "timeoutMsec": timeout_msec})
    assert r.status_code == 200, r.text
    return r.json()


def raw_wait(node: NodeProc, channel: str, task_id: str, timeout_msec: int = 0,
             function_type: str = "query") -> dict[str, Any]:
    r = node.post("/task/waitForTaskResult", json={"channelName": channel, "taskId": task_id,
                                                   "taskResultUrl": None, "taskFunctionType": function_type,
                                                   "timeoutMsec": timeout_msec})
    assert r.status_code == 200, r.text
    return r.json()


def wait_for_backend(node: NodeProc, channel: str, proc: subprocess.Popen[bytes] | None = None,
                     function_id: str = "test.ping") -> None:
    """Poll with a harmless query until the node routes to a backend on `channel`."""
    deadline = time.monotonic() + READY_DEADLINE
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the backend exited with {proc.returncode}: {stop_backend(proc)}")
        obj = raw_request(node, channel, function_id, {}, timeout_msec=2000)
        if obj["status"] == "finished":
            return
        assert "no backend provides" in obj.get("errorMessage", ""), obj
        if time.monotonic() > deadline:
            raise RuntimeError(f"no backend on {channel} within {READY_DEADLINE} s")
        time.sleep(0.05)


def poll_until(check: Callable[[], Any], deadline_seconds: float, what: str) -> Any:
    deadline = time.monotonic() + deadline_seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {deadline_seconds} s waiting for {what}")
        time.sleep(0.02)


def get(url: str) -> requests.Response:
    return requests.get(url, timeout=30)
