"""The mount's namespace core and the FUSE adapter, awaited directly (no kernel, no mount)."""

import errno
import hashlib
import os
import stat

import pyfuse3
import pytest
import trio

from kachery_client.errors import NotFoundError
from kacheryfs.fuse import listing as listing_module
from kacheryfs.fuse.incoming import INGEST_BATCH, QUEUE_DEPTH
from kacheryfs.fuse.ops import Operations
from kacheryfs.fuse.vfs import INCOMING_INODE, ROOT_INODE, SHA1_INODE, VFS, FsError
from kacheryfs.node import Node
from tests.support.smallfs import small_fs


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path / "storage")
    yield n
    n.close()


def run(fn, *args):
    return trio.run(fn, *args)


def test_lookup_listing_and_attrs(node):
    blob = node.store.add_bytes(b"content")
    vfs = VFS(node)

    async def main():
        await node.record_name(blob.sha1, "c.txt")
        hashdir = await vfs.lookup(SHA1_INODE, blob.sha1)
        assert stat.S_ISDIR(hashdir.mode)
        f = await vfs.lookup(hashdir.ino, "whatever.bin")
        assert stat.S_ISREG(f.mode) and f.size == 7 and f.mode & 0o222 == 0
        assert (await vfs.lookup(hashdir.ino, "whatever.bin")).ino == f.ino           # stable inodes
        assert [i.name for i in await vfs.list_dir(SHA1_INODE, 0)] == [blob.sha1]
        assert [i.name for i in await vfs.list_dir(hashdir.ino, 0)] == ["c.txt"]
        assert [i.name for i in await vfs.list_dir(ROOT_INODE, 1)] == ["incoming"]  # offsets resume
        for bad in ("..", "a\\b", ""):
            with pytest.raises(NotFoundError):
                await vfs.lookup(hashdir.ino, bad)
        with pytest.raises(NotFoundError):
            await vfs.lookup(SHA1_INODE, "f" * 40)
        assert vfs.xattrs(f.ino)["uri"] == f"sha1://{blob.sha1}/whatever.bin".encode()
    run(main)


def test_incoming_lifecycle(node):
    vfs = VFS(node)

    async def main():
        inc = await vfs.create(INCOMING_INODE, "new.txt")
        await vfs.incoming_files.write(inc, 0, b"hello ")
        await vfs.incoming_files.write(inc, 6, b"world")
        assert (await vfs.getattr(inc.entry.ino)).size == 11
        with pytest.raises(FsError) as e:
            await vfs.create(INCOMING_INODE, "new.txt")
        assert e.value.errno == errno.EEXIST
        await vfs.incoming_files.release(inc)
        attr = await vfs.lookup(INCOMING_INODE, "new.txt")
        assert stat.S_ISLNK(attr.mode)
        assert inc.symlink_target() == f"../sha1/{inc.sha1}/new.txt"
        assert node.store.read_bytes(inc.sha1) == b"hello world"
        assert await node.names_for(inc.sha1) == ["new.txt"]
        with pytest.raises(FsError) as e:
            await vfs.create(SHA1_INODE, "x")
        assert e.value.errno == errno.EPERM
    run(main)


MIB = 1 << 20
# More batches than the queue holds, so writes wait for the writer task (the backpressure path).
QUEUED_PAST_DEPTH = (QUEUE_DEPTH + 3) * INGEST_BATCH


