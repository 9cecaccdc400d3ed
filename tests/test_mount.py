"""End-to-end tests of the mount: a real node process, a real FUSE mount, real commands."""

import concurrent.futures
import errno
import hashlib
import os
import signal
import subprocess
import textwrap
import time

import pytest

from tests.support.mount import mounted_node, mounted_script, stored_link, wait_for_mount
from tests.support.nodeproc import start_node

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")


def sha1_of(data):
    return hashlib.sha1(data).hexdigest()


@pytest.fixture(scope="module")
def mounted(tmp_path_factory):
    with mounted_node(tmp_path_factory.mktemp("m")) as (node, mnt):
        yield node, mnt


def test_layout_and_reading_stored_blobs(mounted, tmp_path):
    node, mnt = mounted
    data = os.urandom(3_000_000)
    sha1 = node.post("/store", data=data, headers={"X-Kachery-Name": "rec.bin"}).json()["sha1"]
    assert sorted(os.listdir(mnt)) == ["incoming", "sha1"]
    assert sha1 in os.listdir(mnt / "sha1")
    assert "rec.bin" in os.listdir(mnt / "sha1" / sha1)
    path = mnt / "sha1" / sha1 / "any-name-works.dat"
    assert path.read_bytes() == data
    assert subprocess.run(["cat", str(path)], capture_output=True).stdout == data
    assert subprocess.run(["sha1sum", str(path)], capture_output=True, text=True).stdout.split()[0] == sha1
    subprocess.run(["cp", str(path), str(tmp_path / "copy")], check=True)
    assert (tmp_path / "copy").read_bytes() == data
    assert os.stat(path).st_size == len(data)
    with pytest.raises(OSError) as e:
        open(path, "r+b")
    assert e.value.errno in (errno.EPERM, errno.EACCES)


def test_incoming_cp_shell_and_python(mounted, tmp_path):
    node, mnt = mounted
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(9_000_000))           # more than one ingest batch
    subprocess.run(["cp", str(src), str(mnt / "incoming" / "src.bin")], check=True)
    link = mnt / "incoming" / "src.bin"
    sha1 = sha1_of(src.read_bytes())
    assert stored_link(link) == f"../sha1/{sha1}/src.bin"
    assert link.read_bytes() == src.read_bytes()               # through the symlink
    assert node.post("/downloadFileData", json={"fileKey": {"sha1": sha1}}).content == src.read_bytes()
    subprocess.run(["sh", "-c", f"printf 'from a shell' > {mnt}/incoming/shell.txt"], check=True)
    assert stored_link(mnt / "incoming" / "shell.txt") == f"../sha1/{sha1_of(b'from a shell')}/shell.txt"
    with open(mnt / "incoming" / "py.txt", "w") as f:
        f.write("from python")
    assert stored_link(mnt / "incoming" / "py.txt").endswith(f"{sha1_of(b'from python')}/py.txt")
    assert "py.txt" in os.listdir(mnt / "sha1" / sha1_of(b"from python"))
    os.unlink(mnt / "incoming" / "py.txt")
    assert "py.txt" not in os.listdir(mnt / "incoming")
    assert (mnt / "sha1" / sha1_of(b"from python") / "x").read_bytes() == b"from python"   # content stays


def test_incoming_removed_while_writing_stores_nothing(mounted):
    node, mnt = mounted
    payload = b"never to be stored " * 1000
    fd = os.open(mnt / "incoming" / "gone.bin", os.O_WRONLY | os.O_CREAT)
    os.write(fd, payload)
    os.unlink(mnt / "incoming" / "gone.bin")
    with pytest.raises(OSError):
        os.write(fd, b"more")
    os.close(fd)
    assert sha1_of(payload) not in os.listdir(mnt / "sha1")
    assert os.listdir(node.storage_dir / "tmp") == []


