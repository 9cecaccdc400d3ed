"""Faults inside the node, injected where they arise: the FUSE adapter's errno policy (groups and
statfs included), the background loops that must outlive an unexpected error, the feed follower
whose first pull fails, and replayed peer requests (against a real node process).

The FUSE adapter and the loops are awaited directly in a trio loop over a real Node (real store,
real SQLite); the only stand-in is a peer that answers garbage, which a real node never does.
"""

from __future__ import annotations

import errno
import hashlib
import json

import pyfuse3
import pytest
import requests
import trio

from kachery_client.errors import (
    IntegrityError,
    LocalStorageError,
    NotFoundError,
    TransferError,
    UsageError,
)
from kacheryfs.config import NodeConfig
from kacheryfs.content.sources import SourceError
from kacheryfs.feeds.mutables import Mutables
from kacheryfs.feeds.replication import FeedReplicator
from kacheryfs.feeds.service import FeedService
from kacheryfs.feeds.store import Feeds
from kacheryfs.fuse.ops import Operations, errno_for
from kacheryfs.fuse.vfs import ROOT_INODE, VFS
from kacheryfs.http.errors import deliberate, kind_and_status
from kacheryfs.node import Node
from kacheryfs.security.keys import load_or_create_node_keys
from kacheryfs.security.peer_auth import new_nonce, sign_request
from tests.support.cli import run_cli
from tests.support.network import source_and_reader, write_config
from tests.support.nodeproc import client_env, running_node

SF = hashlib.sha1(b"sf").hexdigest()


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path / "storage", config=NodeConfig(cache_max_bytes=1 << 30))
    yield n
    n.close()


# ---- the FUSE edge -----------------------------------------------------------------------------

@pytest.mark.parametrize("error, code", [
    (NotFoundError("x"), errno.ENOENT),
    (LocalStorageError("full", errno.ENOSPC), errno.ENOSPC),
    (LocalStorageError("quota", errno.EDQUOT), errno.EDQUOT),
    (LocalStorageError("?"), errno.EIO),
    (TransferError("x"), errno.EIO),
    (IntegrityError("x"), errno.EIO),
    (UsageError("x"), errno.EINVAL),
    (OSError(errno.EROFS, "ro"), errno.EROFS),
    (RuntimeError("a bug"), errno.EIO),
    (ExceptionGroup("g", [RuntimeError("a bug"), LocalStorageError("full", errno.ENOSPC)]), errno.ENOSPC),
    (ExceptionGroup("g", [ExceptionGroup("inner", [NotFoundError("x")])]), errno.ENOENT),
    # a sibling task's BrokenResourceError (the channel its writer closed) says less than the cause
    (ExceptionGroup("g", [trio.BrokenResourceError(), OSError(errno.ENOSPC, "full")]), errno.ENOSPC),
])
def test_errno_per_error_kind(error, code):
    assert errno_for(error, "test") == code


@pytest.mark.parametrize("error, kind, status", [
    (ExceptionGroup("g", [trio.BrokenResourceError(), OSError(errno.ENOSPC, "full")]), "local-storage", 507),
    (OSError(errno.EDQUOT, "quota"), "local-storage", 507),
    (TransferError("x"), "source-failed", 502),
    (IntegrityError("x"), "integrity", 502),
    (NotFoundError("x"), "not-found", 404),
    (UsageError("x"), "invalid", 400),
    (RuntimeError("a bug"), "internal", 500),
    (OSError(errno.ENOENT, "no"), "internal", 500),
])
def test_http_status_per_error_kind(error, kind, status):
    assert kind_and_status(deliberate(error)) == (kind, status)


def test_no_handler_lets_a_non_fuse_error_out(node, tmp_path):
    ops = Operations(VFS(node))

    async def broken(*args):
        raise ExceptionGroup("nursery", [LocalStorageError("disk full", errno.ENOSPC)])

    async def main():
        ops.vfs.getattr = broken            # a failure deep in a nursery, as trio delivers it
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.getattr(ROOT_INODE)
        assert e.value.errno == errno.ENOSPC
        node.storage_dir = tmp_path / "gone"  # statfs of a storage directory that went away
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.statfs(None)
        assert e.value.errno == errno.ENOENT
    trio.run(main)


# ---- background loops --------------------------------------------------------------------------

def test_cache_limit_loop_survives_an_unexpected_error(node, monkeypatch):
    calls = []
    enforce = node.lifecycle.enforce_cache_limit

    def failing_once(limit):
        calls.append(limit)
        if len(calls) == 1:
            raise RuntimeError("injected: the index is broken")
        return enforce(limit)
    monkeypatch.setattr(node.lifecycle, "enforce_cache_limit", failing_once)

    async def main():
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run_services)       # the first pass runs at start, and fails
            with trio.fail_after(10):
                while len(calls) < 2:          # retried after the backoff, without a new request
                    await trio.sleep(0.01)
            node.data._limit_wanted.set()
            with trio.fail_after(10):
                while len(calls) < 3:          # and still serving later requests
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    trio.run(main)


