"""The content store's promises: layout, one-pass hashing, atomic publish, links, crash safety."""

import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kachery_client import blob_writer
from kachery_client.errors import IntegrityError, LocalFileError, LocalStorageError, NotFoundError
from kachery_client.hashing import CHUNK_SIZE, parse_manifest
from kachery_client.store import EMPTY_SHA1, Store


def _random_file(path, size, seed=0):
    rnd = hashlib.sha256(str(seed).encode()).digest()
    block = (rnd * (1024 * 1024 // len(rnd) + 1))[: 1024 * 1024]
    with open(path, "wb") as f:
        left = size
        i = 0
        while left:
            chunk = (i.to_bytes(8, "big") + block)[: min(left, 1024 * 1024)]
            f.write(chunk)
            left -= len(chunk)
            i += 1
    return hashlib.sha1(open(path, "rb").read()).hexdigest()


def test_layout_mode_and_no_temps(tmp_path):
    store = Store(tmp_path)
    blob = store.add_bytes(b"hello")
    assert blob.sha1 == "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d"
    path = tmp_path / "sha1/aa/f4/c6" / blob.sha1
    assert store.path_for(blob.sha1) == path and path.read_bytes() == b"hello"
    assert path.stat().st_mode & 0o777 == 0o644
    assert list(store.iter_hashes()) == [blob.sha1]
    assert os.listdir(tmp_path / "tmp") == []
    assert store.add_bytes(b"").sha1 == EMPTY_SHA1


def test_add_file_hashes_while_copying_and_builds_manifest(tmp_path):
    src = tmp_path / "src.bin"
    sha1 = _random_file(src, CHUNK_SIZE + 12345)
    store = Store(tmp_path / "s")
    seen = []
    blob = store.add_file(src, progress=seen.append)
    assert (blob.sha1, blob.size) == (sha1, CHUNK_SIZE + 12345)
    assert seen[-1] == blob.size
    assert store.verify(sha1)
    m = parse_manifest(store.path_for(blob.manifest_sha1).read_bytes(), sha1)
    data = src.read_bytes()
    assert m.chunks == [(0, CHUNK_SIZE, hashlib.sha1(data[:CHUNK_SIZE]).hexdigest()),
                        (CHUNK_SIZE, len(data), hashlib.sha1(data[CHUNK_SIZE:]).hexdigest())]
    # exact bytes of docs/PROTOCOL.md section 7
    assert store.path_for(blob.manifest_sha1).read_bytes().startswith(
        b'{"size":%d,"sha1":"%s","chunks":[{"start":0,"end":20000000,"sha1":"' % (len(data), sha1.encode()))
    # exactly one chunk: no manifest
    assert store.add_bytes(data[:CHUNK_SIZE]).manifest_sha1 is None
    # existing content: same answer, nothing left behind
    assert store.add_file(src) == blob
    assert os.listdir(store.tmp_dir) == []


def test_large_stores_at_once_keep_each_hash_in_order(tmp_path):
    """Several large stores at once, each with blocks queued ahead of its hashes (copy_from) or
    handed in pieces (a stream): every whole-file and chunk hash is of its own bytes, in order."""
    import concurrent.futures

    from kachery_client.blob_writer import COPY_AHEAD, COPY_BLOCK
    store = Store(tmp_path / "s")
    size = (COPY_AHEAD + 2) * COPY_BLOCK + 12345      # more blocks than the queue holds
    sources = [tmp_path / f"src{i}.bin" for i in range(3)]
    expected = [_random_file(p, size, seed=i) for i, p in enumerate(sources)]

    def store_one(i: int):
        if i == 2:                                     # the streamed path beside the copied ones
            with open(sources[i], "rb") as f:
                return store.add_stream(f)
        return store.add_file(sources[i])
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        blobs = list(pool.map(store_one, range(3)))
    for src, sha1, blob in zip(sources, expected, blobs, strict=True):
        assert (blob.sha1, blob.size) == (sha1, size)
        data = src.read_bytes()
        chunks = parse_manifest(store.path_for(blob.manifest_sha1).read_bytes(), sha1).chunks
        assert [c[2] for c in chunks] == [hashlib.sha1(data[a:b]).hexdigest() for a, b, _ in chunks]
    assert os.listdir(store.tmp_dir) == []


def test_writer_refuses_wrong_content_and_leaves_nothing(tmp_path):
    store = Store(tmp_path)
    with store.writer(expected_sha1="0" * 40) as w:
        w.write(b"abc")
        with pytest.raises(IntegrityError):
            w.commit()
    assert list(store.iter_hashes()) == [] and os.listdir(store.tmp_dir) == []
    with store.writer() as w:
        w.write(b"never committed")
    assert list(store.iter_hashes()) == [] and os.listdir(store.tmp_dir) == []


def test_corrupted_blob_fails_verify(tmp_path):
    store = Store(tmp_path)
    blob = store.add_bytes(b"precious")
    path = store.path_for(blob.sha1)
    os.chmod(path, 0o644)
    path.write_bytes(b"Precious")
    assert not store.verify(blob.sha1)


def test_links_valid_and_invalidated(tmp_path):
    target = tmp_path / "data.bin"
    target.write_bytes(b"linked content")
    store = Store(tmp_path / "s")
    blob = store.link(target)
    assert not store.has(blob.sha1)
    link = store.read_link(blob.sha1)
    assert link.path == str(target) and link.size == 14 and link.mtime == os.stat(target).st_mtime
    raw = store.link_path_for(blob.sha1).read_text()
    assert '"manifestSha1":null' in raw and '"_writingProcess":"daemon"' in raw
    assert store.locate(blob.sha1) == target
    os.utime(target, (1, 1))                       # mtime changed: invalid, never served
    assert store.locate(blob.sha1) is None
    with pytest.raises(NotFoundError):
        store.require(blob.sha1)
    os.utime(target, (link.mtime, link.mtime))
    assert store.locate(blob.sha1) == target
    target.write_bytes(b"linked content, longer")  # size changed
    assert store.locate(blob.sha1) is None
    # a real blob supersedes the link
    store.add_bytes(b"linked content")
    assert store.locate(blob.sha1) == store.path_for(blob.sha1)
    assert not store.link_path_for(blob.sha1).exists()


def test_link_refuses_directories_and_missing_files(tmp_path):
    store = Store(tmp_path / "s")
    with pytest.raises(LocalFileError):
        store.link(tmp_path)
    with pytest.raises(LocalFileError):
        store.link(tmp_path / "missing")


def test_eight_processes_storing_the_same_50mb_file(tmp_path):
    src = tmp_path / "big.bin"
    sha1 = _random_file(src, 50 * 1024 * 1024, seed=1)
    root = tmp_path / "s"
    code = ("import sys; from kachery_client.store import Store; "
            "print(Store(sys.argv[1]).add_file(sys.argv[2]).sha1)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(root), str(src)], stdout=subprocess.PIPE)
             for _ in range(8)]
    outs = [p.communicate(timeout=120)[0].decode().strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs == [sha1] * 8
    store = Store(root)
    assert sorted(store.iter_hashes()) == sorted({sha1, store.add_file(src).manifest_sha1})
    assert store.verify(sha1)
    assert os.listdir(store.tmp_dir) == []


def test_sigkill_mid_store_leaves_no_blob_and_stale_temp_is_cleaned(tmp_path):
    root = tmp_path / "s"
    code = ("import sys; from kachery_client.store import Store; "
            "Store(sys.argv[1]).add_stream(sys.stdin.buffer)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(root)], stdin=subprocess.PIPE)
    payload = os.urandom(1024 * 1024)
    for _ in range(30):                       # 30 MB in, then the writer is killed mid-stream
        proc.stdin.write(payload)
    proc.stdin.flush()
    tmp = root / "tmp"
    deadline = time.monotonic() + 30
    while not (tmp.exists() and any((tmp / n).stat().st_size > 0 for n in os.listdir(tmp))):
        assert proc.poll() is None, "the writer died early"
        assert time.monotonic() < deadline, "the writer never started writing"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stdin.close()
    store = Store(root)
    assert list(store.iter_hashes()) == []
    assert len(os.listdir(tmp)) == 1
    assert store.clean_stale_temps() == 1
    assert os.listdir(tmp) == []


def test_clean_stale_temps_keeps_live_writers(tmp_path):
    store = Store(tmp_path)
    with store.writer() as w:
        w.write(b"in progress")
        assert store.clean_stale_temps() == 0
        assert w.tmp_path.exists()


def test_storing_an_unchanged_file_again_reads_nothing(tmp_path, monkeypatch):
    store = Store(tmp_path / "s")
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(25_000_000))                     # with a manifest
    first = store.add_file(src)

    def no_read(*args, **kwargs):
        raise AssertionError("the file was read again")
    with monkeypatch.context() as m:
        m.setattr(Store, "add_stream", no_read)
        assert store.add_file(src) == first
    # Any write changes ctime: the cache misses and the new content is hashed.
    data = bytearray(src.read_bytes())
    data[0] ^= 1
    mtime = src.stat().st_mtime_ns
    src.write_bytes(bytes(data))
    os.utime(src, ns=(mtime, mtime))                           # even with the old mtime restored
    changed = store.add_file(src)
    assert changed.sha1 == hashlib.sha1(bytes(data)).hexdigest() != first.sha1
    # A blob that left the store (evicted, deleted) is written again, not trusted from the cache.
    store.path_for(changed.sha1).unlink()
    assert store.add_file(src) == changed and store.verify(changed.sha1)


# ---- refused writes: LocalStorageError, nothing left behind -------------------------------------

@pytest.fixture
def small_fs(tmp_path):
    """A real 20 MiB tmpfs, mounted for the test (root only), unmounted after."""
    if os.geteuid() != 0:
        pytest.fail("these tests mount a tmpfs and must run as root (as CI does)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def _nothing_published(store):
    assert [h for h in store.iter_hashes()] == [] and os.listdir(store.tmp_dir) == []


def test_disk_full_raises_local_storage_error_and_leaves_nothing(small_fs, tmp_path):
    store = Store(small_fs / "s")
    src = tmp_path / "big.bin"
    _random_file(src, 30 * 1024 * 1024, seed=3)
    with pytest.raises(LocalStorageError) as info:
        store.add_file(src)
    assert info.value.errno == errno.ENOSPC
    _nothing_published(store)
    with pytest.raises(LocalStorageError) as info:           # a stream, through the writer
        with store.writer() as w:
            for _ in range(30):
                w.write(os.urandom(1024 * 1024))
    assert info.value.errno == errno.ENOSPC
    _nothing_published(store)
    # The store is usable again once there is room.
    assert store.read_bytes(store.add_bytes(b"fits").sha1) == b"fits"


def test_read_only_file_system_raises_local_storage_error(small_fs):
    store = Store(small_fs / "s")
    kept = store.add_bytes(b"stored before")
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    with pytest.raises(LocalStorageError) as info:
        store.add_bytes(b"refused")
    assert info.value.errno == errno.EROFS
    with pytest.raises(LocalStorageError) as info:
        Store(small_fs / "s").add_bytes(b"refused, fresh Store")   # also when tmp/ must be made
    assert info.value.errno == errno.EROFS
    assert list(store.iter_hashes()) == [kept.sha1] and store.read_bytes(kept.sha1) == b"stored before"


def test_failed_early_write_back_fails_the_store(tmp_path, monkeypatch):
    """The background fdatasync's error is not discarded: no blob after a failed write-back."""
    import kachery_client.blob_writer as store_mod
    monkeypatch.setattr(store_mod, "EARLY_FLUSH", 1024 * 1024)
    monkeypatch.setenv("KACHERY_SYNC", "always")            # the early write-back of one-fsync mode
    real = os.fdatasync
    calls = []

    def failing_fdatasync(fd):
        calls.append(fd)
        real(fd)
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(os, "fdatasync", failing_fdatasync)
    store = Store(tmp_path)
    data = os.urandom(3 * 1024 * 1024)
    with pytest.raises(LocalStorageError) as info:
        with store.writer() as w:
            for i in range(0, len(data), 512 * 1024):
                w.write(data[i:i + 512 * 1024])
            w.commit()
    assert calls and info.value.errno == errno.EIO
    _nothing_published(store)
    monkeypatch.setattr(os, "fdatasync", real)
    assert store.add_bytes(data).sha1 == hashlib.sha1(data).hexdigest()


# ---- durability: small blobs unsynced but verified on every read --------------------------------

@pytest.mark.parametrize("damage", ["truncated", "zeroed"])
def test_small_blob_torn_before_write_back_is_never_served(tmp_path, damage):
    store = Store(tmp_path)
    blob = store.add_bytes(b'{"result": 42}')
    path = store.path_for(blob.sha1)
    # What a power loss before the write-back can leave: the name, without (all) the bytes.
    with open(path, "r+b") as f:
        if damage == "truncated":
            f.truncate(3)
        else:
            f.write(b"\0" * 14)
    assert store.locate(blob.sha1) is None and not store.has(blob.sha1)
    assert not path.exists()                         # removed: it reads as missing
    with pytest.raises(NotFoundError):
        store.read_bytes(blob.sha1)
    assert store.add_bytes(b'{"result": 42}') == blob  # stored again, whole
    assert store.read_bytes(blob.sha1) == b'{"result": 42}'


def test_no_fsync_of_blobs_unless_sync_always(tmp_path, monkeypatch):
    real, synced = os.fsync, []

    def recording_fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)
    monkeypatch.setattr(os, "fsync", recording_fsync)
    store = Store(tmp_path / "a")
    store.add_bytes(b"small")
    assert synced == []
    big = store.add_bytes(os.urandom(2 * 1024 * 1024))
    # Only the journal entry (file and directories) is fsynced, never the blob's bytes.
    assert synced and all("/unsynced" in p for p in synced)
    assert os.listdir(tmp_path / "a" / "unsynced" / big.sha1)
    monkeypatch.setenv("KACHERY_SYNC", "always")
    synced.clear()
    Store(tmp_path / "b").add_bytes(b"small")
    Store(tmp_path / "b").add_bytes(os.urandom(2 * 1024 * 1024))
    assert len(synced) == 2 and all("/tmp/" in p for p in synced)       # one per blob, before the rename
    assert not (tmp_path / "b" / "unsynced").exists()


def test_flush_makes_large_blobs_durable_and_drops_their_entries(tmp_path):
    from kachery_client import durability
    store = Store(tmp_path)
    store.add_bytes(b"pending")
    big = store.add_bytes(os.urandom(2 * 1024 * 1024))
    assert os.listdir(tmp_path / "unsynced") == [big.sha1]
    durability.flush()
    assert os.listdir(tmp_path / "unsynced") == []
    assert store.read_bytes(big.sha1, 0, 4) and store.has(big.sha1)


def test_background_flush_within_about_a_second(tmp_path):
    big = Store(tmp_path).add_bytes(os.urandom(2 * 1024 * 1024))
    deadline = time.monotonic() + 10
    while os.listdir(tmp_path / "unsynced"):
        assert time.monotonic() < deadline, "the background flush never came"
        time.sleep(0.02)
    assert Store(tmp_path).has(big.sha1)


def _entry_from_an_earlier_boot(root, sha1):
    """What a power loss before the flush leaves: the entry, written in a boot that is over."""
    d = root / "unsynced" / sha1
    d.mkdir(parents=True, exist_ok=True)
    (d / "1.abc").write_text("an-earlier-boot")


def test_large_blob_from_an_unclean_shutdown_is_checked_before_it_is_served(tmp_path):
    from kachery_client import durability
    store = Store(tmp_path)
    data = os.urandom(3 * 1024 * 1024)
    whole = store.add_bytes(data)
    torn = store.add_bytes(os.urandom(3 * 1024 * 1024))
    durability.flush()
    for blob in (whole, torn):
        _entry_from_an_earlier_boot(tmp_path, blob.sha1)
    with open(store.path_for(torn.sha1), "r+b") as f:      # the tail never reached the disk
        f.seek(2 * 1024 * 1024)
        f.write(b"\0" * 1024 * 1024)
    assert store.locate(torn.sha1) is None and not store.path_for(torn.sha1).exists()
    assert store.locate(whole.sha1) == store.path_for(whole.sha1)
    assert os.listdir(tmp_path / "unsynced") == []        # both settled: one checked, one removed
    assert store.add_bytes(data) == whole
    # Storing the same content again must not trust a blob that is only the right size.
    _entry_from_an_earlier_boot(tmp_path, whole.sha1)
    with open(store.path_for(whole.sha1), "r+b") as f:
        f.write(b"\0" * 4096)
    assert store.add_bytes(data) == whole and store.verify(whole.sha1)


def test_failed_write_back_removes_the_large_blobs_it_covered(tmp_path, monkeypatch):
    from kachery_client import durability

    def failing_syncfs(root):
        raise OSError(errno.EIO, "Input/output error")
    store = Store(tmp_path)
    big = store.add_bytes(os.urandom(2 * 1024 * 1024))
    monkeypatch.setattr(durability, "_syncfs", failing_syncfs)
    with pytest.raises(LocalStorageError) as info:
        durability.flush()
    assert info.value.errno == errno.EIO
    assert not store.path_for(big.sha1).exists() and os.listdir(tmp_path / "unsynced") == []


def _resident_bytes(path) -> int:
    """Bytes of `path` in the page cache (util-linux fincore)."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


@pytest.mark.parametrize("drop_behind", [True, False])
def test_drop_behind_keeps_an_ingest_out_of_the_page_cache(tmp_path, monkeypatch, drop_behind):
    """A writer with drop_behind (the mount's incoming/) leaves at most the last two write-back
    ranges of what it wrote in the page cache when the disk keeps up; without it, the whole blob
    stays cached."""
    on_tmpfs = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True,
                              text=True).stdout.strip() == "tmpfs"
    # tmpfs keeps every page (they are the file): then a directory on the repository's disk.
    where = Path(__file__).parent.parent / ".pytest-scratch" / tmp_path.name if on_tmpfs else tmp_path
    monkeypatch.setattr(blob_writer, "EARLY_FLUSH", 1 << 20)
    store = Store(where / "s")
    parts = [os.urandom(1 << 20) for _ in range(12)]
    try:
        with store.writer(drop_behind=drop_behind) as w:
            for part in parts:
                w.write(part)
                w._wait_flush()     # each range's write-back done before the next is due, as on a fast disk
            blob = w.commit()
        resident = _resident_bytes(store.path_for(blob.sha1))
        if drop_behind:
            assert resident <= 3 << 20, resident
            assert store.read_bytes(blob.sha1) == b"".join(parts)
        else:
            assert resident == 12 << 20
    finally:
        if on_tmpfs:
            shutil.rmtree(where, ignore_errors=True)


def test_a_small_store_after_its_parent_directory_went(tmp_path):
    """The Store remembers which sha1/aa/bb it has made; one removed since (gc of emptied
    directories) is made again for the next blob under it."""
    store = Store(tmp_path)
    first = store.add_bytes(b"first")
    prefix = first.sha1[:4]
    other = next(d for d in (b"other %d" % i for i in range(2_000_000))
                 if hashlib.sha1(d).hexdigest()[:4] == prefix)
    shutil.rmtree(tmp_path / "sha1" / prefix[:2] / prefix[2:])
    blob = store.add_bytes(other)
    assert blob.sha1[:4] == prefix and store.read_bytes(blob.sha1) == other
