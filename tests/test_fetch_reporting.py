"""The pieces behind honest fetch reports, awaited directly: the source search (a failing or
hanging source is named, never "not found"; answers remembered briefly), the partial/ bound
(oldest abandoned first, running transfers kept) and the config keys for both."""

from __future__ import annotations

import os
import time

import pytest
import trio

from kachery_client.errors import NotFoundError, TransferError
from kacheryfs.config import ConfigError, parse_config
from kacheryfs.content.partial import list_partial, trim_partial
from kacheryfs.content.search import SourceSearch
from kacheryfs.content.sources import RemoteBlob, SourceError

SHA = "ab" * 20


class Peer:
    kind = "peer"

    def __init__(self, label: str, answer: str):
        self.label, self.answer, self.asked = label, answer, 0

    def stat(self, sha1: str) -> RemoteBlob | None:
        self.asked += 1
        if self.answer == "hang":
            time.sleep(5)
        if self.answer == "fail":
            raise SourceError(f"{self.label}: connection refused")
        return RemoteBlob(7) if self.answer == "has" else None

    def read_range(self, sha1, start, end, sink):  # pragma: no cover - not used here
        raise AssertionError


def test_a_hanging_or_failing_source_is_named_not_not_found():
    hang, fail, empty = Peer("peer H", "hang"), Peer("peer F", "fail"), Peer("peer E", "none")
    search = SourceSearch([hang, fail, empty], timeout=0.5)

    async def main():
        t0 = trio.current_time()
        with pytest.raises(TransferError) as e:
            await search.find(SHA)
        assert trio.current_time() - t0 < 2
        text = str(e.value)
        assert "peer H did not answer within 0.5 s" in text and "peer F connection refused" in text
        assert "1 other source(s) do not have it" in text and text.count(f"sha1://{SHA}") == 1
        with pytest.raises(TransferError):             # remembered: asked once, answered at once
            await search.find(SHA)
        assert (hang.asked, fail.asked) == (1, 1)
    trio.run(main)


def test_all_missing_is_not_found_and_a_hit_is_remembered():
    async def main():
        with pytest.raises(NotFoundError, match="nor on any of its 2 sources"):
            await SourceSearch([Peer("a", "none"), Peer("b", "none")], timeout=1).find(SHA)
        has = Peer("c", "has")
        search = SourceSearch([Peer("d", "fail"), has], timeout=1)
        assert await search.size(SHA) == 7 and await search.size(SHA) == 7
        assert has.asked == 1
        search.forget(SHA)
        assert await search.size(SHA) == 7 and has.asked == 2
    trio.run(main)


def test_partial_is_trimmed_oldest_abandoned_first(tmp_path):
    now = time.time()
    for i, name in enumerate(["old", "running", "mid", "new"]):
        part = tmp_path / f"{name}.part"
        part.write_bytes(os.urandom(100_000))
        (tmp_path / f"{name}.chunks").write_text("plan - 100000\n")
        os.utime(part, (now - 100 + i, now - 100 + i))
    used = {p.sha1: p.disk_bytes for p in list_partial(tmp_path)}
    assert list(used) == ["old", "running", "mid", "new"]          # oldest first
    limit = sum(used.values()) - used["old"] - 1                    # one more than "old" must go
    removed = trim_partial(tmp_path, limit, running={"running"})
    assert removed == ["old", "mid"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.chunks", "new.part", "running.chunks", "running.part"]
    assert trim_partial(tmp_path, 0, running={"running", "new"}) == []


def test_config_keys_for_grace_and_partial_bound():
    c = parse_config({"node": {"transfer_grace_seconds": 2.5, "partial_max_bytes": "1G"}})
    assert c.transfer_grace_seconds == 2.5 and c.partial_max_bytes == 1 << 30
    assert parse_config({}).transfer_grace_seconds == 30.0
    with pytest.raises(ConfigError, match="transfer_grace_seconds"):
        parse_config({"node": {"transfer_grace_seconds": "soon"}})
    with pytest.raises(ConfigError, match="partial_max_bytes"):
        parse_config({"node": {"partial_max_bytes": "lots"}})