def test_out_of_order_write_stores_nothing(mounted):
    node, mnt = mounted
    fd = os.open(mnt / "incoming" / "seek.bin", os.O_WRONLY | os.O_CREAT)
    os.write(fd, b"abc")
    with pytest.raises(OSError) as e:
        os.pwrite(fd, b"zzz", 100)
    assert e.value.errno == errno.EIO
    os.close(fd)
    assert "seek.bin" not in os.listdir(mnt / "incoming")
    assert os.listdir(node.storage_dir / "tmp") == []


def test_concurrent_readers(mounted):
    node, mnt = mounted
    data = os.urandom(8_000_000)
    sha1 = node.post("/store", data=data).json()["sha1"]

    def read(i):
        return sha1_of((mnt / "sha1" / sha1 / f"r{i % 3}").read_bytes())
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert set(pool.map(read, range(16))) == {sha1}


def test_xattrs(mounted):
    node, mnt = mounted
    sha1 = node.post("/store", data=b"xattr me").json()["sha1"]
    out = subprocess.run(["getfattr", "-d", str(mnt / "sha1" / sha1 / "x.txt")], capture_output=True, text=True)
    assert f'user.kachery.sha1="{sha1}"' in out.stdout
    assert f'user.kachery.uri="sha1://{sha1}/x.txt"' in out.stdout
    assert 'user.kachery.cached="1"' in out.stdout
    fd = os.open(mnt / "incoming" / "x.txt", os.O_WRONLY | os.O_CREAT)
    os.write(fd, b"xattr me")
    assert os.getxattr(mnt / "incoming" / "x.txt", "user.kachery.cached") == b"0"     # still being written
    os.close(fd)
    stored_link(mnt / "incoming" / "x.txt")
    # Linux keeps user.* attributes off symlinks: a stored entry answers through its link
    assert os.getxattr(mnt / "incoming" / "x.txt", "user.kachery.sha1") == sha1.encode()
    out = subprocess.run(["getfattr", "-n", "user.kachery.uri", str(mnt / "incoming" / "x.txt")],
                         capture_output=True, text=True)
    assert f"sha1://{sha1}/x.txt" in out.stdout


def test_enoent_for_bad_and_absent_hashes(mounted):
    _, mnt = mounted
    for bad in ("nothex", "0" * 39, "0" * 40):
        with pytest.raises(FileNotFoundError):
            os.stat(mnt / "sha1" / bad / "x")
    with pytest.raises(FileNotFoundError):
        os.stat(mnt / "nope")


def test_unmount_remount_and_stale_mount_recovery(tmp_path):
    storage, mnt = tmp_path / "storage", tmp_path / "mnt"
    with mounted_node(tmp_path, storage, mnt) as (node, _):
        (mnt / "incoming" / "keep.txt").write_bytes(b"kept")
        stored_link(mnt / "incoming" / "keep.txt")
    assert not os.path.ismount(mnt)                       # SIGTERM unmounted cleanly
    node = start_node(storage, args=("--mount", str(mnt)))
    try:
        wait_for_mount(mnt, node.proc, node.log())
        assert (mnt / "sha1" / sha1_of(b"kept") / "keep.txt").read_bytes() == b"kept"
        node.stop(signal.SIGKILL)                          # crash: the mount is left stale
        with pytest.raises(OSError) as e:
            os.listdir(mnt)
        assert e.value.errno == errno.ENOTCONN
    finally:
        node.stop()
    with mounted_node(tmp_path, storage, mnt) as (node, _):   # a new node cleans it and mounts
        assert (mnt / "sha1" / sha1_of(b"kept") / "k").read_bytes() == b"kept"
        assert "stale mount" in node.log()


