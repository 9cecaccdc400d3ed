"""Tasks across nodes: a backend on node A provides functions to clients of node B (same channel)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.support.network import node_id, write_config
from tests.support.nodeproc import client_env, free_port, running_node
from tests.support.tasks import (
    poll_until,
    raw_request,
    raw_wait,
    start_backend,
    stop_backend,
    wait_for_backend,
)

CHANNEL = "testchan"


def request_on(node, function_id: str, kwargs: dict, function_type: str = "pure-calculation",
               wait: float = 60) -> dict:
    """Our client's request_task through `node`, in its own process: status, result, error."""
    code = ("import sys, json, kachery_client as kc\n"
            "r = kc.request_task(task_function_id=sys.argv[1], task_kwargs=json.loads(sys.argv[2]),\n"
            "                    task_function_type=sys.argv[3], channel=sys.argv[4])\n"
            "try:\n    result = r.wait(float(sys.argv[5]))\nexcept Exception as e:\n    result = repr(e)\n"
            "print(json.dumps({'status': r.status, 'result': result, 'error': r.error_message}))")
    out = subprocess.run([sys.executable, "-c", code, function_id, json.dumps(kwargs), function_type, CHANNEL,
                          str(wait)], capture_output=True, text=True, timeout=wait + 60,
                         env={**os.environ, **client_env(node)})
    assert out.returncode == 0, out.stderr + node.log()[-3000:]
    return json.loads(out.stdout)


def runs(log, function_id: str) -> list:
    if not log.exists():
        return []
    return [json.loads(line.split(" ", 1)[1]) for line in log.read_text().splitlines()
            if line.startswith(function_id + " ")]


def test_backend_on_a_serves_clients_of_b(tmp_path):
    sa, sb, sc = (tmp_path / n / "storage" for n in ("a", "b", "c"))
    port_a = free_port()
    write_config(sa, channel=CHANNEL, members=[node_id(sb)])                 # C is not a member
    for s in (sb, sc):
        write_config(s, channel=CHANNEL, peers=[f"http://127.0.0.1:{port_a}"], members=[node_id(sa)])
    run_log = tmp_path / "runs.log"
    with running_node(sa, port=port_a) as a, running_node(sb) as b, running_node(sc) as c:
        backend = start_backend(a, [CHANNEL], run_log)
        try:
            wait_for_backend(a, CHANNEL, backend)
            # A pure calculation requested on B runs on A; its result comes back.
            got = request_on(b, "test.add", {"a": 20, "b": 22})
            assert got == {"status": "finished", "result": 42, "error": None}
            # Again, on B: answered from B's own store, without running.
            t = time.monotonic()
            again = raw_request(b, CHANNEL, "test.add", {"b": 22, "a": 20}, "pure-calculation")
            assert again["status"] == "finished" and time.monotonic() - t < 2
            assert runs(run_log, "test.add") == [{"a": 20, "b": 22}]
            # Queries and actions too; errors come back with their message.
            assert request_on(b, "test.ping", {}, "query")["result"] == "pong"
            (tmp_path / "touched").unlink(missing_ok=True)
            assert request_on(b, "test.touch", {"path": str(tmp_path / "touched")}, "action")["status"] == "finished"
            assert (tmp_path / "touched").read_text() == "done"
            failed = request_on(b, "test.fail", {"x": 7})
            assert failed["status"] == "error" and "cannot handle x=7" in failed["error"]
            # A function nobody provides, anywhere: a clear error, quickly.
            none = request_on(b, "test.nobody", {})
            assert none["status"] == "error" and "no backend provides" in none["error"]
            # A node outside the channel is refused by A.
            refused = request_on(c, "test.add", {"a": 1, "b": 1})
            assert refused["status"] == "error" and "not a member" in refused["error"], refused

            # The backend killed mid-task: B's requester gets an error within the timeout.
            started = tmp_path / "started"
            task = raw_request(b, CHANNEL, "test.slow", {"started": str(started), "seconds": 600},
                               "pure-calculation")
            poll_until(started.exists, 30, "the task to start on A")
            stop_backend(backend, signal.SIGKILL)
            t = time.monotonic()
            end = raw_wait(b, CHANNEL, task["taskId"], timeout_msec=20000, function_type="pure-calculation")
            assert end["status"] == "error" and "stopped responding" in end["errorMessage"]
            assert time.monotonic() - t < 15
            # Both nodes keep serving.
            backend = start_backend(a, [CHANNEL], run_log)
            wait_for_backend(a, CHANNEL, backend)
            assert request_on(b, "test.add", {"a": 1, "b": 2})["result"] == 3
        finally:
            stop_backend(backend)
