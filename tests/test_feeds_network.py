"""Feeds across nodes: messages appended on the owning node A are read on node B through the peer API."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

from tests.support.network import source_and_reader
from tests.support.nodeproc import client_env, running_node


def client(node, code: str, *args: str, timeout: float = 120) -> str:
    out = subprocess.run([sys.executable, "-c", "import sys, json, time, kachery_client as kc\n" + code, *args],
                         capture_output=True, text=True, timeout=timeout, env={**os.environ, **client_env(node)})
    assert out.returncode == 0, out.stderr[-3000:] + "\n--- node log ---\n" + node.log()[-3000:]
    return out.stdout.strip()


def test_append_on_a_read_and_wake_on_b(tmp_path):
    sa, sb, port_a = source_and_reader(tmp_path)
    with running_node(sa, port=port_a) as a, running_node(sb) as b:
        uri = client(a, "sf = kc.create_feed().load_subfeed('results')\n"
                        "sf.append_messages([{'n': i} for i in range(3)])\nprint(sf.uri)")
        got = client(b, "sf = kc.load_subfeed(sys.argv[1])\n"
                        "print(json.dumps([sf.get_num_local_messages(), sf.get_next_messages(wait_msec=0)]))",
                     uri)
        count, messages = json.loads(got)
        assert count == 3 and messages == [{"n": 0}, {"n": 1}, {"n": 2}]
        # Signed reads on B carry A's signatures, which verify with the feed id.
        signed = json.loads(client(b, "sf = kc.load_subfeed(sys.argv[1])\n"
                                      "print(json.dumps(sf.get_next_messages(wait_msec=0, signed=True)))", uri))
        from kacheryfs.security.keys import verify_body
        feed_id = uri.split("/")[2]
        assert all(verify_body(feed_id, m["body"], m["signature"], accept_legacy=False) for m in signed)

        # A long poll on B wakes when A appends (well under 1 s on loopback).
        watcher = subprocess.Popen(
            [sys.executable, "-c", "import sys, time, json, kachery_client as kc\n"
             "sf = kc.load_subfeed(sys.argv[1]); sf.set_position(3)\n"
             "print('ready', flush=True)\n"
             "m = sf.get_next_messages(wait_msec=20000)\n"
             "print(json.dumps([time.time(), m]), flush=True)", uri],
            stdout=subprocess.PIPE, text=True, env={**os.environ, **client_env(b)})
        try:
            assert watcher.stdout.readline().strip() == "ready"
            # Give the watch time to reach B's node, so that the append below wakes a waiting poll
            # (were it late, it would return at once: the assertions still hold).
            time.sleep(0.3)
            t_append = float(client(a, "sf = kc.load_subfeed(sys.argv[1])\nt = time.time()\n"
                                       "sf.append_message({'n': 3})\nprint(t)", uri))
            woke, messages = json.loads(watcher.stdout.readline())
            assert messages == [{"n": 3}]
            assert woke - t_append < 1.0, f"B woke {woke - t_append:.3f} s after A's append"
        finally:
            watcher.kill()
            watcher.wait()
        # B cannot append to A's feed.
        out = subprocess.run([sys.executable, "-c", "import sys, kachery_client as kc\n"
                              "kc.load_subfeed(sys.argv[1]).append_message({'x': 1})", uri],
                             capture_output=True, text=True, env={**os.environ, **client_env(b)})
        assert out.returncode != 0


def test_tampered_messages_never_cross(tmp_path):
    """A message altered in A's database is not served by A, so B never sees it or what follows."""
    sa, sb, port_a = source_and_reader(tmp_path)
    with running_node(sa, port=port_a) as a:
        uri = client(a, "sf = kc.create_feed().load_subfeed('x')\n"
                        "sf.append_messages([{'v': i} for i in range(5)])\nprint(sf.uri)")
    db = sqlite3.connect(sa / "feeds.db")
    row = db.execute("SELECT message FROM subfeedMessages WHERE position = 2").fetchone()
    db.execute("UPDATE subfeedMessages SET message = ? WHERE position = 2", (row[0].replace('"v":2', '"v":7'),))
    db.commit()
    db.close()
    with running_node(sa, port=port_a), running_node(sb) as b:
        got = json.loads(client(b, "sf = kc.load_subfeed(sys.argv[1])\n"
                                   "print(json.dumps(sf.get_next_messages(wait_msec=0)))", uri))
        assert got == [{"v": 0}, {"v": 1}]


def test_ten_thousand_messages_cross_in_seconds(tmp_path):
    sa, sb, port_a = source_and_reader(tmp_path)
    with running_node(sa, port=port_a) as a, running_node(sb) as b:
        uri = client(a, "sf = kc.create_feed().load_subfeed('many')\n"
                        "for s in range(0, 10000, 500):\n"
                        "    sf.append_messages([{'i': i} for i in range(s, s + 500)])\nprint(sf.uri)")
        t = time.monotonic()
        got = json.loads(client(b, "sf = kc.load_subfeed(sys.argv[1])\n"
                                   "print(json.dumps(sf.get_next_messages(wait_msec=0)))", uri))
        elapsed = time.monotonic() - t
        assert got == [{"i": i} for i in range(10000)]
        assert elapsed < 20, f"10,000 messages took {elapsed:.1f} s to cross"
