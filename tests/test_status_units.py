"""The small pure parts of the status page, metrics and gateway work: config keys, the range
parser, the serving rate limit, loopback detection, the terminal view."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from kacheryfs.config import ConfigError, parse_config
from kacheryfs.http.access import is_loopback
from kacheryfs.http.gateway import parse_range
from kacheryfs.rate_limit import RateLimiter
from kacheryfs.status_view import render


def test_config_keys():
    c = parse_config({"node": {"status_token": "x" * 16, "network_gateway": True, "peer_serve_rate": "50M"}})
    assert c.status_token == "x" * 16 and c.network_gateway is True and c.peer_serve_rate == 50 << 20
    d = parse_config({})
    assert d.status_token is None and d.network_gateway is False and d.peer_serve_rate is None
    for bad, message in (({"status_token": "short"}, "status_token"), ({"network_gateway": "yes"}, "network_gateway"),
                         ({"peer_serve_rate": "fast"}, "peer_serve_rate")):
        with pytest.raises(ConfigError, match=message):
            parse_config({"node": bad})


@pytest.mark.parametrize("header, expected", [
    (None, None), ("bytes=10-19", (10, 20)), ("bytes=10-", (10, 100)), ("bytes=-10", (90, 100)),
    ("bytes=-1000", (0, 100)), ("bytes=50-5000", (50, 100)), ("bytes=5-4", None),
    ("bytes=0-1,5-6", None), ("items=0-1", None), ("bytes=-", None),
])
def test_parse_range(header, expected):
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0"])
def test_unsatisfiable_ranges(header):
    with pytest.raises(ValueError):
        parse_range(header, 100)


def test_rate_limiter_holds_the_rate():
    async def main() -> float:
        limiter = RateLimiter(1_000_000)
        start = trio.current_time()

        async def stream() -> None:
            for _ in range(10):
                await limiter.take(100_000)
        async with trio.open_nursery() as nursery:     # three streams share one limit
            for _ in range(3):
                nursery.start_soon(stream)
        return trio.current_time() - start
    elapsed = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    # 3 MB at 1 MB/s: the last block starts 2.9 s in.
    assert elapsed == pytest.approx(2.9)


def test_is_loopback():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "10.0.0.2", "example.org", "", None))


def test_terminal_view():
    snapshot = {
        "nodeId": "ab" * 32, "version": "0.1.0", "storageDir": "/s", "mountPoint": "/kachery",
        "storage": {"blobs": 3, "bytes": 3 << 20, "cacheBytes": 1 << 20, "ownedBytes": 2 << 20,
                    "cacheLimitBytes": None},
        "counters": {"requests": 7},
        "channels": [{"name": "lab", "roles": ["download"], "bucket": None,
                      "peers": [{"label": "peer http://h:1 (channel lab)", "reachable": False,
                                 "latencySeconds": None, "error": "refused"}]}],
        "transfers": [{"sha1": "cd" * 20, "size": 100, "bytesPresent": 50, "fraction": 0.5,
                       "rateBytesPerSecond": 2048, "source": "peer http://h:1 (channel lab)"}],
        "recentErrors": [{"level": "WARNING", "message": "fetch failed"}],
    }
    text = "\n".join(render(snapshot, "http://127.0.0.1:20431"))
    assert "3 blobs, 3.0 MiB (owned 2.0 MiB, cache 1.0 MiB, limit none)" in text
    assert "[" + "#" * 15 + "." * 15 + "]  50.0%" in text and "2.0 KiB/s" in text
    assert "DOWN peer http://h:1 (channel lab)  (refused)" in text
    assert "WARNING: fetch failed" in text and "/kachery" in text
