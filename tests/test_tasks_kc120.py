"""Tasks with the unmodified kachery-client 1.2.0 (own venv) through our node: its backend worker,
its request_task/wait, our backend and our client, mixed."""

from __future__ import annotations

import json
import signal
import textwrap
import time

import kachery_client as kc
from tests.support.nodeproc import client_env, running_node
from tests.support.tasks import (
    poll_until,
    raw_request,
    raw_wait,
    start_backend,
    stop_backend,
    wait_for_backend,
)
from tests.test_compat_kc120 import run120

BACKEND_120 = """
import json, os, time, kachery_client as kc

def log(fid, kwargs):
    with open(os.environ["TASK_RUN_LOG"], "a") as f:
        f.write(fid + " " + json.dumps(kwargs, sort_keys=True) + "\\n")

@kc.taskfunction("kc120.ping", type="query")
def ping():
    return "pong"

@kc.taskfunction("kc120.add", type="pure-calculation")
def add(a, b):
    log("kc120.add", {"a": a, "b": b})
    return a + b

@kc.taskfunction("kc120.fail", type="pure-calculation")
def fail(x):
    raise ValueError("bad x=%s" % x)

@kc.taskfunction("kc120.now", type="query")
def now(q):
    log("kc120.now", {"q": q})
    return {"q": q}

@kc.taskfunction("kc120.touch", type="action")
def touch(path):
    open(path, "w").write("done")

@kc.taskfunction("kc120.slow", type="pure-calculation")
def slow(started):
    open(started, "w").write("started")
    time.sleep(600)                     # the workload: a long computation

kc.run_task_backend(channels=["ch120"], task_function_ids=["kc120.ping", "kc120.add", "kc120.fail", "kc120.now",
                                                           "kc120.touch", "kc120.slow"])
"""

REQUESTER_120 = """
import sys, kachery_client as kc
touched = sys.argv[1]

def req(fid, kwargs, ftype, channel="ch120"):
    return kc.request_task(task_function_id=fid, task_kwargs=kwargs, task_function_type=ftype, channel=channel)

# the 1.2.0 backend
assert req("kc120.add", {"a": 1, "b": 2}, "pure-calculation").wait(30) == 3
again = req("kc120.add", {"a": 1, "b": 2}, "pure-calculation")
assert again.status == "finished" and again.wait(1) == 3
assert req("kc120.now", {"q": 5}, "query").wait(30) == {"q": 5}
assert req("kc120.now", {"q": 5}, "query").wait(30) == {"q": 5}
assert req("kc120.touch", {"path": touched}, "action").wait(30) is True      # taskResultUrl null
assert open(touched).read() == "done"
try:
    req("kc120.fail", {"x": 9}, "pure-calculation").wait(30)
    raise AssertionError("no error")
except Exception as e:
    assert "bad x=9" in str(e), e
r = req("kc120.nope", {}, "query")
assert r.status == "error" and "no backend provides" in r.error_message, r.error_message
# our backend
assert req("test.add", {"a": 5, "b": 6}, "pure-calculation", channel="ours").wait(30) == 11
assert req("test.now", {"z": 1}, "query", channel="ours").wait(30)["kwargs"] == {"z": 1}
try:
    req("test.fail", {"x": 3}, "pure-calculation", channel="ours").wait(30)
    raise AssertionError("no error")
except Exception as e:
    assert "cannot handle x=3" in str(e), e
print("OK")
"""


def runs(path, function_id):
    return [json.loads(line.split(" ", 1)[1]) for line in path.read_text().splitlines()
            if line.startswith(function_id + " ")] if path.exists() else []


def test_kc120_backend_and_requester_through_our_node(kc120_python, tmp_path, monkeypatch):
    (tmp_path / "backend120.py").write_text(textwrap.dedent(BACKEND_120))
    log120, log_ours = tmp_path / "runs120.log", tmp_path / "runs-ours.log"
    with running_node(tmp_path / "storage") as node:
        for k, v in client_env(node).items():
            monkeypatch.setenv(k, v)
        b120 = start_backend(node, [], log120, command=[kc120_python, str(tmp_path / "backend120.py")],
                             cwd=tmp_path, env={"PYTHONPATH": ""})
        ours = start_backend(node, ["ours"], log_ours)
        try:
            wait_for_backend(node, "ch120", b120, function_id="kc120.ping")
            wait_for_backend(node, "ours", ours)

            obj = raw_request(node, "ch120", "kc120.add", {"a": 40, "b": 2}, "pure-calculation", 10_000)
            assert obj["status"] == "finished"
            assert raw_wait(node, "ch120", obj["taskId"], 0, "pure-calculation")["status"] == "finished"

            out = run120(kc120_python, client_env(node), REQUESTER_120, str(tmp_path / "touched"), cwd=tmp_path)
            assert out.strip().endswith("OK"), out
            assert runs(log120, "kc120.add").count({"a": 1, "b": 2}) == 1     # the repeat came from the store
            assert runs(log120, "kc120.now").count({"q": 5}) == 2             # queries run every time

            # our client against the 1.2.0 backend
            r = kc.request_task(task_function_id="kc120.add", task_kwargs={"a": 1, "b": 2},
                                task_function_type="pure-calculation", channel="ch120")
            assert r.status == "finished" and r.result == 3
            assert kc.request_task(task_function_id="kc120.now", task_kwargs={"q": "é"}, task_function_type="query",
                                   channel="ch120").wait(30) == {"q": "é"}

            # the 1.2.0 backend killed mid-task: an error within the timeout; the node keeps serving
            slow = raw_request(node, "ch120", "kc120.slow", {"started": str(tmp_path / "started")},
                               "pure-calculation")
            poll_until(lambda: (tmp_path / "started").exists(), 30, "the slow task to start")
            # the 1.2.0 backend never reports 'running': its task stays 'queued' until it ends
            assert raw_wait(node, "ch120", slow["taskId"], 0, "pure-calculation")["status"] == "queued"
            stop_backend(b120, signal.SIGKILL)
            t = time.monotonic()
            final = raw_wait(node, "ch120", slow["taskId"], 20_000, "pure-calculation")
            assert final["status"] == "error" and "stopped responding" in final["errorMessage"], final
            assert time.monotonic() - t < 10
            assert kc.request_task(task_function_id="test.add", task_kwargs={"a": 2, "b": 2},
                                   task_function_type="pure-calculation", channel="ours").wait(30) == 4
        finally:
            print(stop_backend(b120))
            print(stop_backend(ours))
        assert node.proc.poll() is None
