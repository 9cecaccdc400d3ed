"""Feeds through our node with the unmodified kachery-client 1.2.0 (docs/PROTOCOL.md 13, items 21-31)."""

import hashlib
import json
import os
import subprocess
import textwrap
import time

import pytest

import kachery_client as kc
from kacheryfs.security.keys import verify, verify_body
from tests.support.nodeproc import client_env, running_node
from tests.test_compat_kc120 import run120

SF1 = hashlib.sha1(b"sf1").hexdigest()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with running_node(tmp_path_factory.mktemp("kcf") / "storage") as n:
        yield n


def run_json(python, node, script, *args, cwd):
    return json.loads(run120(python, client_env(node), script, *args, cwd=cwd).strip().splitlines()[-1])


def test_items_21_to_25_and_27_to_31(kc120_python, node, tmp_path):
    out = run_json(kc120_python, node, """
        import json, time, threading, kachery_client as kc
        r = {}
        f = kc.create_feed("myfeed")                                                  # 21
        assert f.is_writeable is True
        assert kc.load_feed("myfeed").feed_id == f.feed_id == kc.get_feed_id("myfeed")
        sf = f.load_subfeed("sf1")
        sf.append_messages([{"a": 1}, {"b": 2}])                                      # 22
        assert sf.get_num_local_messages() == 2
        assert sf.get_next_messages(wait_msec=0) == [{"a": 1}, {"b": 2}]
        r["signed"] = kc.load_feed(f.uri).load_subfeed("sf1").get_next_messages(wait_msec=0, signed=True)  # 23
        nf = f.load_subfeed("numbers")                                                # 24
        nf.append_message({"t": "é", "e": 1e-7, "x": 1.0})
        r["numbers"] = nf.get_next_messages(wait_msec=0, signed=True)
        empty = f.load_subfeed("empty")                                               # 25
        t0 = time.monotonic()
        assert empty.get_next_messages(wait_msec=1000) == []
        r["empty_wait"] = time.monotonic() - t0
        other = f.load_subfeed("other")                                               # 27
        other.append_messages([{"o": i} for i in range(5)])
        watches = {"byname": {"feedId": f.feed_id, "subfeedName": "sf1", "position": 0},
                   "byhash": {"feedId": f.feed_id, "subfeedHash": other.subfeed_hash, "position": 5}}
        got = kc.watch_for_new_messages(watches, wait_msec=0)
        assert got == {"byname": [{"a": 1}, {"b": 2}]}, got
        one = f.load_subfeed("sf1")
        assert one.get_next_message(wait_msec=0) == {"a": 1} and one.position == 1
        two = f.load_subfeed("sf1")                                                   # 28
        two.set_position(1)
        assert two.get_next_messages(wait_msec=0) == [{"b": 2}]
        stream = f.load_subfeed("stream")
        threading.Timer(0.2, lambda: f.load_subfeed("stream").append_messages([{"s": 0}, {"s": 1}])).start()
        it = stream.message_stream()
        assert [next(it), next(it)] == [{"s": 0}, {"s": 1}]
        ro = kc.load_feed("feed://" + "ab" * 32)                                      # 29
        assert ro.is_writeable is False
        try:
            ro.load_subfeed("x").append_message({"a": 1})
            raise AssertionError("appended to a read-only feed")
        except Exception as e:
            assert "readonly" in str(e)
        snap = f.create_snapshot(["sf1"])                                             # 30
        assert snap.uri.startswith("sha1://") and snap.uri.endswith("/feed.json"), snap.uri
        assert snap.load_subfeed("sf1").get_next_messages(wait_msec=0) == [{"a": 1}, {"b": 2}]
        assert kc.load_feed(snap.uri).load_subfeed("sf1").get_num_local_messages() == 2
        r["snapshot_subfeed_uri"] = snap.load_subfeed("sf1").uri
        r["feed_id"], r["sf1_uri"] = f.feed_id, sf.uri
        doomed = kc.create_feed()                                                     # 31
        dsf = doomed.load_subfeed("sf1")
        dsf.append_message({"d": 1})
        doomed.delete()
        assert kc.load_feed(doomed.uri).is_writeable is False
        assert dsf.get_num_local_messages() == 0
        assert kc.load_feed(doomed.uri).load_subfeed("sf1").get_next_messages(wait_msec=0) == []
        print(json.dumps(r))
        """, cwd=tmp_path)
    fid = out["feed_id"]
    # 23: numbering, chaining, signatures by the feed's key
    e0, e1 = out["signed"]
    assert e0["body"]["messageNumber"] == 0 and e1["body"]["messageNumber"] == 1
    assert "previousSignature" not in e0["body"] and e1["body"]["previousSignature"] == e0["signature"]
    assert all(verify_body(fid, e["body"], e["signature"], accept_legacy=False) for e in (e0, e1))
    # 24: only the canonical form (§8.1) verifies; 1.0 came back as 1
    [n] = out["numbers"]
    assert n["body"]["message"] == {"t": "é", "e": 1e-7, "x": 1} and type(n["body"]["message"]["x"]) is int
    assert verify_body(fid, n["body"], n["signature"], accept_legacy=False)
    for other_form in (json.dumps(n["body"], sort_keys=True, separators=(",", ":")),
                       json.dumps(n["body"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)):
        assert not verify(fid, hashlib.sha1(other_form.encode()).digest(), n["signature"])
    # 25
    assert 0.8 <= out["empty_wait"] <= 1.2, out["empty_wait"]
    # the same feed through our client: the node is the single source of truth
    env = {**client_env(node), "KACHERY_OFFLINE_STORAGE_DIR": ""}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        assert kc.load_subfeed(out["sf1_uri"]).get_next_messages(wait_msec=0) == [{"a": 1}, {"b": 2}]
        assert kc.load_subfeed(out["snapshot_subfeed_uri"]).get_next_messages(wait_msec=0) == [{"a": 1}, {"b": 2}]
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _requests_seen(node):
    import requests
    return requests.get(node.url + "/stats", headers=node.headers(), timeout=10).json()["stats"]["requests"]


def test_item_26_watch_wakes_within_200ms_of_another_process_append(kc120_python, node, tmp_path):
    setup = run_json(kc120_python, node, """
        import json, kachery_client as kc
        f = kc.create_feed()
        print(json.dumps({"uri": f.load_subfeed("live").uri}))
        """, cwd=tmp_path)
    watcher = subprocess.Popen(
        [kc120_python, "-c", textwrap.dedent("""
            import sys, json, time, kachery_client as kc
            sf = kc.load_subfeed(sys.argv[1])
            msgs = sf.get_next_messages(wait_msec=20000)
            print(json.dumps({"at": time.time(), "messages": msgs}))
            """), setup["uri"]],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, **client_env(node), "PYTHONPATH": ""})
    try:
        # the watcher makes two requests (getFeedInfo, then the long poll): wait until both arrived
        base = _requests_seen(node)
        deadline = time.monotonic() + 30
        polls = 0
        while _requests_seen(node) - base - (polls := polls + 1) < 2:
            assert time.monotonic() < deadline and watcher.poll() is None, "the watch never reached the node"
            time.sleep(0.01)
        appender = run_json(kc120_python, node, """
            import sys, json, time, kachery_client as kc
            sf = kc.load_subfeed(sys.argv[1])
            t0 = time.time()
            sf.append_message({"from": "B"})
            print(json.dumps({"t0": t0}))
            """, setup["uri"], cwd=tmp_path)
        stdout, stderr = watcher.communicate(timeout=30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait(timeout=5)
    assert watcher.returncode == 0, stderr
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["messages"] == [{"from": "B"}]
    assert result["at"] - appender["t0"] < 0.2, result["at"] - appender["t0"]


def test_feed_named_by_our_client_loads_by_name_in_120(kc120_python, node, tmp_path,
                                                        monkeypatch):
    """A feed named by our client loads by that name in 1.2.0 (same client-side name record)."""
    monkeypatch.delenv("KACHERY_OFFLINE_STORAGE_DIR", raising=False)
    for k, v in client_env(node).items():
        monkeypatch.setenv(k, v)
    f = kc.create_feed("named-by-ours")
    f.load_subfeed("sf1").append_messages([{"ours": 1}])
    out = run_json(kc120_python, node, """
        import json, kachery_client as kc
        f = kc.load_feed("named-by-ours")
        print(json.dumps({"id": f.feed_id, "w": f.is_writeable,
                          "m": f.load_subfeed("sf1").get_next_messages(wait_msec=0)}))
        """, cwd=tmp_path)
    assert out == {"id": f.feed_id, "w": True, "m": [{"ours": 1}]}
