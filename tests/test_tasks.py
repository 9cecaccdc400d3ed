"""Tasks through one real node: our backend in a subprocess, our client in this process."""

from __future__ import annotations

import json
import math
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import requests

import kachery_client as kc
from kachery_client.canonical_json import canonical_sha1
from kachery_client.errors import TaskError, UsageError
from tests.support.nodeproc import client_env, running_node
from tests.support.tasks import (
    poll_until,
    raw_request,
    raw_wait,
    start_backend,
    stop_backend,
    wait_for_backend,
)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One node with one backend serving channel ch1 for the module's tests."""
    d = tmp_path_factory.mktemp("tasks")
    run_log = d / "runs.log"
    with running_node(d / "storage") as node:
        backend = start_backend(node, ["ch1"], run_log)
        try:
            wait_for_backend(node, "ch1", backend)
            yield node, run_log, backend
        finally:
            out = stop_backend(backend)
            print(out)


@pytest.fixture
def node(served, monkeypatch):
    node, _, _ = served
    for k, v in client_env(node).items():
        monkeypatch.setenv(k, v)
    yield node
    assert node.proc.poll() is None, "the node must keep running"


def runs(run_log: Path, function_id: str) -> list[dict]:
    if not run_log.exists():
        return []
    return [json.loads(line.split(" ", 1)[1]) for line in run_log.read_text().splitlines()
            if line.split(" ", 1)[0] == function_id]


def request(function_id, kwargs, function_type="pure-calculation", channel="ch1"):
    return kc.request_task(task_function_id=function_id, task_kwargs=kwargs, task_function_type=function_type,
                           channel=channel)


def test_pure_calculation_runs_once_then_comes_from_the_store(node, served):
    _, run_log, _ = served
    r = request("test.add", {"a": 20, "b": 22})
    assert r.wait(30) == 42 and r.status == "finished"
    assert runs(run_log, "test.add").count({"a": 20, "b": 22}) == 1
    # the task id is the task hash: SHA-1 of the canonical JSON of function id and kwargs
    assert r.task_id == canonical_sha1({"functionId": "test.add", "kwargs": {"a": 20, "b": 22}})

    again = request("test.add", {"b": 22, "a": 20})          # same kwargs, other key order
    assert again.status == "finished"                         # answered by requestTask itself
    assert again.result == 42
    assert runs(run_log, "test.add").count({"a": 20, "b": 22}) == 1

    # stored as content, indexed in SQLite
    with sqlite3.connect(node.storage_dir / "kacheryfs.db") as db:
        (sha1,) = db.execute("SELECT result_sha1 FROM task_results WHERE channel = 'ch1' AND task_hash = ?",
                             (r.task_id,)).fetchone()
        # and recorded as content stored here, like every blob the node writes (the mount lists it)
        assert db.execute("SELECT kind FROM blobs WHERE sha1 = ?", (sha1,)).fetchone() == ("owned",)
    assert (node.storage_dir / "sha1" / sha1[0:2] / sha1[2:4] / sha1[4:6] / sha1).read_bytes() == b"42"


def test_identical_concurrent_pure_requests_share_one_run(node, served, tmp_path):
    _, run_log, _ = served
    kwargs = {"started": str(tmp_path / "started"), "seconds": 0.5}
    results = []

    def one():
        results.append(request("test.slow", kwargs).wait(30))
    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == ["slept"] * 4
    assert runs(run_log, "test.slow").count(kwargs) == 1


def test_statuses_pending_queued_running_finished(node, served, tmp_path):
    # the backend runs one task at a time: while A runs, B is delivered and stays 'queued'
    a = raw_request(node, "ch1", "test.slow", {"started": str(tmp_path / "a"), "seconds": 2},
                    "pure-calculation")
    assert a["status"] in ("pending", "queued", "running")
    poll_until(lambda: (tmp_path / "a").exists(), 30, "task A to start")
    assert raw_wait(node, "ch1", a["taskId"])["status"] == "running"
    b = raw_request(node, "ch1", "test.slow", {"started": str(tmp_path / "b"), "seconds": 0},
                    "pure-calculation")
    seen = {b["status"]}
    final = poll_until(lambda: (seen.add(s := raw_wait(node, "ch1", b["taskId"])["status"]) or s
                                in ("finished", "error")) and s, 30, "task B to end")
    assert final == "finished"
    assert "queued" in seen and seen <= {"pending", "queued", "running", "finished"}, seen
    assert raw_wait(node, "ch1", a["taskId"], 10_000)["status"] == "finished"