def test_upload_loop_survives_an_unexpected_error(node, monkeypatch):
    done = []

    async def upload(sha1, channel):
        if not done:
            done.append(None)
            raise RuntimeError("injected")
        done.append(sha1)
        return True
    monkeypatch.setattr(node, "upload", upload)

    async def main():
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run_services)
            assert node._uploads is not None
            node._uploads.send_nowait(("1" * 40, "ch"))
            node._uploads.send_nowait(("2" * 40, "ch"))
            with trio.fail_after(10):
                while len(done) < 2:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    trio.run(main)
    assert done == [None, "2" * 40]


class GarbageFirstPeer:
    """A peer whose first answer is malformed (the fault), and which serves the owner's signed
    messages afterwards."""
    label = "peer garbage-first"

    def __init__(self, owner: Feeds, feed_id: str):
        self.owner, self.feed_id, self.calls = owner, feed_id, 0

    def post_json(self, path, body):
        self.calls += 1
        if self.calls == 1:
            return {"messages": "not a list"}
        return {"messages": self.owner.get_messages(body["feedId"], body["subfeedHash"], body["position"],
                                                     signed=True)}


def test_feed_follower_runs_after_a_failed_first_pull(tmp_path, monkeypatch):
    for d in ("owner", "reader"):
        (tmp_path / d).mkdir()
    owner = Feeds(tmp_path / "owner" / "feeds.db", Mutables(tmp_path / "owner" / "mutables.db"))
    feed_id = owner.create_feed()
    owner.append(feed_id, SF, [{"n": 0}, {"n": 1}])
    reader = FeedService(Feeds(tmp_path / "reader" / "feeds.db", Mutables(tmp_path / "reader" / "mutables.db")))
    peer = GarbageFirstPeer(owner, feed_id)
    monkeypatch.setattr("kacheryfs.feeds.replication.MAX_PEER_WAIT_MSEC", 50)
    replicator = FeedReplicator(reader, [peer])  # type: ignore[list-item]

    async def main():
        async with trio.open_nursery() as nursery:
            await nursery.start(replicator.run)
            await replicator.interest(feed_id, SF)         # the first pull fails: no error here
            with trio.fail_after(10):
                while await reader.num_messages(feed_id, SF) < 2:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    trio.run(main)
    assert peer.calls >= 2


def test_malformed_peer_answer_is_a_source_error(tmp_path):
    """The follower's retry above is for this error: it must stay a SourceError, not a crash."""
    (tmp_path / "r").mkdir()
    reader = FeedService(Feeds(tmp_path / "r" / "feeds.db", Mutables(tmp_path / "r" / "mutables.db")))
    replicator = FeedReplicator(reader, [])
    peer = GarbageFirstPeer(None, "ab" * 32)  # type: ignore[arg-type]
    with pytest.raises(SourceError):
        trio.run(replicator._pull_once, peer, "ab" * 32, SF, 0)


# ---- replayed peer requests (a real node) ------------------------------------------------------

def test_a_replayed_acting_peer_request_is_refused(tmp_path):
    (tmp_path / "asker").mkdir()
    keys = load_or_create_node_keys(tmp_path / "asker")
    write_config(tmp_path / "storage", channel="tasks", members=[keys.public_hex])
    with running_node(tmp_path / "storage") as node:
        path = "/peer/task/request"
        body = json.dumps({"functionId": "test.act", "functionType": "action", "kwargs": {},
                           "timeoutMsec": 0, "nonce": new_nonce()}).encode()
        headers = sign_request(keys, "tasks", "POST", path, body)
        first = requests.post(node.url + path, data=body, headers=headers, timeout=30)
        assert first.status_code == 200, first.text
        again = requests.post(node.url + path, data=body, headers=headers, timeout=30)
        assert again.status_code == 403 and "replayed" in again.json()["error"]
        unsigned_nonce = json.dumps({"functionId": "test.act", "functionType": "action", "kwargs": {}}).encode()
        r = requests.post(node.url + path, data=unsigned_nonce,
                          headers=sign_request(keys, "tasks", "POST", path, unsigned_nonce), timeout=30)
        assert r.status_code == 400 and "nonce" in r.json()["error"]



def test_an_unreachable_peer_is_not_not_found(tmp_path):
    """The error kind travels in the /loadFile frame: sources that fail are not missing content."""
    _, sb, _ = source_and_reader(tmp_path)          # A is never started: its port refuses
    with running_node(sb) as b:
        r = run_cli("kachery-load", "sha1://" + "1" * 40 + "/x", env=client_env(b))
        assert r.returncode == 5 and r.stderr.decode().count("\n") == 1, r.stderr   # TransferError
        frame = b.post("/loadFile", json={"fileKey": {"sha1": "1" * 40}}).content
        assert b'"kind":"source-failed"' in frame
