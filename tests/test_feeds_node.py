"""Feeds through a real node process, driven by our client (in-process and in other processes)."""

import hashlib
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import requests

import kachery_client as kc
from kachery_client.errors import NodeError, NotFoundError, OfflineError, UsageError
from kachery_client.feeds import subfeed_hash
from kacheryfs.security.keys import verify_body
from tests.support.nodeproc import client_env, running_node

SF1 = hashlib.sha1(b"sf1").hexdigest()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with running_node(tmp_path_factory.mktemp("fn") / "storage") as n:
        yield n


def check_chain(feed_id, envelopes, start=0):
    previous = envelopes[0]["body"].get("previousSignature") if start else None
    for i, e in enumerate(envelopes, start):
        assert e["body"]["messageNumber"] == i
        assert e["body"].get("previousSignature") == previous
        assert verify_body(feed_id, e["body"], e["signature"], accept_legacy=False)
        previous = e["signature"]


def request_count(node):
    return requests.get(node.url + "/stats", headers=node.headers(), timeout=10).json()["stats"]["requests"]


def wait_until_pending(node, base, expected=1, deadline=10.0):
    """Until `expected` more requests than our own /stats polls have reached the node."""
    end = time.monotonic() + deadline
    polls = 0
    while time.monotonic() < end:
        polls += 1
        if request_count(node) - base - polls >= expected:
            return
        time.sleep(0.005)
    raise AssertionError("the watch request never reached the node")


def test_create_load_append_read(shared):
    f = kc.create_feed("myfeed")
    assert f.is_writeable and f.uri == "feed://" + f.feed_id
    assert kc.load_feed("myfeed").feed_id == f.feed_id == kc.get_feed_id("myfeed")
    assert kc.load_feed(f.uri).is_writeable
    with pytest.raises(NotFoundError):
        kc.get_feed_id("no-such-feed")
    created = kc.get_feed_id("made-on-demand", create=True)
    assert kc.load_feed("made-on-demand").feed_id == created
    sf = f.load_subfeed("sf1")
    assert sf.subfeed_hash == SF1 and sf.uri == f"feed://{f.feed_id}/sf1" and sf.feed_id == f.feed_id
    sf.append_messages([{"a": 1}, {"b": 2}])
    sf.append_message({"c": 3.0})
    assert sf.get_num_local_messages() == 3
    assert sf.get_next_messages(wait_msec=0) == [{"a": 1}, {"b": 2}, {"c": 3}]
    assert sf.position == 3 and sf.get_next_messages(wait_msec=0) == []
    sf.set_position(1)
    assert sf.get_next_message(wait_msec=0) == {"b": 2} and sf.position == 2
    assert sf.get_next_messages(0, max_num_messages=5, advance_position=False) == [{"c": 3}]
    again = kc.load_subfeed(sf.uri)
    assert again.get_next_messages(wait_msec=0, max_num_messages=2) == [{"a": 1}, {"b": 2}]
    # names with slashes and non-string names, as the original quotes and hashes them
    odd = f.load_subfeed("a b/é")
    assert odd.uri == f"feed://{f.feed_id}/a%20b/%C3%A9"
    assert kc.load_subfeed(odd.uri).subfeed_hash == odd.subfeed_hash
    obj = f.load_subfeed({"x": [1, 2]})
    assert obj.uri == f"feed://{f.feed_id}/~{obj.subfeed_hash}"
    obj.append_message({"o": 1})
    assert kc.load_subfeed(obj.uri).get_next_messages(wait_msec=0) == [{"o": 1}]


def test_signed_reads_verify(shared):
    f = kc.create_feed()
    sf = f.load_subfeed("signed")
    sf.append_messages([{"t": "é", "e": 1e-7, "x": 1.0}, {"n": None, "l": [1, 2.5]}])
    signed = sf.get_next_messages(wait_msec=0, signed=True)
    assert "previousSignature" not in signed[0]["body"]
    check_chain(f.feed_id, signed)
    assert signed[0]["body"]["message"] == {"t": "é", "e": 1e-7, "x": 1} and type(signed[0]["body"]["message"]["x"]) is int


