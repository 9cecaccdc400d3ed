"""The Python API: store_* / load_* / link_file / mutables. Local store first, node second.

Where bytes go:
- offline (KACHERY_OFFLINE_STORAGE_DIR): only that storage directory, never a node;
- a node whose storage directory this process can see and write: add the blob ourselves through
  Store (no bytes over HTTP) and tell the node (`/kacheryfs/added`);
- otherwise: stream to the node's `/store`; loads come back through `/loadFile` and, when the
  node's path is not visible here, through `/downloadFileData` into a local cache store.
`load_range` (kachery-cat) of content not local here streams from the node (streaming.py).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import durability, safe_pickle
from .config import Config
from .errors import IntegrityError, LocalFileError, NotFoundError, OfflineError, UsageError
from .node_http import NodeClient, is_writable_dir
from .storage_errors import storage_errors
from .store import Store, StoredBlob
from .streaming import stream_from_node
from .uri import FileURI, format_file_uri, is_file_uri, parse_file_uri

ProgressFn = Callable[[int], None]
LoadProgressFn = Callable[[int, int, "str | None"], None]      # (loaded, total, source)
_ENV_KEYS = ("KACHERY_OFFLINE_STORAGE_DIR", "KACHERY_STORAGE_DIR", "KACHERY_DAEMON_HOST",
             "KACHERY_DAEMON_PORT", "KACHERY_TEMP_DIR", "KACHERY_KEEP_TEMP_FILES", "KACHERY_CLIENT_AUTH_CODE")


class _Context:
    """What the environment says, resolved once per distinct environment."""

    def __init__(self, config: Config):
        self.config = config
        self._node: NodeClient | None = None
        self._stores: dict[Path, Store] = {}
        self._offline_dir_checked = False

    def store_at(self, path: Path) -> Store:
        if path not in self._stores:
            self._stores[path] = Store(path)
        return self._stores[path]

    def node(self) -> NodeClient:
        if self.config.offline:
            raise OfflineError("this needs a kachery node, and offline mode "
                               "(KACHERY_OFFLINE_STORAGE_DIR) uses none")
        if self._node is None:
            self._node = NodeClient(self.config)
        return self._node

    def local_store(self) -> Store | None:
        """The store this process reads directly: offline dir, or the node's if visible here."""
        if self.config.offline_storage_dir is not None:
            return self.store_at(self.config.offline_storage_dir)
        shared = self.node().shared_storage_dir()
        return self.store_at(shared) if shared is not None else None

    def writable_local_store(self) -> Store | None:
        """The local store if this process may add to it (offline: created if missing)."""
        store = self.local_store()
        if store is not None and self.config.offline and not self._offline_dir_checked:
            try:
                store.root.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise LocalFileError(f"cannot create the offline storage directory {store.root}: "
                                     f"{e.strerror}") from None
            if not is_writable_dir(store.root):
                raise LocalFileError(f"the offline storage directory {store.root} is not writable")
            self._offline_dir_checked = True        # once per process: each check is a syscall
        if self._offline_dir_checked:
            return store                            # offline: checked above (a later refusal is a LocalStorageError)
        return store if store is not None and is_writable_dir(store.root) else None

    def cache_store(self) -> Store:
        """Where bytes downloaded from a node on another host are kept: the shared store if
        writable, else this machine's own KACHERY_STORAGE_DIR, else ~/.cache/kachery/storage."""
        shared = self.local_store()
        if shared is not None and is_writable_dir(shared.root):
            return shared
        return self.store_at(self.config.storage_dir or Path("~/.cache/kachery/storage").expanduser())


_contexts: dict[tuple[object, ...], _Context] = {}


# The environment as CPython keeps it (bytes): os.environ.get encodes each key and decodes each
# value, which was a fifth of a small store's time. os.environ updates this dict too.
_RAW_ENV: dict[bytes, bytes] | None = getattr(os.environ, "_data", None)
_RAW_ENV_KEYS = tuple(os.fsencode(k) for k in _ENV_KEYS)