def _payload(size):
    block = os.urandom(MIB)
    return b"".join(block[i:] + block[:i] for i in range(size // MIB))


async def _write_all(files, inc, data):
    for off in range(0, len(data), MIB):
        await files.write(inc, off, data[off:off + MIB])


def test_incoming_batches_queued_in_a_writer_task(node):
    """With a nursery (as in the mount) batches are queued for a writer task: every byte is stored
    in order, and a file removed with batches still queued leaves nothing behind."""
    data = _payload(QUEUED_PAST_DEPTH)

    async def main():
        async with trio.open_nursery() as nursery:
            vfs = VFS(node, spawn=nursery.start_soon)
            files = vfs.incoming_files
            inc = await vfs.create(INCOMING_INODE, "queued.bin")
            await _write_all(files, inc, data)
            await files.store(inc)
            assert inc.sha1 == hashlib.sha1(data).hexdigest()
            assert node.store.read_bytes(inc.sha1) == data

            gone = await vfs.create(INCOMING_INODE, "gone.bin")
            await _write_all(files, gone, data[:-MIB] + b"x" * MIB)
            await vfs.unlink(INCOMING_INODE, "gone.bin")
            with pytest.raises(FsError):
                await files.write(gone, len(data), b"more")
            assert os.listdir(node.storage_dir / "tmp") == []
            assert list(node.store.iter_hashes()) == [inc.sha1]
    run(main)


def test_incoming_disk_full_reaches_the_writer(tmp_path):
    """A batch refused by a full disk (a real 24 MiB tmpfs) fails a later write or the store
    (close) with ENOSPC, whichever comes first; nothing is stored and no temp file stays."""
    data = _payload(QUEUED_PAST_DEPTH)

    async def main(n):
        async with trio.open_nursery() as nursery:
            vfs = VFS(n, spawn=nursery.start_soon)
            inc = await vfs.create(INCOMING_INODE, "big.bin")
            with pytest.raises(FsError) as e:
                await _write_all(vfs.incoming_files, inc, data)
                await vfs.incoming_files.store(inc)
            assert e.value.errno == errno.ENOSPC
            assert "big.bin" not in vfs.incoming_files.by_name
            assert inc.sha1 is None
    with small_fs(tmp_path / "small") as storage:
        n = Node(storage)
        try:
            run(main, n)
            assert os.listdir(storage / "tmp") == []
            assert list(n.store.iter_hashes()) == []
        finally:
            n.close()


def test_adapter_translates_errors(node):
    ops = Operations(VFS(node))

    async def main():
        for name, code in ((b"nope", errno.ENOENT),):
            with pytest.raises(pyfuse3.FUSEError) as e:
                await ops.lookup(ROOT_INODE, name)
            assert e.value.errno == code
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.unlink(SHA1_INODE, b"x", None)
        assert e.value.errno == errno.EPERM
        fi, attr = await ops.create(INCOMING_INODE, b"a.bin", 0o644, os.O_WRONLY, None)
        assert await ops.write(fi.fh, 0, b"abc") == 3
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.write(fi.fh, 10, b"gap")
        assert e.value.errno == errno.EIO
        await ops.release(fi.fh)
        assert "a.bin" not in [i.name for i in await ops.vfs.list_dir(INCOMING_INODE, 0)]
        assert os.listdir(node.store.tmp_dir) == []
    run(main)


def test_one_inode_per_content_forgotten_with_the_kernel(node):
    blob = node.store.add_bytes(b"shared content")
    vfs = VFS(node)

    async def main():
        hashdir = await vfs.lookup(SHA1_INODE, blob.sha1)
        a = await vfs.lookup(hashdir.ino, "a.txt")
        b = await vfs.lookup(hashdir.ino, "b.txt")
        assert a.ino == b.ino != hashdir.ino
        assert vfs.xattrs(b.ino)["uri"] == f"sha1://{blob.sha1}/b.txt".encode()
        vfs.forget([(a.ino, 1)])
        assert vfs.entry(a.ino).sha1 == blob.sha1          # still held once
        vfs.forget([(a.ino, 1), (hashdir.ino, 1)])
        for ino in (a.ino, hashdir.ino):
            with pytest.raises(NotFoundError):
                vfs.entry(ino)
        assert len(vfs.content) == 0
    run(main)


def test_sha1_listing_walks_until_reconciled_then_pages_through_the_index(node, monkeypatch):
    """What ops.readdir does, 7 entries per call over pages of 8: every hash once, from one walk
    before the startup reconciliation and from the index after it; an index listing resumed at
    any offset neither repeats nor skips, whatever was stored or dropped meanwhile; and a listing
    leaves no inode behind."""
    monkeypatch.setattr(listing_module, "PAGE", 8)
    hashes = sorted(node.store.add_bytes(b"%d" % i).sha1 for i in range(50))
    vfs = VFS(node)
    walks = []
    real_iter = node.store.iter_hashes

    def counted():
        walks.append(1)
        return real_iter()
    monkeypatch.setattr(node.store, "iter_hashes", counted)

    async def read(fh, start=0, between=lambda names: None):
        seen = []
        while True:
            listing = await vfs.listing(fh, start)
            page, i = await listing.entries(start)
            batch = page[i:i + 7]
            if not batch:
                vfs.release_dir(fh)
                return seen
            seen += [sha1 for _, sha1 in batch]
            start = listing.took(len(batch))
            between(seen)

    async def main():
        walked = await read(vfs.open_dir(SHA1_INODE))          # not reconciled yet: a walk
        assert sorted(walked) == hashes and len(walks) == 1    # one walk, not one per call
        assert [i.name for i in await vfs.list_dir(SHA1_INODE, 45)] == walked[45:]
        assert len(walks) == 2                                 # a seek elsewhere: a new walk
        fh = vfs.open_dir(SHA1_INODE)
        listing = await vfs.listing(fh, 0)
        page, _ = await listing.entries(0)
        listing.took(7)                                        # sent 7; the kernel kept 3 of them
        page, i = await listing.entries(page[2][0])
        assert page[i][1] == walked[3] and len(walks) == 3     # resumed within the page, no new walk
        vfs.release_dir(fh)

        await trio.to_thread.run_sync(node.lifecycle.reconcile)
        assert sorted(await read(vfs.open_dir(SHA1_INODE))) == hashes and len(walks) == 3

        dropped, stored = [], []

        def change(seen):                                      # mid-listing, after the first batch
            if not dropped:
                dropped.append(next(h for h in reversed(hashes) if h not in seen))
                node.lifecycle.remove(dropped[0])
                stored.append(node.store.add_bytes(b"stored meanwhile").sha1)
                node.lifecycle.stored(stored[0])
        seen = await read(vfs.open_dir(SHA1_INODE), between=change)
        assert len(seen) == len(set(seen)) and set(seen) == set(hashes) - set(dropped) | set(stored)
        assert not node.store.has(dropped[0])
        fh = vfs.open_dir(SHA1_INODE)
        page, _ = await (await vfs.listing(fh, 0)).entries(0)
        vfs.release_dir(fh)
        assert await read(vfs.open_dir(SHA1_INODE), start=page[4][0]) == seen[5:]   # resumed anywhere
        assert await read(vfs.open_dir(SHA1_INODE), start=page[-1][0] + 10_000) == []
        assert len(vfs.content) == 0                           # nothing listed is held
    run(main)