def test_errors_propagate_with_their_message_and_the_backend_keeps_serving(node):
    r = request("test.fail", {"x": 7})
    with pytest.raises(TaskError, match=r"ValueError: cannot handle x=7"):
        r.wait(30)
    assert r.status == "error" and "cannot handle x=7" in r.error_message
    assert request("test.ping", {}, "query").wait(30) == "pong"
    with pytest.raises(TaskError, match="not JSON-serialisable"):
        request("test.unjsonable", {}, "query").wait(30)
    assert request("test.add", {"a": 1, "b": 1}).wait(30) == 2


def test_a_failed_pure_calculation_is_retried_on_the_next_request(node, served):
    _, run_log, _ = served
    for _ in range(2):
        with pytest.raises(TaskError):
            request("test.fail", {"x": "retry"}).wait(30)
    assert runs(run_log, "test.fail").count({"x": "retry"}) == 2


def test_query_runs_every_time(node, served):
    _, run_log, _ = served
    first = request("test.now", {"q": 1}, "query").wait(30)
    second = request("test.now", {"q": 1}, "query").wait(30)
    assert first["kwargs"] == {"q": 1} and second["runs"] > first["runs"]
    assert runs(run_log, "test.now").count({"q": 1}) == 2


def test_action(node, tmp_path):
    target = tmp_path / "touched"
    r = request("test.touch", {"path": str(target)}, "action")
    assert r.wait(30) is True and target.read_text() == "done"
    assert r.task_result_url is None


def test_unknown_function_and_wrong_type_are_clear_errors(node):
    r = request("test.nope", {})
    assert r.status == "error" and r.error_message == "no backend provides task function test.nope on channel ch1"
    with pytest.raises(TaskError, match="no backend provides task function test.nope"):
        r.wait(5)
    with pytest.raises(TaskError, match="registered as 'pure-calculation', but was requested as 'query'"):
        request("test.add", {"a": 1, "b": 2}, "query").wait(5)
    with pytest.raises(TaskError, match="no backend provides"):
        request("test.add", {"a": 1, "b": 2}, channel="other-channel").wait(5)


def test_kwargs_must_be_a_json_object(node):
    with pytest.raises(UsageError, match="JSON-serialisable"):
        request("test.add", {"a": object()})
    with pytest.raises(UsageError, match="JSON-serialisable"):
        request("test.add", {"a": math.nan})
    with pytest.raises(UsageError, match="must be a dict"):
        request("test.add", [1, 2])  # type: ignore[arg-type]
    for bad in ([1, 2], "x", 3, None):
        r = node.post("/task/requestTask", json={"channelName": "ch1", "taskFunctionId": "test.add",
                                                 "taskKwargs": bad, "taskFunctionType": "pure-calculation"})
        assert r.status_code == 400, (bad, r.text)
        assert "taskKwargs" in r.json()["error"]
    r = node.post("/task/requestTask", json={"channelName": "ch1", "taskFunctionId": "test.add",
                                             "taskKwargs": {}, "taskFunctionType": "calculation"})
    assert r.status_code == 400 and "invalid task function type" in r.json()["error"]
    r = node.post("/task/requestTask", json={"channelName": "a/b", "taskFunctionId": "test.add",
                                             "taskKwargs": {}, "taskFunctionType": "query"})
    assert r.status_code == 400 and "invalid channel name" in r.json()["error"]


def test_result_urls_need_their_token(node):
    r = request("test.add", {"a": 2, "b": 3})
    assert r.wait(30) == 5
    url = r.task_result_url
    assert url.startswith(f"http://127.0.0.1:{node.port}/taskResults/ch1/{r.task_id[:2]}/{r.task_id[2:4]}/"
                          f"{r.task_id[4:6]}/{r.task_id}?token=")
    assert requests.get(url, timeout=10).json() == 5                      # no client auth header needed
    assert requests.get(url + "&cb=$abcdefghij", timeout=10).json() == 5  # the original's cache buster
    base = url.split("?")[0]
    assert requests.get(base, timeout=10).status_code == 403
    assert requests.get(base + "?token=" + "0" * 40, timeout=10).status_code == 403
    assert requests.put(base, data=b"666", timeout=10).status_code == 403

    signed = node.post("/task/createSignedTaskResultUploadUrl",
                       json={"channelName": "ch1", "taskId": "1" * 40, "size": 4}).json()["signedUrl"]
    assert requests.put(signed, data=b"12345", timeout=10).status_code == 400          # not the signed size
    assert requests.put(signed.replace("size=4", "size=5"), data=b"12345", timeout=10).status_code == 403
    assert requests.put(signed, data=b"nope", timeout=10).status_code == 400          # not JSON
    assert requests.put(signed, data=b"[42]", timeout=10).status_code == 200
    assert requests.post(node.url + "/task/createSignedTaskResultUploadUrl",
                         json={"channelName": "ch1", "taskId": "1" * 40, "size": 4}, timeout=10).status_code == 403