def test_read_only_feed(shared):
    f = kc.load_feed("feed://" + "ab" * 32)
    assert f.is_writeable is False
    sf = f.load_subfeed("x")
    with pytest.raises(UsageError):
        sf.append_message({"a": 1})
    assert sf.get_num_local_messages() == 0
    with pytest.raises(NodeError, match="not writeable"):       # the node refuses too
        kc.feeds._post("/feed/appendMessages", {"feedId": "ab" * 32, "subfeedHash": SF1, "messages": [{}]})


def test_watch_two_subfeeds(shared):
    f = kc.create_feed()
    a, b = f.load_subfeed("wa"), f.load_subfeed("wb")
    a.append_messages([{"a": i} for i in range(2)])
    b.append_messages([{"b": i} for i in range(5)])
    watches = {"first": {"feedId": f.feed_id, "subfeedName": "wa", "position": 0},
               "second": {"feedId": f.feed_id, "subfeedHash": b.subfeed_hash, "position": 5}}
    assert kc.watch_for_new_messages(watches, wait_msec=0) == {"first": [{"a": 0}, {"a": 1}]}
    watches["first"]["position"] = 2
    assert kc.watch_for_new_messages(watches, wait_msec=0) == {}
    t = threading.Timer(0.3, lambda: b.append_message({"b": 5}))
    t.start()
    start = time.monotonic()
    got = kc.watch_for_new_messages(watches, wait_msec=10000)
    t.join()
    assert got == {"first": [], "second": [{"b": 5}]} and time.monotonic() - start < 2
    signed = kc.watch_for_new_messages(watches, wait_msec=0, signed=True)
    check_chain(f.feed_id, signed["second"], start=5)


def test_wait_on_empty_subfeed_times_out(shared):
    sf = kc.create_feed().load_subfeed("empty")
    start = time.monotonic()
    assert sf.get_next_messages(wait_msec=1000) == []
    assert 0.95 <= time.monotonic() - start <= 1.4
    start = time.monotonic()
    assert sf.get_next_messages(wait_msec=0) == []
    assert time.monotonic() - start < 0.5


def test_long_poll_wakes_on_append_from_another_process(shared):
    f = kc.create_feed()
    sf = f.load_subfeed("poll")
    result = {}

    def watch():
        result["messages"] = sf.get_next_messages(wait_msec=20000)
        result["at"] = time.time()
    base = request_count(shared)
    t = threading.Thread(target=watch)
    t.start()
    wait_until_pending(shared, base)
    code = textwrap.dedent("""
        import sys, time, kachery_client as kc
        sf = kc.load_subfeed(sys.argv[1])
        t0 = time.time()
        sf.append_message({"from": "B"})
        print(t0)
        """)
    out = subprocess.run([sys.executable, "-c", code, sf.uri], capture_output=True, text=True, timeout=60,
                         env={**os.environ})
    assert out.returncode == 0, out.stderr
    t.join(timeout=30)
    assert result["messages"] == [{"from": "B"}]
    assert result["at"] - float(out.stdout) < 0.2


def test_message_stream_yields_new_appends(shared):
    sf = kc.create_feed().load_subfeed("stream")
    sf.append_message({"i": 0})
    stream = sf.message_stream()
    assert next(stream) == {"i": 0}
    t = threading.Timer(0.2, lambda: kc.load_subfeed(sf.uri).append_messages([{"i": 1}, {"i": 2}]))
    t.start()
    assert [next(stream), next(stream)] == [{"i": 1}, {"i": 2}]
    t.join()
    assert sf.position == 3


