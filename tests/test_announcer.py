"""The announcer's batching (kachery_client/announcer.py), against a fake NodeClient: a burst of
stores is one notice, and a flush does not wait out the linger."""

from __future__ import annotations

import threading
from typing import Any

from kachery_client.announcer import Announcer


class FakeClient:
    def __init__(self) -> None:
        self.posts: list[list[dict[str, Any]]] = []
        self.lock = threading.Lock()

    def post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert path == "/kacheryfs/added"
        with self.lock:
            self.posts.append(list(body["blobs"]))
        return {"success": True}


def notice(i: int) -> dict[str, Any]:
    return {"sha1": f"{i:040x}", "name": f"f{i}", "manifestSha1": None}


def test_a_burst_of_stores_is_one_notice(monkeypatch):
    monkeypatch.setattr(Announcer, "LINGER", 30.0)      # only a flush ends the linger
    client = FakeClient()
    announcer = Announcer(client)  # type: ignore[arg-type]
    for i in range(300):
        announcer.add(notice(i))
    assert announcer.flush(10.0), "flush waited out the linger"
    sent = [n["sha1"] for batch in client.posts for n in batch]
    assert sent == [notice(i)["sha1"] for i in range(300)]
    assert len(client.posts) <= 2       # the first notice may go before the rest arrive


def test_batches_are_bounded(monkeypatch):
    monkeypatch.setattr(Announcer, "LINGER", 30.0)
    monkeypatch.setattr(Announcer, "BATCH", 100)
    client = FakeClient()
    announcer = Announcer(client)  # type: ignore[arg-type]
    for i in range(350):
        announcer.add(notice(i))
    assert announcer.flush(10.0)
    assert max(len(b) for b in client.posts) <= 100
    assert sum(len(b) for b in client.posts) == 350


def test_flush_with_nothing_pending_returns_at_once():
    announcer = Announcer(FakeClient())  # type: ignore[arg-type]
    assert announcer.flush(0.0)