def _context() -> _Context:
    """The context of the current environment (made once per distinct environment)."""
    if _RAW_ENV is not None:
        key: tuple[object, ...] = tuple(map(_RAW_ENV.get, _RAW_ENV_KEYS))
    else:
        key = tuple(map(os.environ.get, _ENV_KEYS))
    ctx = _contexts.get(key)
    if ctx is None:
        ctx = _contexts[key] = _Context(Config.from_env())
    return ctx


def node_client() -> NodeClient:
    """The client of this process's node (raises OfflineError in offline mode)."""
    return _context().node()


# ---- storing ------------------------------------------------------------------------------

def store_file(path: str | os.PathLike[str], basename: str | None = None,
               progress: ProgressFn | None = None) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        if not os.path.exists(path) or os.path.isdir(path):
            raise LocalFileError(f"no such file: {path}" if not os.path.exists(path) else f"a directory: {path}")
        return _store_readable(path, basename or "file.dat", progress)     # a pipe, <(...), a device
    name = basename or os.path.basename(path)
    ctx = _context()
    store = ctx.writable_local_store()
    if store is not None:
        with storage_errors(str(store.root)):      # a refused write: LocalStorageError
            blob = store.add_file(path, progress)
        if not ctx.config.offline:
            ctx.node().notify_added(blob.sha1, name, blob.manifest_sha1)
    else:
        with open(path, "rb") as f:
            blob = ctx.node().store_stream(f, os.fstat(f.fileno()).st_size, name)
    return _uri(blob, name)