def test_ten_thousand_messages(shared):
    sf = kc.create_feed().load_subfeed("big")
    start = time.monotonic()
    for k in range(20):
        sf.append_messages([{"i": k * 500 + j, "payload": "x" * 50} for j in range(500)])
    got = sf.get_next_messages(wait_msec=0)
    elapsed = time.monotonic() - start
    assert [m["i"] for m in got] == list(range(10000))
    assert elapsed < 10, f"10,000 messages took {elapsed:.1f} s"
    signed = kc.load_subfeed(sf.uri).get_next_messages(wait_msec=0, signed=True)
    check_chain(sf.feed_id, signed)


def test_snapshots(shared):
    f = kc.create_feed()
    sf = f.load_subfeed("sf1")
    sf.append_messages([{"s": 1}, {"s": 2}])
    snap = f.create_snapshot(["sf1", "never-written"])
    assert snap.uri.startswith("sha1://") and snap.uri.endswith("/feed.json")
    assert snap.is_snapshot and not snap.is_writeable and snap.feed_id is None
    ssf = snap.load_subfeed("sf1")
    assert ssf.get_num_local_messages() == 2
    assert ssf.get_next_messages(wait_msec=0) == [{"s": 1}, {"s": 2}]
    assert ssf.uri == snap.uri + "?subfeedName=sf1"
    again = kc.load_subfeed(ssf.uri)
    assert list(again.message_stream()) == [{"s": 1}, {"s": 2}]
    assert kc.load_feed(snap.uri).load_subfeed("never-written").get_next_messages(wait_msec=0) == []
    assert kc.load_json(snap.uri) == {"subfeeds": {
        SF1: {"subfeedHash": SF1, "messages": [{"s": 1}, {"s": 2}]},
        subfeed_hash("never-written"): {"subfeedHash": subfeed_hash("never-written"), "messages": []}}}
    with pytest.raises(UsageError):
        ssf.append_message({"s": 3})


def test_delete_is_immediate(shared):
    f = kc.create_feed("to-delete")
    sf = f.load_subfeed("sf1")
    sf.append_messages([{"d": 1}])
    f.delete()
    assert f.is_writeable is False and kc.load_feed(f.uri).is_writeable is False
    assert sf.get_num_local_messages() == 0 and kc.load_subfeed(sf.uri).get_next_messages(wait_msec=0) == []
    f2 = kc.create_feed("to-delete-by-name")
    kc.delete_feed("to-delete-by-name")
    assert kc.load_feed(f2.uri).is_writeable is False


def test_offline_mode_has_no_feeds_but_reads_snapshots(shared, monkeypatch):
    f = kc.create_feed()
    f.load_subfeed("sf1").append_message({"off": 1})
    snap = f.create_snapshot(["sf1"])
    monkeypatch.setenv("KACHERY_OFFLINE_STORAGE_DIR", str(shared.storage_dir))
    with pytest.raises(OfflineError, match="feeds are kept by a kachery node"):
        kc.create_feed()
    with pytest.raises(OfflineError):
        kc.load_feed(f.uri)
    assert kc.load_subfeed(snap.load_subfeed("sf1").uri).get_next_messages(wait_msec=0) == [{"off": 1}]


