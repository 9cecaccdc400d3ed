"""GET /metrics on real nodes: Prometheus' own parser reads it, and the counters follow what the
nodes did (a store, a peer fetch, a mounted read, a feed append)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.mount import mounted_node
from tests.support.network import source_and_reader
from tests.support.nodeproc import NodeProc, client_env, running_node

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(node: NodeProc) -> Samples:
    r = requests.get(node.url + "/metrics", timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        assert family.name.startswith("kacheryfs_"), family.name
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape_until(node: NodeProc, done: Callable[[Samples], bool], deadline: float = 15.0) -> Samples:
    end = time.monotonic() + deadline
    while not done(samples := scrape(node)):
        assert time.monotonic() < end, "the metrics never reached the expected state"
        time.sleep(0.05)
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def client(node: NodeProc, code: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-c", "import sys, kachery_client as kc\n" + code, *args],
                         capture_output=True, text=True, timeout=120, env={**os.environ, **client_env(node)})
    assert out.returncode == 0, out.stderr[-3000:] + node.log()[-3000:]
    return out.stdout.strip()


def test_counters_follow_a_store_a_peer_fetch_and_a_mounted_read(tmp_path):
    sa, sb, port_a = source_and_reader(tmp_path)
    data = os.urandom(3_000_000)
    with running_node(sa, port=port_a) as a:
        before_a = scrape(a)
        assert value(before_a, "kacheryfs_build_info", version="0.1.0") == 1.0
        stored = a.post("/store", data=data, headers={"X-Kachery-Name": "data.bin"}).json()
        assert stored["success"], stored
        sha1 = stored["sha1"]
        text_uri = client(a, "print(kc.store_text('via the shared directory'))")
        client(a, "sf = kc.create_feed('m').load_subfeed('s'); sf.append_messages([{'a': 1}, {'b': 2}])")
        after_a = scrape(a)
        for name, via, size in (("stored_bytes", "http", len(data)), ("stored_blobs", "http", 1),
                                ("stored_blobs", "client", 1),
                                ("stored_bytes", "client", len("via the shared directory"))):
            rise = value(after_a, f"kacheryfs_{name}_total", via=via) - value(before_a, f"kacheryfs_{name}_total", via=via)
            assert rise == size, (name, via, rise)
        assert value(after_a, "kacheryfs_feed_messages_appended_total") \
            - value(before_a, "kacheryfs_feed_messages_appended_total") == 2
        assert value(after_a, "kacheryfs_http_requests_total", method="POST", route="/store", status="200") >= 1
        assert value(after_a, "kacheryfs_storage_blobs") >= 2
        assert value(after_a, "kacheryfs_owned_bytes") == value(after_a, "kacheryfs_storage_bytes") >= len(data)

        with mounted_node(tmp_path / "b", sb, tmp_path / "mnt") as (b, mnt):
            before_b = scrape(b)
            # A peer fetch (through the client API), then a mounted read of content only A has.
            assert client(b, "print(kc.load_text(sys.argv[1]))", text_uri) == "via the shared directory"
            after_fetch = scrape(b)
            assert value(after_fetch, "kacheryfs_fetched_blobs_total", source_kind="peer") \
                - value(before_b, "kacheryfs_fetched_blobs_total", source_kind="peer") == 1
            assert (mnt / "sha1" / sha1 / "data.bin").read_bytes() == data
            # The read returns once its chunks are verified; the transfer ends (publish) just after.
            scrape_until(b, lambda m: value(m, "kacheryfs_transfers_in_progress") == 0
                         and value(m, "kacheryfs_fetch_duration_seconds_count", outcome="ok") == 2)
            # A scrape reads the totals (in a worker thread) before it renders the counters, so the
            # one that saw the transfers end may hold totals from just before; the next one began
            # after both fetches were recorded.
            after_b = scrape(b)
            assert requests.get(b.url + "/ui/status.json", timeout=30).json()["mountPoint"] == str(mnt)

    fetched = value(after_b, "kacheryfs_fetched_bytes_total", source_kind="peer") \
        - value(before_b, "kacheryfs_fetched_bytes_total", source_kind="peer")
    assert fetched == len(data) + len("via the shared directory")
    assert value(after_b, "kacheryfs_fetched_blobs_total", source_kind="peer") \
        - value(before_b, "kacheryfs_fetched_blobs_total", source_kind="peer") == 2
    assert value(after_b, "kacheryfs_fetch_duration_seconds_count", outcome="ok") \
        - value(before_b, "kacheryfs_fetch_duration_seconds_count", outcome="ok") == 2
    assert value(after_b, "kacheryfs_transfers_in_progress") == 0
    assert value(after_b, "kacheryfs_fuse_operations_total", operation="read") \
        > value(before_b, "kacheryfs_fuse_operations_total", operation="read")
    assert value(after_b, "kacheryfs_fuse_read_bytes_total") \
        - value(before_b, "kacheryfs_fuse_read_bytes_total") >= len(data)
    assert value(after_b, "kacheryfs_fuse_operations_total", operation="lookup") > 0
    # What B fetched is held by A too: it counts as cache, not as owned bytes.
    assert value(after_b, "kacheryfs_cache_bytes") >= len(data)
    assert value(after_b, "kacheryfs_source_errors_total", source_kind="peer", error="failed") == 0
    # Route templates, never raw paths: no hash appears in any label.
    routes = {dict(k[1]).get("route", "") for k in after_b if k[0] == "kacheryfs_http_requests_total"}
    assert routes and not any(sha1 in r for r in routes)


def test_source_errors_are_counted(tmp_path):
    """A peer that is down: the failed ask shows as a peer source error."""
    sa, sb, port_a = source_and_reader(tmp_path)          # A is never started
    with running_node(sb) as b:
        before = scrape(b)
        r = b.post("/loadFile", json={"fileKey": {"sha1": "ab" * 20}})
        assert b'"error"' in r.content
        after = scrape(b)
    assert value(after, "kacheryfs_source_errors_total", source_kind="peer", error="failed") \
        - value(before, "kacheryfs_source_errors_total", source_kind="peer", error="failed") == 1
    assert value(after, "kacheryfs_fetch_duration_seconds_count", outcome="error") == 1
