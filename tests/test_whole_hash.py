"""The whole file's hash follows the chunk downloads (kacheryfs/content/whole_hash.py), awaited
directly with a real Fetcher, store and part file, and a source backed by another real store.

A chunk whose first download was bad, and already hashed into the whole-file hash, is fetched again:
the hash goes back to the chunk's start and follows the new bytes, so the file is still published,
right. A hasher told to stop ends."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest
import trio

from kachery_client.hashing import CHUNK_SIZE
from kachery_client.store import Store
from kacheryfs.content.fetcher import Fetcher
from kacheryfs.content.sources import RemoteBlob
from kacheryfs.content.transfer import Chunk, FdHandoff, Stopped, Transfer
from kacheryfs.content.whole_hash import hash_following

DEADLINE = 30.0


class StorePeer:
    """A peer holding the blobs of a real store; the first download of `bad_chunk` of `sha1` is
    corrupted, and ends only once the fetcher's whole-file hash has taken in those bad bytes."""
    kind, label = "peer", "store peer"

    def __init__(self, store: Store, sha1: str, bad_chunk: int):
        self.store, self.sha1, self.bad_start = store, sha1, bad_chunk * CHUNK_SIZE
        self.fetcher: Fetcher | None = None
        self.reads_of_bad_chunk = 0
        self.hashed_before_fetched_again: int | None = None

    def stat(self, sha1, need_manifest=True):
        path = self.store.locate(sha1)
        return None if path is None else RemoteBlob(path.stat().st_size)

    def read_range(self, sha1, start, end, sink):
        data = bytearray(self.store.locate(sha1).read_bytes()[start:end])
        bad = sha1 == self.sha1 and start == self.bad_start
        if bad:
            self.reads_of_bad_chunk += 1
            bad = self.reads_of_bad_chunk == 1
            if bad:
                data[100:108] = b"garbage!"
        view = memoryview(bytes(data))
        for i in range(0, len(view), 1 << 20):
            sink(view[i:i + (1 << 20)])
        if bad:
            t = self.fetcher.transfer(sha1)
            deadline = time.monotonic() + DEADLINE
            while t.hashed < end:                     # the bad bytes are in the whole-file hash
                assert time.monotonic() < deadline, "the whole-file hash never took in the bad chunk"
                time.sleep(0.01)
            self.hashed_before_fetched_again = t.hashed


def test_a_chunk_fetched_again_after_bad_bytes_is_hashed_again(tmp_path):
    data = os.urandom(1 << 20) * (2 * CHUNK_SIZE // (1 << 20) + 2)          # 3 chunks, the last short
    remote = Store(tmp_path / "remote")
    blob = remote.add_bytes(data)
    assert blob.manifest_sha1 is not None
    peer = StorePeer(remote, blob.sha1, bad_chunk=1)
    local = Store(tmp_path / "local")
    fetcher = peer.fetcher = Fetcher(local, [peer], connections=1)

    async def main():
        async with trio.open_nursery() as nursery:
            await nursery.start(fetcher.run)
            with trio.fail_after(DEADLINE):
                path = await fetcher.ensure(blob.sha1, blob.manifest_sha1)
            nursery.cancel_scope.cancel()
        return path
    path = trio.run(main)
    assert peer.reads_of_bad_chunk == 2 and peer.hashed_before_fetched_again == 2 * CHUNK_SIZE
    assert hashlib.sha1(path.read_bytes()).hexdigest() == blob.sha1 and path.read_bytes() == data
    assert not list((tmp_path / "local" / "partial").glob(f"{blob.sha1}*"))


def test_a_stopped_hasher_ends(tmp_path):
    part = tmp_path / "x.part"
    part.write_bytes(b"\0" * 1000)
    t = Transfer("ab" * 20)
    t._plan(1000, [Chunk(0, 500, None), Chunk(500, 1000, None)], part, set())
    outcome: list[BaseException | str] = []

    def run():
        try:
            outcome.append(hash_following(t, FdHandoff(os.open(part, os.O_RDONLY))))
        except BaseException as e:
            outcome.append(e)
    thread = threading.Thread(target=run)
    thread.start()
    t.note_written(0, t.begin_attempt(0), 200)        # some bytes, never the whole chunk
    deadline = time.monotonic() + DEADLINE
    while t.hashed < 200:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    t.stop_hashing()
    thread.join(DEADLINE)
    assert not thread.is_alive() and len(outcome) == 1 and isinstance(outcome[0], Stopped)
    with pytest.raises(Stopped):
        t.wait_written(1, None, 0, 0.1)
