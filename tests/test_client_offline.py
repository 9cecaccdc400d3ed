"""The Python API in offline mode: KACHERY_OFFLINE_STORAGE_DIR, no node anywhere."""

import json
import os
import pickle

import numpy as np
import pytest

import kachery_client as kc
from kachery_client.errors import (
    InvalidURIError,
    LocalFileError,
    NodeUnavailableError,
    NotFoundError,
    OfflineError,
    UsageError,
)
from kachery_client.store import Store


@pytest.fixture
def offline(tmp_path, monkeypatch):
    storage = tmp_path / "storage"
    monkeypatch.setenv("KACHERY_OFFLINE_STORAGE_DIR", str(storage))
    monkeypatch.setenv("KACHERY_TEMP_DIR", str(tmp_path / "ktmp"))
    for var in ("KACHERY_STORAGE_DIR", "KACHERY_KEEP_TEMP_FILES"):
        monkeypatch.delenv(var, raising=False)
    return storage


def test_text_json_bytes_roundtrip(offline):
    uri = kc.store_text("hello")
    assert uri == "sha1://aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d/file.txt"
    assert kc.load_text(uri) == "hello"
    assert (offline / "sha1/aa/f4/c6/aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d").read_bytes() == b"hello"
    juri = kc.store_json({"b": [1, 2.5, None], "a": "é"})
    assert juri.endswith("/file.json")
    assert kc.load_json(juri) == {"b": [1, 2.5, None], "a": "é"}
    assert kc.load_bytes(uri, 1, 3) == b"el"
    assert kc.load_bytes(uri, start=2) == b"llo"
    assert kc.load_bytes(uri, end=2) == b"he"
    with pytest.raises(UsageError):
        kc.load_bytes(uri, 3, 1)
    assert kc.store_bytes(b"") == "sha1://da39a3ee5e6b4b0d3255bfef95601890afd80709/file.dat"
    assert not os.path.exists(offline / "tmp") or os.listdir(offline / "tmp") == []


def test_npy_and_pkl_roundtrip(offline):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    uri = kc.store_npy(a)
    assert uri.endswith("/file.npy")
    np.testing.assert_array_equal(kc.load_npy(uri), a)
    obj = {"x": [1, 2, {"y": (3, 4)}], "s": {1, 2}, "arr": np.arange(3), "f": np.float64(2.5)}
    back = kc.load_pkl(kc.store_pkl(obj))
    assert back["x"] == obj["x"] and back["s"] == {1, 2} and back["f"] == 2.5
    np.testing.assert_array_equal(back["arr"], np.arange(3))


def test_pickles_naming_code_are_refused(offline):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    uri = kc.store_bytes(pickle.dumps(Evil()), "evil.pkl")
    with pytest.raises(UsageError, match="refusing to unpickle"):
        kc.load_pkl(uri)


def test_store_and_load_file_with_dest(offline, tmp_path):
    src = tmp_path / "results.csv"
    src.write_bytes(b"a,b\n1,2\n")
    uri = kc.store_file(src)
    assert uri.endswith("/results.csv")
    path = kc.load_file(uri)
    assert open(path, "rb").read() == b"a,b\n1,2\n" and path.startswith(str(offline))
    dest = tmp_path / "copy.csv"
    assert kc.load_file(uri, dest=dest) == str(dest) and dest.read_bytes() == b"a,b\n1,2\n"
    assert kc.load_file(str(src)) == str(src)         # a plain path is a local file
    with pytest.raises(LocalFileError):
        kc.store_file(tmp_path / "missing.csv")
    with pytest.raises(LocalFileError):
        kc.store_file(tmp_path)


def test_link_file_valid_then_invalidated(offline, tmp_path):
    target = tmp_path / "rec.bin"
    target.write_bytes(os.urandom(1000))
    uri = kc.link_file(target)
    assert uri.endswith("/rec.bin")
    assert kc.load_file(uri) == str(target)
    os.utime(target, (12345, 12345))
    with pytest.raises(NotFoundError):
        kc.load_file(uri)


def test_missing_content_and_bad_uris_raise(offline):
    with pytest.raises(NotFoundError, match="is not in"):
        kc.load_text("sha1://" + "0" * 40 + "/x.txt")
    with pytest.raises(UsageError, match="40 hexadecimal digits"):
        kc.load_text("sha1://123/x.txt")
    with pytest.raises(InvalidURIError):
        kc.load_file("ipfs://Qm/x")


def test_mutables_and_node_features_say_offline(offline):
    with pytest.raises(OfflineError, match="offline mode"):
        kc.set("k", "v")
    with pytest.raises(OfflineError):
        kc.get("k")


def test_original_client_reads_our_offline_store(offline, tmp_path, kc120_python):
    """Interop: the unmodified kachery-client 1.2.0 loads what we stored (same layout)."""
    import subprocess
    uri = kc.store_text("shared bytes")
    big = tmp_path / "b.bin"
    big.write_bytes(os.urandom(3000))
    furi = kc.store_file(big)
    script = ("import sys, kachery_client as kc; print(kc.load_text(sys.argv[1])); "
              "print(kc.load_file(sys.argv[2]))")
    out = subprocess.run([kc120_python, "-c", script, uri, furi], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "KACHERY_DAEMON_PORT": "9", "PYTHONPATH": ""}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    text, path = out.stdout.splitlines()
    assert text == "shared bytes" and open(path, "rb").read() == big.read_bytes()


def test_we_read_a_store_laid_out_by_the_original(offline, tmp_path):
    data = b"written by the original daemon"
    import hashlib
    sha1 = hashlib.sha1(data).hexdigest()
    p = offline / "sha1" / sha1[:2] / sha1[2:4] / sha1[4:6] / sha1
    p.parent.mkdir(parents=True)
    p.write_bytes(data)
    assert kc.load_bytes(f"sha1://{sha1}/x") == data
    target = tmp_path / "elsewhere.bin"
    target.write_bytes(b"linked by the original")
    lsha1 = hashlib.sha1(target.read_bytes()).hexdigest()
    st = os.stat(target)
    lp = Store(offline).link_path_for(lsha1)
    lp.parent.mkdir(parents=True, exist_ok=True)
    record = {"path": str(target), "manifestSha1": None, "stat": {"size": st.st_size, "mtime": st.st_mtime},
              "_writingProcess": "daemon"}
    lp.write_text(json.dumps(record, separators=(",", ":")))
    assert kc.load_file(f"sha1://{lsha1}/e.bin") == str(target)


def test_no_node_error_names_the_address(tmp_path, monkeypatch):
    monkeypatch.delenv("KACHERY_OFFLINE_STORAGE_DIR", raising=False)
    monkeypatch.setenv("KACHERY_DAEMON_PORT", "9")       # discard port: nothing listens
    monkeypatch.setenv("KACHERY_DAEMON_HOST", "127.0.0.1")
    with pytest.raises(NodeUnavailableError) as e:
        kc.store_text("x")
    assert "127.0.0.1:9" in str(e.value) and "kacheryfs run" in str(e.value)
    assert "KACHERY_OFFLINE_STORAGE_DIR" in str(e.value)
