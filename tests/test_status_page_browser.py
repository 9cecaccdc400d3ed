"""The status page in a real browser (Debian's headless chromium): it follows a 300 MiB peer fetch
live, without a reload, and a gateway link shows a PNG stored in the node."""

from __future__ import annotations

import hashlib
import struct
import threading
import time
import zlib
from typing import Any

import requests

from tests.support.browser import chromium
from tests.support.network import node_id, source_and_reader, write_config
from tests.support.nodeproc import NodeProc, running_node
from tests.support.storecheck import make_file

SIZE = 300 << 20
SERVE_RATE = 60_000_000           # bytes/s A serves to peers: the fetch lasts about five seconds
DEADLINE = 90.0


def png(width: int, height: int) -> bytes:
    """A real RGB PNG: a gradient."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"".join(bytes((x * 255 // width, y * 255 // height, 160)) for x in range(width))
                    for y in range(height))                     # filter 0, then RGB pixels
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def store(node: NodeProc, data: Any, name: str) -> str:
    out = node.post("/store", data=data, headers={"X-Kachery-Name": name}).json()
    assert out["success"], out
    return out["sha1"]


def progress_value(driver: Any, sha1: str) -> float | None:
    return driver.execute_script(
        "const p = document.querySelector('#transfers tr[data-sha1=\"' + arguments[0] + '\"] progress');"
        "return p ? p.value : null;", sha1)


def test_page_follows_a_peer_fetch_and_shows_a_png(tmp_path):
    sa, sb, port_a = source_and_reader(tmp_path, reader_node={"fetch_connections": 1})   # steady progress
    write_config(sa, members=[node_id(sb)], node={"peer_serve_rate": SERVE_RATE})
    big = make_file(tmp_path / "big.bin", SIZE)
    image = png(64, 48)
    with running_node(sa, port=port_a) as a, running_node(sb) as b, chromium() as driver:
        with open(big, "rb") as f:
            big_sha1 = store(a, f, "big.bin")
        png_sha1 = store(b, image, "plot.png")

        driver.get(b.url + "/ui/")
        assert driver.find_element("id", "node-id").text == node_id(sb)
        driver.execute_script("window.notReloaded = true;")
        assert driver.find_element("id", "no-transfers").is_displayed()

        # B fetches from A through its gateway, in the background, while the page is watched.
        fetched: dict[str, Any] = {}

        def fetch() -> None:
            h = hashlib.sha1()
            with requests.get(f"{b.url}/sha1/{big_sha1}/big.bin", stream=True, timeout=DEADLINE) as r:
                fetched["status"] = r.status_code
                for block in r.iter_content(4 << 20):
                    h.update(block)
            fetched["sha1"] = h.hexdigest()
        reader = threading.Thread(target=fetch, daemon=True)
        reader.start()

        seen: list[float] = []
        screenshot = tmp_path / "status-page.png"
        deadline = time.monotonic() + DEADLINE
        while True:
            assert time.monotonic() < deadline, f"the page never showed the transfer end (saw {seen})"
            value = progress_value(driver, big_sha1)
            if value is not None:
                if not seen or value != seen[-1]:
                    seen.append(value)
                if len(seen) == 3:
                    driver.save_screenshot(str(screenshot))
            elif seen:
                break                               # the row is gone: the transfer ended
            time.sleep(0.1)
        reader.join(DEADLINE)

        assert fetched == {"status": 200, "sha1": big_sha1}
        assert len(seen) >= 3, seen                 # several distinct values ...
        assert seen == sorted(seen) and seen[0] < SIZE and seen[-2] < SIZE, seen    # ... rising
        assert driver.find_element("id", "no-transfers").is_displayed()
        assert driver.execute_script("return window.notReloaded === true;")       # no reload happened
        assert screenshot.stat().st_size > 10_000 and screenshot.read_bytes().startswith(b"\x89PNG")
        # The channel lists A, reachable, with its latency.
        assert "ms" in driver.find_element("id", "channels").text
        assert f"peer http://127.0.0.1:{port_a}" in driver.find_element("id", "channels").text

        # A gateway link to the PNG stored in B: the browser gets the image.
        driver.get(f"{b.url}/sha1/{png_sha1}/plot.png")
        deadline = time.monotonic() + 30
        while not driver.execute_script("return document.images.length > 0 && document.images[0].complete;"):
            assert time.monotonic() < deadline, "the image never loaded"
            time.sleep(0.05)
        assert driver.execute_script("return document.contentType;") == "image/png"
        assert driver.execute_script("return document.images[0].naturalWidth;") == 64
        assert driver.execute_script("return document.images[0].naturalHeight;") == 48