def _store_readable(path: str, name: str, progress: ProgressFn | None) -> str:
    """Anything readable that is not a regular file: read once, as a stream (the original
    accepted these too)."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise LocalFileError(f"cannot read {path}: {e.strerror}") from None
    ctx = _context()
    with f:
        store = ctx.writable_local_store()
        if store is not None:
            blob = store.add_stream(f, progress)
            if not ctx.config.offline:
                ctx.node().notify_added(blob.sha1, name, blob.manifest_sha1)
            return _uri(blob, name)
        # Over HTTP the node needs the length first: spool (in memory up to 64 MB, then on disk).
        ctx.config.temp_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.SpooledTemporaryFile(64 << 20, "w+b", dir=str(ctx.config.temp_dir)) as spool:
            shutil.copyfileobj(f, spool, 1 << 20)
            size = spool.tell()
            spool.seek(0)
            blob = ctx.node().store_stream(spool, size, name)  # type: ignore[arg-type]
    return _uri(blob, name)


def store_bytes(data: bytes, basename: str = "file.dat") -> str:
    ctx = _context()
    store = ctx.writable_local_store()
    if store is not None:
        with storage_errors(str(store.root)):
            blob = store.add_bytes(data)
        if not ctx.config.offline:
            ctx.node().notify_added(blob.sha1, basename, blob.manifest_sha1)
    else:
        blob = ctx.node().store_stream(io.BytesIO(data), len(data), basename)
    return _uri(blob, basename)


def store_text(text: str, basename: str = "file.txt") -> str:
    return store_bytes(text.encode("utf-8"), basename)


def store_json(obj: Any, basename: str = "file.json", separators: tuple[str, str] = (",", ":"),
               indent: int | None = None) -> str:
    text = json.dumps(obj, separators=separators, indent=indent, allow_nan=False)
    return store_bytes(text.encode("utf-8"), basename)


def store_npy(array: Any, basename: str = "file.npy") -> str:
    import numpy as np
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return store_bytes(buf.getvalue(), basename)


def store_pkl(obj: Any, basename: str = "file.pkl") -> str:
    return store_bytes(safe_pickle.dumps(obj), basename)


def link_file(path: str | os.PathLike[str], basename: str | None = None) -> str:
    """Register a file in place (no copy). It stays valid while its size and mtime hold."""
    path = os.path.abspath(os.fspath(path))
    name = basename or os.path.basename(path)
    ctx = _context()
    if ctx.config.offline:
        store = ctx.writable_local_store()
        assert store is not None
        with storage_errors(str(store.root)):
            blob = store.link(path)
    else:
        try:
            st = os.stat(path)
        except OSError as e:
            raise LocalFileError(f"cannot link {path}: {e.strerror}") from None
        blob = ctx.node().link_file(path, st.st_size, st.st_mtime)
    return _uri(blob, name)


def flush(timeout: float = 10.0) -> None:
    """Every blob this process stored is durable when this returns (README "Durability"), and the
    node, if one is used, has been told about the ones added to its storage directory."""
    durability.flush()
    ctx = _context()
    if not ctx.config.offline and ctx._node is not None:
        ctx._node.flush(timeout)


def _uri(blob: StoredBlob, name: str) -> str:
    return format_file_uri(blob.sha1, name, manifest_sha1=blob.manifest_sha1)


# ---- loading ------------------------------------------------------------------------------

def load_file(uri: str, dest: str | os.PathLike[str] | None = None, local_only: bool = False,
              progress: LoadProgressFn | None = None) -> str:
    """Local path of the content (fetched through the node if needed); `dest=` copies it there.

    A string that is not a sha1:// URI is taken as a local path, as in the original client.
    Raises NotFoundError when no source has the content. `progress(loaded, total, source)` is
    called as the node reports its fetch.
    """
    if not is_file_uri(uri):
        if "://" in str(uri) or str(uri).startswith(("sha1:", "feed:")):
            parse_file_uri(uri)  # raises a clear InvalidURIError
        if not os.path.isfile(uri):
            raise LocalFileError(f"no such file: {uri}")
        path = str(uri)
    else:
        path = str(_locate(parse_file_uri(uri), local_only, progress))
    if dest is not None:
        try:
            shutil.copyfile(path, dest)
        except OSError as e:
            raise LocalFileError(f"cannot write {dest}: {e.strerror}") from None
        return os.fspath(dest)
    return path


def load_range(uri: str, start: int, end: int | None, progress: LoadProgressFn | None = None) -> Iterator[bytes]:
    """Bytes [start, end) of the content (to its end if end is None or past it), in order.

    Local content (offline, the node's storage dir visible, this machine's cache) is read from its
    blob. Otherwise the node streams it (streaming.py): bytes come as soon as the chunks covering
    them are verified, not after the whole file; `progress(written, total, source)` follows them.
    """
    if end is not None and end < start:
        raise UsageError(f"end ({end}) is before start ({start})")
    if not is_file_uri(uri) and not str(uri).startswith(("sha1:", "feed:")):
        yield from _read_file(load_file(uri), start, end)          # a local path
        return
    furi = parse_file_uri(uri)
    ctx = _context()
    local = _find_local(ctx, furi)
    if local is None and not ctx.config.offline and furi.chunk_of is None:
        yield from stream_from_node(ctx.node(), furi, start, end, progress)
        return
    yield from _read_file(local or _locate(furi, local_only=False), start, end)


def _read_file(path: str | os.PathLike[str], start: int, end: int | None) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(start)
        left = None if end is None else end - start
        while left is None or left > 0:
            block = f.read(1 << 20 if left is None else min(1 << 20, left))
            if not block:
                return
            if left is not None:
                left -= len(block)
            yield block


def _find_local(ctx: _Context, furi: FileURI) -> Path | None:
    store = ctx.local_store()
    stores = [store] if store is not None else []
    if not ctx.config.offline:
        stores.append(ctx.cache_store())
    return next((p for s in stores if (p := s.locate(furi.sha1)) is not None), None)


def _locate(furi: FileURI, local_only: bool, progress: LoadProgressFn | None = None) -> Path:
    ctx = _context()
    found = _find_local(ctx, furi)
    if found is not None:
        return found
    if ctx.config.offline or local_only:
        store = ctx.local_store()
        where = ctx.config.offline_storage_dir or (store.root if store else "the local store")
        raise NotFoundError(f"sha1://{furi.sha1} is not in {where}")
    node_path = Path(ctx.node().load_file(furi, progress))
    if os.access(node_path, os.R_OK):
        return node_path
    return download(ctx, furi)


def download(ctx: _Context, furi: FileURI) -> Path:
    """Bytes from a node on another host, verified before they become a blob here."""
    cache = ctx.cache_store()
    with storage_errors(str(cache.root)), cache.writer(expected_sha1=furi.sha1) as w:
        for block in ctx.node().download(furi.sha1):
            w.write(block)
        w.commit()
    found = cache.locate(furi.sha1)
    if found is None:
        raise IntegrityError(f"sha1://{furi.sha1} vanished from {cache.root} after download")
    return found


def load_bytes(uri: str, start: int | None = None, end: int | None = None,
               local_only: bool = False) -> bytes:
    if start is not None and start < 0 or end is not None and end < 0:
        raise UsageError("start and end must not be negative")
    if start is not None and end is not None and end < start:
        raise UsageError(f"end ({end}) is before start ({start})")
    if start is None and end is None and (data := _small_local(uri)) is not None:
        return data
    if end is not None and not local_only:
        return b"".join(load_range(uri, start or 0, end))     # content still arriving: only its range
    with open(load_file(uri, local_only=local_only), "rb") as f:
        f.seek(start or 0)
        return f.read(-1 if end is None else end - (start or 0))


def _small_local(uri: str) -> bytes | None:
    """A small blob in a local store, read and verified in one open (Store.read_small); None
    sends the caller the general way (large, a link, not here, not a sha1:// URI)."""
    if not is_file_uri(uri):
        return None
    sha1 = parse_file_uri(uri).sha1
    ctx = _context()
    store = ctx.local_store()
    stores = [store] if store is not None else []
    if not ctx.config.offline:
        stores.append(ctx.cache_store())
    return next((data for s in stores if (data := s.read_small(sha1)) is not None), None)


def load_text(uri: str, local_only: bool = False) -> str:
    return load_bytes(uri, local_only=local_only).decode("utf-8")


def load_json(uri: str, local_only: bool = False) -> Any:
    return json.loads(load_bytes(uri, local_only=local_only))


def load_npy(uri: str, local_only: bool = False) -> Any:
    import numpy as np
    return np.load(load_file(uri, local_only=local_only), allow_pickle=False)


def load_pkl(uri: str, local_only: bool = False) -> Any:
    return safe_pickle.loads(load_bytes(uri, local_only=local_only))


# ---- sharing (node only) ------------------------------------------------------------------

def upload(uri: str, channel: str) -> bool:
    """Put stored content into a channel's bucket through the node (multipart when large).
    True if uploaded, False if the bucket already had it."""
    furi = parse_file_uri(uri)
    out = node_client().post_json("/kacheryfs/upload", {"sha1": furi.sha1, "channel": channel})
    return bool(out.get("uploaded"))


# ---- mutables (node only) -----------------------------------------------------------------

def set(key: Any, value: Any, update: bool = True) -> bool:  # noqa: A001 - the original's name
    body: dict[str, Any] = {"key": key, "value": value}
    if not update:
        body["update"] = False
    return bool(node_client().post_json("/mutable/set", body).get("success"))


def get(key: Any) -> Any:
    obj = node_client().post_json("/mutable/get", {"key": key})
    if not obj.get("success"):
        raise NotFoundError(f"unable to get the value for key {key!r}: {obj.get('error')}")
    return obj["value"] if obj.get("found") else None


def get_string(key: Any) -> str | None:
    value = get(key)
    return value if isinstance(value, str) else None


def delete(key: Any) -> bool:
    return bool(node_client().post_json("/mutable/delete", {"key": key}).get("success"))
