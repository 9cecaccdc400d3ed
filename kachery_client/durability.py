"""When a stored blob is durable, and how the store stays correct before it is (README "Durability").

The contract (docs/ARCHITECTURE.md "Durability"):
- A blob is served under its hash only with the right bytes, always, also after a power loss.
- Blobs over SMALL_BLOB bytes are fsynced before they are renamed into place (one fsync, the
  write-back overlapped with hashing): durable when the store call returns.
- Blobs of SMALL_BLOB bytes or fewer are renamed into place without an fsync, and are hashed again
  every time they are located for reading (`blob_is_sound`): a few KB hash in microseconds. One
  torn, truncated or zeroed by a crash before the kernel wrote it back is removed and reported
  missing, so it is fetched again where a source has it; it is never served. They are durable once
  `flush()` (`kc.flush()`) returns, once the storing process exits normally (an atexit flush), or
  when the kernel writes them back on its own (dirty_expire_centisecs, 30 s by default).
- KACHERY_SYNC=always: one fsync per blob whatever its size (durable when the store returns).

`flush()` is one syncfs(2) per storage directory that has unsynced blobs: one system call
however many blobs are pending.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import errno as errno_codes
import hashlib
import logging
import os
import stat
import threading
from pathlib import Path

from .errors import LocalStorageError

log = logging.getLogger(__name__)

SMALL_BLOB = 1024 * 1024         # at or under: no fsync, verified on every read


def sync_always() -> bool:
    """KACHERY_SYNC=always: fsync every blob before it is published."""
    return os.environ.get("KACHERY_SYNC", "").strip().lower() == "always"


def storage_error(e: OSError, doing: str) -> LocalStorageError:
    """A refused write (ENOSPC, EDQUOT, EROFS, EIO, ...) as the one error kind for it."""
    return LocalStorageError(f"{doing}: {e.strerror or e}", e.errno or errno_codes.EIO)


def blob_is_sound(path: Path, sha1: str) -> bool | None:
    """True if `path` is a regular file that is large (fsynced before publish) or hashes to `sha1`;
    None if it is absent; False if it is a small blob whose bytes are wrong (torn by a crash)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        if st.st_size > SMALL_BLOB:
            return True
        h = hashlib.sha1()
        while block := os.read(fd, SMALL_BLOB + 1):
            h.update(block)
        return h.hexdigest() == sha1
    finally:
        os.close(fd)


def process_umask() -> int:
    """The umask, read without changing it (os.umask would race other threads); 0o777 if unknown,
    so that callers chmod."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o777


class PendingSyncs:
    """Storage directories holding blobs published without an fsync, flushed by `flush()`."""

    def __init__(self) -> None:
        self._roots: set[Path] = set()
        self._lock = threading.Lock()

    def add(self, root: Path) -> None:
        if root not in self._roots:
            with self._lock:
                self._roots.add(root)

    def flush(self) -> None:
        """Make every blob this process stored durable. Raises LocalStorageError if the file system
        reports a failed write-back."""
        with self._lock:
            roots, self._roots = self._roots, set()
        for root in roots:
            try:
                _syncfs(root)
            except FileNotFoundError:
                continue                    # the storage directory is gone: nothing to keep
            except OSError as e:
                raise storage_error(e, f"flushing {root}") from None


def _load_syncfs():  # type: ignore[no-untyped-def]
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):
        return None


_libc_syncfs = _load_syncfs()


def _syncfs(root: Path) -> None:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc_syncfs is None:
            os.sync()
        elif _libc_syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
    finally:
        os.close(fd)


pending = PendingSyncs()


def flush() -> None:
    """Every blob this process stored is durable when this returns."""
    pending.flush()


def _flush_at_exit() -> None:
    try:
        pending.flush()
    except Exception as e:          # noqa: BLE001 - the interpreter is exiting: say it, do not raise
        log.error("could not make stored blobs durable at exit: %s", e)


atexit.register(_flush_at_exit)
