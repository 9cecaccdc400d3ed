import hashlib

from kachery_client.store import CHUNK_SIZE, Store, parse_manifest


def test_add_bytes_roundtrip(tmp_path):
    store = Store(tmp_path)
    blob = store.add_bytes(b"hello")
    assert blob.sha1 == "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d"
    path = store.path_for(blob.sha1)
    assert path == tmp_path / "sha1/aa/f4/c6" / blob.sha1
    assert path.read_bytes() == b"hello"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert list(store.iter_hashes()) == [blob.sha1]
    assert not list((tmp_path / "tmp").iterdir())


def test_manifest_above_one_chunk(tmp_path):
    store = Store(tmp_path)
    data = bytes(range(256)) * ((CHUNK_SIZE + 1) // 256 + 1)
    data = data[: CHUNK_SIZE + 1]
    blob = store.add_bytes(data)
    assert blob.sha1 == hashlib.sha1(data).hexdigest()
    m = parse_manifest(store.path_for(blob.manifest_sha1).read_bytes(), blob.sha1)
    assert [c[2] for c in m.chunks] == [hashlib.sha1(data[:CHUNK_SIZE]).hexdigest(),
                                        hashlib.sha1(data[CHUNK_SIZE:]).hexdigest()]
    assert store.add_bytes(data[:CHUNK_SIZE]).manifest_sha1 is None
