"""When a stored blob is durable, and how the store stays correct before it is (README "Durability").

The contract (docs/ARCHITECTURE.md "Durability"):
- A blob is served under its hash only with the right bytes, always, also after a power loss.
- A store returns once the blob is in place, without waiting for the disk. It is durable once
  `flush()` (`kc.flush()`) returns, once the storing process exits normally (an atexit flush), or
  about FLUSH_DELAY (1 s) after the store, when a background thread flushes; whichever is first.
- Small blobs (SMALL_BLOB bytes or fewer) are hashed again every time they are located for reading
  (`blob_is_sound`; a few KB hash in microseconds): one torn, truncated or zeroed by a crash
  before its write-back is removed and reads as missing, so it is fetched again where a source
  has it. It is never served.
- Large blobs get a journal entry (journal.py), fsynced before the blob is renamed into place and
  removed after the flush; a large blob with an entry from an earlier boot is hashed before it
  is served (and removed if torn).
- A flush that fails (the file system reports a failed write-back) removes the large blobs it
  was making durable and raises LocalStorageError: no blob stays published after a failed write.
- KACHERY_SYNC=always: one fsync per blob before it is published, as before (durable when the
  store returns; no journal).

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
from .journal import Journal

log = logging.getLogger(__name__)

SMALL_BLOB = 1024 * 1024         # at or under: verified on every read; over: journal entry until flushed
FLUSH_DELAY = 1.0                # a store is made durable in the background at most this much later


def sync_always() -> bool:
    """KACHERY_SYNC=always: fsync every blob before it is published."""
    return os.environ.get("KACHERY_SYNC", "").strip().lower() == "always"


def storage_error(e: OSError, doing: str) -> LocalStorageError:
    """A refused write (ENOSPC, EDQUOT, EROFS, EIO, ...) as the one error kind for it."""
    return LocalStorageError(f"{doing}: {e.strerror or e}", e.errno or errno_codes.EIO)


def read_small_blob(path: str, sha1: str) -> bytes | bool | None:
    """A small blob's bytes, read and verified in one open (the bytes checked are the bytes
    served): the bytes if sound; False if wrong (torn); None if absent, not a regular file or over
    SMALL_BLOB (the caller then takes the general way)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > SMALL_BLOB:
            return None
        data = b""
        while len(data) <= st.st_size and (block := os.read(fd, st.st_size + 1 - len(data))):
            data += block
    finally:
        os.close(fd)
    return data if hashlib.sha1(data).hexdigest() == sha1 else False


def blob_is_sound(path: str | Path, sha1: str, journal: Journal, size: int | None = None) -> bool | None:
    """True if `path` is a regular file with the bytes of `sha1` as far as can be known without
    hashing a large blob (no journal entry from an earlier boot); None if it is absent (or not of
    `size`, when given); False if its bytes are wrong (torn by a crash before its write-back)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (size is not None and st.st_size != size):
            return None
        if st.st_size > SMALL_BLOB and not journal.needs_check(sha1):
            return True
        h = hashlib.sha1()
        while block := os.read(fd, 8 * 1024 * 1024):
            h.update(block)
        sound = h.hexdigest() == sha1
    finally:
        os.close(fd)
    if sound and st.st_size > SMALL_BLOB:
        journal.settle(sha1)          # read back whole after the reboot: on disk
    return sound


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
    """Storage directories holding blobs published without an fsync, and the journal entries of
    the large ones, made durable by `flush()` (called in the background FLUSH_DELAY after a store)."""

    def __init__(self) -> None:
        self._roots: dict[Path, list[tuple[Path, Path]]] = {}      # root -> [(blob, journal entry)]
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def add(self, root: Path, large: tuple[Path, Path] | None = None) -> None:
        with self._lock:
            entries = self._roots.setdefault(root, [])
            if large is not None:
                entries.append(large)
            if self._timer is None:
                self._timer = threading.Timer(FLUSH_DELAY, self._flush_in_background)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Make every blob this process stored durable. Raises LocalStorageError if the file system
        reports a failed write-back; the large blobs that flush covered are then removed."""
        with self._lock:
            roots, self._roots = self._roots, {}
        failed: LocalStorageError | None = None
        for root, large in roots.items():
            journal = Journal(root)
            try:
                _syncfs(root)
            except FileNotFoundError:
                continue                    # the storage directory is gone: nothing to keep
            except OSError as e:
                failed = storage_error(e, f"writing back blobs stored in {root}")
                for blob, _ in large:
                    _remove(blob)           # never published bytes the disk may not hold
            for _, entry in large:
                journal.clear(entry)
        if failed is not None:
            raise failed

    def _flush_in_background(self) -> None:
        with self._lock:
            self._timer = None
        try:
            self.flush()
        except LocalStorageError as e:
            log.error("%s: the large blobs stored meanwhile were removed", e)


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _libc_function(name: str):  # type: ignore[no-untyped-def]
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return getattr(libc, name)
    except (OSError, AttributeError):
        return None


_libc_syncfs = _libc_function("syncfs")
_libc_sync_file_range = _libc_function("sync_file_range")
if _libc_sync_file_range is not None:
    _libc_sync_file_range.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
SYNC_FILE_RANGE_WAIT_BEFORE, SYNC_FILE_RANGE_WRITE, SYNC_FILE_RANGE_WAIT_AFTER = 1, 2, 4


def start_write_back(fd: int, offset: int, length: int) -> None:
    """Start writing these bytes to disk without waiting (sync_file_range, as git's batch mode does):
    the disk works while later bytes are hashed, and dirty pages do not pile up until the kernel
    throttles the writer. Errors show at the flush (syncfs), which then removes the blob."""
    if _libc_sync_file_range is not None:
        _libc_sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE)


def write_back_dropping(fd: int, offset: int, length: int, behind: tuple[int, int] | None) -> None:
    """start_write_back, then wait until the range `behind` (offset, length), written earlier, is
    on disk and drop it from the page cache: while the disk keeps up, a large ingest holds a
    bounded amount of page cache (as `dd oflag=nocache`) instead of pushing out what others read,
    and its next pages come from those just freed. The writer never waits for it (a disk that
    lags leaves more cached, as any buffered write would). A failed write-back raises OSError."""
    start_write_back(fd, offset, length)
    if behind is None or _libc_sync_file_range is None:
        return
    wait = SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER
    if _libc_sync_file_range(fd, behind[0], behind[1], wait) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    os.posix_fadvise(fd, behind[0], behind[1], os.POSIX_FADV_DONTNEED)


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