def test_register_long_poll_returns_empty_at_its_timeout(node):
    t = time.monotonic()
    r = node.post("/task/registerTaskFunctions", json={
        "taskFunctions": [{"channelName": "idle", "taskFunctionId": "idle.f", "taskFunctionType": "query"}],
        "backendId": None, "timeoutMsec": 2000})
    assert r.json() == {"success": True, "requestedTasks": []}
    assert 1.8 <= time.monotonic() - t <= 3.0


def test_a_request_nobody_picks_up_ends_in_error(node):
    # a backend registers once and never polls again
    r = node.post("/task/registerTaskFunctions", json={
        "taskFunctions": [{"channelName": "ghost", "taskFunctionId": "ghost.f", "taskFunctionType": "query"}],
        "backendId": None, "timeoutMsec": 0})
    assert r.json()["requestedTasks"] == []
    t = time.monotonic()
    obj = raw_request(node, "ghost", "ghost.f", {"n": 1})
    assert obj["status"] == "pending"
    final = raw_wait(node, "ghost", obj["taskId"], 20_000)
    assert final["status"] == "error" and "went away before picking up" in final["errorMessage"]
    assert time.monotonic() - t < 10


def test_wait_on_unknown_task_and_null_result_url(node):
    obj = raw_wait(node, "ch1", "f" * 32, 0, "action")
    assert obj["status"] == "error" and "unknown task" in obj["errorMessage"]


def test_backend_killed_mid_task_gives_an_error_within_the_timeout(tmp_path, monkeypatch):
    with running_node(tmp_path / "storage") as node:
        for k, v in client_env(node).items():
            monkeypatch.setenv(k, v)
        backend = start_backend(node, ["kill"], tmp_path / "runs.log")
        try:
            wait_for_backend(node, "kill", backend)
            r = request("test.slow", {"started": str(tmp_path / "started"), "seconds": 600}, channel="kill")
            poll_until(lambda: (tmp_path / "started").exists(), 30, "the task to start")
            stop_backend(backend, signal.SIGKILL)
            t = time.monotonic()
            with pytest.raises(TaskError, match="stopped responding"):
                r.wait(30)
            assert time.monotonic() - t < 10
            # the node keeps serving, and a new backend takes over
            backend = start_backend(node, ["kill"], tmp_path / "runs.log")
            wait_for_backend(node, "kill", backend)
            assert request("test.add", {"a": 1, "b": 2}, channel="kill").wait(30) == 3
        finally:
            stop_backend(backend)


def test_backend_stopped_with_sigterm_reports_its_running_task(tmp_path, monkeypatch):
    with running_node(tmp_path / "storage") as node:
        for k, v in client_env(node).items():
            monkeypatch.setenv(k, v)
        backend = start_backend(node, ["term"], tmp_path / "runs.log")
        try:
            wait_for_backend(node, "term", backend)
            r = request("test.slow", {"started": str(tmp_path / "started"), "seconds": 600}, channel="term")
            poll_until(lambda: (tmp_path / "started").exists(), 30, "the task to start")
            backend.send_signal(signal.SIGTERM)
            assert backend.wait(10) == 0
            with pytest.raises(TaskError, match="stopped while running the task"):
                r.wait(5)
        finally:
            stop_backend(backend)


def test_pure_results_survive_a_node_restart(tmp_path, monkeypatch):
    storage = tmp_path / "storage"
    with running_node(storage) as node:
        for k, v in client_env(node).items():
            monkeypatch.setenv(k, v)
        backend = start_backend(node, ["ch1"], tmp_path / "runs.log")
        try:
            wait_for_backend(node, "ch1", backend)
            first = request("test.add", {"a": 100, "b": 1})
            assert first.wait(30) == 101
        finally:
            stop_backend(backend)
    with running_node(storage) as node:                       # no backend at all now
        for k, v in client_env(node).items():
            monkeypatch.setenv(k, v)
        r = request("test.add", {"a": 100, "b": 1})
        assert r.status == "finished" and r.result == 101
        # same path and token (derived from the node's key) on the new port
        assert r.task_result_url.split("/", 3)[3] == first.task_result_url.split("/", 3)[3]
        assert kc.TaskRequest(channel="ch1", task_id=first.task_id, task_function_id="test.add",
                              task_function_type="pure-calculation", task_result_url=None, status="pending",
                              error_message=None).wait(5) == 101
        assert len(runs(tmp_path / "runs.log", "test.add")) == 1