FETCHER_SCRIPT = textwrap.dedent("""
    import sys, time, trio
    from pathlib import Path
    from kacheryfs.content.fetcher import Fetcher
    from kacheryfs.node import Node
    from kacheryfs.fuse.mount import run_mount
    from kacheryfs.content.sources import RemoteBlob

    class FakeSource:                                  # a peer with odd behaviours, by hash prefix
        kind, label = "peer", "fake peer"
        def stat(self, sha1):
            if sha1.startswith("ee"):
                time.sleep(3600)                       # never answers
            if sha1.startswith("ff"):
                return RemoteBlob(5)
            return None
        def read_range(self, sha1, start, end, sink):
            sink(memoryview(b"wrong"[start:end]))      # bytes that never match the hash

    mnt, storage = Path(sys.argv[1]), Path(sys.argv[2])
    node = Node(storage)
    node.fetcher = Fetcher(node.store, [FakeSource()])

    async def main():
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run_services)
            await run_mount(node, mnt, fetch_timeout=1.0)
            nursery.cancel_scope.cancel()
    trio.run(main)
""")


def test_eio_for_failing_and_slow_sources(tmp_path):
    mnt = tmp_path / "mnt"
    with mounted_script(FETCHER_SCRIPT, mnt, str(tmp_path / "storage")):
        t = time.monotonic()
        with pytest.raises(OSError) as e:
            os.stat(mnt / "sha1" / ("ee" * 20) / "x")
        assert e.value.errno == errno.EIO and time.monotonic() - t < 10
        assert os.stat(mnt / "sha1" / ("ff" * 20) / "x").st_size == 5    # the size is known at once
        with pytest.raises(OSError) as e:
            (mnt / "sha1" / ("ff" * 20) / "x").read_bytes()              # the bytes never verify
        assert e.value.errno == errno.EIO
        with pytest.raises(FileNotFoundError):
            os.stat(mnt / "sha1" / ("aa" * 20) / "x")


def _peak_rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_ingest_memory_stays_bounded(mounted, tmp_path):
    node, mnt = mounted
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        block = os.urandom(1 << 20)
        for i in range(256):
            f.write(block[i:] + block[:i])
    before = _peak_rss_kib(node.proc.pid)
    subprocess.run(["cp", str(src), str(mnt / "incoming" / "big.bin")], check=True)
    link = stored_link(mnt / "incoming" / "big.bin")
    assert link.split("/")[2] == sha1_of(src.read_bytes())
    growth_mib = (_peak_rss_kib(node.proc.pid) - before) / 1024
    assert growth_mib < 100, f"the node's peak RSS grew by {growth_mib:.0f} MiB while 256 MiB came in"


def test_every_name_of_a_content_is_one_inode(mounted):
    node, mnt = mounted
    data = os.urandom(2_000_000)
    sha1 = node.post("/store", data=data).json()["sha1"]
    a, b = mnt / "sha1" / sha1 / "a.bin", mnt / "sha1" / sha1 / "b.bin"
    assert a.read_bytes() == data
    out = subprocess.run(["stat", "-c", "%i", str(a), str(b)], capture_output=True, text=True, check=True)
    first, second = out.stdout.split()
    assert first == second                       # hard links of one file: one page cache
    assert os.stat(mnt / "sha1" / sha1).st_ino != int(first)
    assert b.read_bytes() == data


def test_incoming_symlink_is_there_when_close_returns(mounted, tmp_path):
    """No polling: the store happens in flush, which close() waits for."""
    _, mnt = mounted
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(6_000_000))
    sha1 = sha1_of(src.read_bytes())
    for i in range(3):
        subprocess.run(["cp", str(src), str(mnt / "incoming" / f"now{i}.bin")], check=True)
        assert os.readlink(mnt / "incoming" / f"now{i}.bin") == f"../sha1/{sha1}/now{i}.bin"
    with open(mnt / "incoming" / "py-now.txt", "wb") as f:
        f.write(b"python, at once")
    assert os.readlink(mnt / "incoming" / "py-now.txt") == f"../sha1/{sha1_of(b'python, at once')}/py-now.txt"
    subprocess.run(["sh", "-c", f"printf 'shell, at once' > {mnt}/incoming/sh-now.txt"], check=True)
    assert os.readlink(mnt / "incoming" / "sh-now.txt") == f"../sha1/{sha1_of(b'shell, at once')}/sh-now.txt"