@pytest.mark.parametrize("path, body", [
    ("/feed/appendMessages", {"feedId": "zz", "subfeedHash": SF1, "messages": [{}]}),
    ("/feed/appendMessages", {"feedId": "ab" * 32, "subfeedHash": "12", "messages": [{}]}),
    ("/feed/appendMessages", {"feedId": "ab" * 32, "subfeedHash": SF1, "messages": {"a": 1}}),
    ("/feed/appendMessages", {"feedId": "ab" * 32, "subfeedHash": SF1}),
    ("/feed/getFeedInfo", {}),
    ("/feed/getFeedInfo", {"feedId": 5}),
    ("/feed/deleteFeed", {"feedId": "x" * 64}),
    ("/feed/getNumLocalMessages", {"feedId": "ab" * 32}),
    ("/feed/createFeed", {"feedName": ""}),
    ("/feed/getFeedId", {}),
    ("/feed/watchForNewMessages", {"subfeedWatches": [], "waitMsec": 0}),
    ("/feed/watchForNewMessages", {"subfeedWatches": {"w": 1}, "waitMsec": 0}),
    ("/feed/watchForNewMessages", {"subfeedWatches": {"w": {"feedId": "ab" * 32, "subfeedHash": SF1,
                                                            "position": -1}}, "waitMsec": 0}),
    ("/feed/watchForNewMessages", {"subfeedWatches": {}, "waitMsec": -5}),
    ("/feed/watchForNewMessages", {"subfeedWatches": {}, "waitMsec": "10"}),
    ("/feed/watchForNewMessages", {"subfeedWatches": {}, "waitMsec": 0, "signed": "yes"}),
])
def test_bad_bodies_are_400(node, path, body):
    r = node.post(path, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["success"] is False and "Traceback" not in r.text and r.json()["error"]


def test_bad_messages_are_400(node):
    fid = node.post("/feed/createFeed", json={}).json()["feedId"]
    for messages in ([1], ["s"], [[1]], [None]):
        r = node.post("/feed/appendMessages", json={"feedId": fid, "subfeedHash": SF1, "messages": messages})
        assert r.status_code == 400 and "JSON object" in r.json()["error"], r.text
    r = node.post("/feed/appendMessages", data=f'{{"feedId":"{fid}","subfeedHash":"{SF1}","messages":[{{"n":NaN}}]}}',
                  headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    r = node.post("/feed/getNumLocalMessages", json={"feedId": fid, "subfeedHash": SF1})
    assert r.json() == {"success": True, "numMessages": 0}
    assert node.post("/feed/getFeedId", json={"feedName": "nope"}).json() == {"success": False, "feedId": None}
    named = node.post("/feed/createFeed", json={"feedName": "node-side"}).json()["feedId"]
    assert node.post("/feed/getFeedId", json={"feedName": "node-side"}).json() == {"success": True, "feedId": named}


def test_feeds_persist_across_restart(tmp_path, monkeypatch):
    storage = tmp_path / "storage"
    monkeypatch.delenv("KACHERY_OFFLINE_STORAGE_DIR", raising=False)
    with running_node(storage) as n:
        for k, v in client_env(n).items():
            monkeypatch.setenv(k, v)
        f = kc.create_feed("persistent")
        sf = f.load_subfeed("sf1")
        sf.append_messages([{"i": 0}, {"i": 1}])
        port = n.port
    with running_node(storage, port=port):
        again = kc.load_subfeed(sf.uri)
        assert kc.load_feed("persistent").feed_id == f.feed_id and kc.load_feed(f.uri).is_writeable
        assert again.get_next_messages(wait_msec=0) == [{"i": 0}, {"i": 1}]
        again.append_message({"i": 2})
        signed = kc.load_subfeed(sf.uri).get_next_messages(wait_msec=0, signed=True)
        assert len(signed) == 3
        check_chain(f.feed_id, signed)
    assert (storage / "feeds.db").exists()


def test_node_stops_promptly_with_a_pending_long_poll(tmp_path):
    with running_node(tmp_path / "storage") as n:
        fid = n.post("/feed/createFeed", json={}).json()["feedId"]
        result = {}

        def watch():
            result["r"] = n.post("/feed/watchForNewMessages", json={
                "subfeedWatches": {"w": {"feedId": fid, "subfeedHash": SF1, "position": 0}}, "waitMsec": 60000})
        base = request_count(n)
        t = threading.Thread(target=watch)
        t.start()
        wait_until_pending(n, base)
        start = time.monotonic()
        assert n.stop() == 0                                  # SIGTERM, not the SIGKILL fallback
        assert time.monotonic() - start < 3
        t.join(timeout=10)
        assert result["r"].status_code == 200 and result["r"].json() == {"success": True, "messages": {"w": []}}
