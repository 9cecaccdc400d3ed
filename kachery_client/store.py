"""THE on-disk content store. The only code that writes blobs, for the client and the node alike.

Layout under the storage directory (docs/PROTOCOL.md section 5, the original's exactly):

    sha1/aa/bb/cc/<sha1>         the blob: exact bytes, mode 0644
    sha1/aa/bb/cc/<sha1>.link    a reference to a file elsewhere (JSON, section 5.2)
    tmp/                         temp files, on the same file system so that rename is atomic
    hash-cache/                  which blob each stored local file was (ours; hash_cache.py)

Invariants:
- A blob appears under its final name only complete and verified: bytes go to a temp file
  under tmp/, are hashed as they are written (one pass), then renamed into place; a small blob
  goes into an unnamed file in its own directory, linked under its hash (small_blobs.py). Small
  ones are hashed again whenever they are located for reading (durability.py has the contract).
  A crash at any point leaves at most a stale temp file, which `clean_stale_temps` removes, or a
  small blob that fails its check and is removed.
- Every OSError of the write side (create, write, early fdatasync, fsync, rename) is raised as
  LocalStorageError with its errno; the temp file is removed and nothing is published.
- Concurrent adds of the same content (threads or processes) end with one correct blob:
  rename and link are atomic, every writer publishes identical bytes, and a link that finds the
  name taken checks the blob there (a torn one is replaced).
- Files over CHUNK_SIZE also get a manifest blob (section 7), written before the add returns.
- A `.link` whose target changed size or mtime is invalid, and never served.

Temp names carry the writer's pid (`<pid>.<random>.tmp`) so that stale ones, whose writer
is dead, can be told from ones still being written.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from . import claims, durability
from .blob_writer import BLOB_MODE, BlobWriter, StoredBlob
from .durability import SMALL_BLOB, blob_is_sound, read_small_blob, storage_error
from .errors import IntegrityError, LocalFileError, LocalStorageError, NotFoundError
from .hash_cache import HashCache, stat_key
from .hashing import CHUNK_SIZE, ContentHasher
from .journal import Journal
from .small_blobs import add_small
from .store_files import (
    Link,
    pid_alive,
    removed_on_error,
    scandir_names,
    unlink_quietly,
    unnamed_files_possible,
    walk_hashes,
    write_all,
)
from .uri import check_sha1, is_sha1

log = logging.getLogger(__name__)

BLOCK_SIZE = 8 * 1024 * 1024     # copy block: large enough that thread hand-offs are cheap
EMPTY_SHA1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709"

ProgressFn = Callable[[int], None]   # called with the number of bytes processed so far


class Store:
    """A storage directory. Cheap to create; holds no open files."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.sha1_dir = self.root / "sha1"
        self.tmp_dir = self.root / "tmp"
        self._tmp_made = False
        self._hash_cache = HashCache(self.root)
        self._journal = Journal(self.root)
        self.sync_always = durability.sync_always()
        self._sha1_prefix = f"{self.sha1_dir}/"
        self._umask = durability.process_umask()
        self.unnamed_ok = unnamed_files_possible()     # small blobs: unnamed file + link (small_blobs.py)
        self._parents_seen = bytearray(65536)          # sha1/aa/bb known to exist, by 0xaabb (small_blobs.py)

    # ---- paths --------------------------------------------------------------------------

    def path_for(self, sha1: str) -> Path:
        sha1 = check_sha1(sha1)
        return self.sha1_dir / sha1[0:2] / sha1[2:4] / sha1[4:6] / sha1

    def link_path_for(self, sha1: str) -> Path:
        return self.path_for(sha1).with_name(sha1 + ".link")

    def create_temp(self) -> tuple[Path, int]:
        """A new temp file under tmp/ (made again if someone removed it), open for writing."""
        try:
            for _ in range(2):
                path = self.new_temp_path()
                try:
                    return path, os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, BLOB_MODE)  # RDWR: copy_from maps it
                except FileNotFoundError:
                    self._tmp_made = False
        except OSError as e:
            raise storage_error(e, f"cannot create a temp file in {self.tmp_dir}") from None
        raise LocalStorageError(f"cannot create temp files in {self.tmp_dir}", errno.ENOENT)

    def new_temp_path(self) -> Path:
        if not self._tmp_made:          # once per Store: a mkdir costs as much as the create itself
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            self._tmp_made = True
        return self.tmp_dir / f"{os.getpid()}.{secrets.token_hex(6)}.tmp"

    # ---- reading ------------------------------------------------------------------------

    def has(self, sha1: str) -> bool:
        """True if the regular blob is present and sound (links do not count)."""
        return self._holds(self.path_for(sha1), sha1)

    def read_link(self, sha1: str) -> Link | None:
        try:
            obj = json.loads(self.link_path_for(sha1).read_bytes())
            return Link(path=str(obj["path"]), size=int(obj["stat"]["size"]),
                        mtime=float(obj["stat"]["mtime"]), manifest_sha1=obj.get("manifestSha1"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("ignoring unreadable link file for %s: %s", sha1, e)
            return None

    def locate(self, sha1: str) -> Path | None:
        """Path of the blob's bytes: the blob itself, else a valid link's target, else None."""
        path = self.path_for(sha1)
        if self._holds(path, sha1):
            return path
        link = self.read_link(sha1)
        if link is not None:
            if link.is_valid():
                return Path(link.path)
            log.warning("link for %s is invalid: %s changed since it was linked", sha1, link.path)
        return None

    def locate_unhashed(self, sha1: str) -> Path | None:
        """The blob's path if it is known sound without reading it: a large regular blob with no
        journal entry from an earlier boot (durability.py). A few system calls, no hashing, so a
        caller on an event loop may call it inline; None means: ask `locate`, which may hash."""
        path = self.path_for(sha1)
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode) or st.st_size <= SMALL_BLOB or self._journal.needs_check(sha1):
            return None
        return path

    def read_small(self, sha1: str) -> bytes | None:
        """The whole bytes of a small regular blob (SMALL_BLOB or less), verified as they are read:
        one open instead of locate's check and a second open to read. None if the blob is absent,
        large, or torn (then removed, as `locate` does)."""
        path = f"{self._sha1_prefix}{sha1[0:2]}/{sha1[2:4]}/{sha1[4:6]}/{sha1}"
        data = read_small_blob(path, sha1)
        if data is False:
            self._remove_torn(path, sha1)
        return data if isinstance(data, bytes) else None

    def require(self, sha1: str) -> Path:
        path = self.locate(sha1)
        if path is None:
            raise NotFoundError(f"sha1://{sha1} is not in the local store {self.root}")
        return path

    def size_of(self, sha1: str) -> int | None:
        path = self.locate(sha1)
        return path.stat().st_size if path is not None else None

    def read_bytes(self, sha1: str, start: int = 0, end: int | None = None) -> bytes:
        with open(self.require(sha1), "rb") as f:
            f.seek(start)
            return f.read(-1 if end is None else max(0, end - start))

    def iter_hashes(self) -> Iterator[str]:
        """The hashes of the regular blobs present, in directory order, without reading them
        (store_files.walk_hashes: one listdir per directory)."""
        return walk_hashes(self.sha1_dir)

    def verify(self, sha1: str) -> bool:
        """Re-hash the blob (or link target). False if its bytes no longer match."""
        h = hashlib.sha1()
        path = self.path_for(sha1)
        with open(path if path.is_file() else self.require(sha1), "rb") as f:
            while block := f.read(BLOCK_SIZE):
                h.update(block)
        return h.hexdigest() == check_sha1(sha1)

    # ---- writing ------------------------------------------------------------------------

    def writer(self, expected_sha1: str | None = None, manifest: bool = True,
               drop_behind: bool = False) -> BlobWriter:
        """`manifest=False`: no manifest is made for a large blob (one hash pass instead of two);
        the node makes it later, when a peer first asks (Node.manifest_for). `drop_behind`: keep
        what is written out of the page cache once on disk (BlobWriter)."""
        return BlobWriter(self, expected_sha1, manifest, drop_behind)

    def add_bytes(self, data: bytes) -> StoredBlob:
        """Store bytes held in memory. Content already present costs only the hash."""
        if len(data) <= SMALL_BLOB:
            return add_small(self, data)
        if len(data) <= CHUNK_SIZE:
            sha1 = hashlib.sha1(data).hexdigest()
            if self._claim(self.path_for(sha1), sha1, len(data)):
                return StoredBlob(sha1, len(data))
        with self.writer() as w:
            w.write(data)
            return w.commit()

    def add_stream(self, stream: BinaryIO, progress: ProgressFn | None = None,
                   expected_size: int | None = None) -> StoredBlob:
        """Store everything read from a binary stream (one pass: hash while copying)."""
        with self.writer() as w:
            self._stream_into(w, stream, progress)
            if expected_size is not None and w.size != expected_size:
                raise IntegrityError(f"expected {expected_size} bytes, got {w.size}")
            return w.commit()

    @staticmethod
    def _stream_into(w: BlobWriter, stream: BinaryIO, progress: ProgressFn | None) -> None:
        buf = bytearray(BLOCK_SIZE)
        view = memoryview(buf)
        while n := stream.readinto(view):  # type: ignore[attr-defined]
            w.write(view[:n])
            if progress:
                progress(w.size)

    def add_file(self, path: str | os.PathLike[str], progress: ProgressFn | None = None) -> StoredBlob:
        """Copy a local file into the store, hashing it in the same pass. A file stored before
        and unchanged since (hash_cache.py) costs a stat and no read."""
        try:
            f = open(path, "rb")
        except OSError as e:
            raise LocalFileError(f"cannot read {path}: {e.strerror}") from None
        with f:
            before = os.fstat(f.fileno())
            if not stat.S_ISREG(before.st_mode):
                raise LocalFileError(f"not a regular file: {path}")
            abspath = os.path.abspath(path)
            known = self._hash_cache.lookup(abspath, before)
            if known is not None and self._is_whole(known["sha1"], before.st_size, known.get("manifestSha1")):
                if progress:
                    progress(before.st_size)
                return StoredBlob(known["sha1"], before.st_size, known.get("manifestSha1"))
            with self.writer() as w:
                if not w.copy_from(f.fileno(), progress):      # copied in the kernel where it can
                    self._stream_into(w, f, progress)
                blob = w.commit()
            if stat_key(os.stat(path)) == stat_key(before) == stat_key(os.fstat(f.fileno())):
                self._hash_cache.remember(abspath, before, blob.sha1, blob.manifest_sha1)
            return blob

    def _is_whole(self, sha1: Any, size: int, manifest_sha1: Any) -> bool:
        """The blob (and its manifest, for a large file) is in the store at its size: both claimed."""
        if not (is_sha1(sha1) and self._claim(self.path_for(sha1), sha1, size)):
            return False
        return size <= CHUNK_SIZE or bool(is_sha1(manifest_sha1)
                                          and self._claim(self.path_for(manifest_sha1), manifest_sha1))

    def link(self, path: str | os.PathLike[str], size: int | None = None,
             mtime: float | None = None) -> StoredBlob:
        """Register a file by reference: hash it and write a `.link` (unless the blob exists).

        `size` and `mtime` default to the file's; when given (a client's values, /linkFile)
        they must match the file and are stored verbatim (docs/PROTOCOL.md 5.2).
        """
        path = os.path.abspath(path)
        try:
            st = os.stat(path)
        except OSError as e:
            raise LocalFileError(f"cannot link {path}: {e.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise LocalFileError(f"cannot link {path}: not a regular file")
        size = st.st_size if size is None else size
        mtime = st.st_mtime if mtime is None else mtime
        if st.st_size != size or abs(st.st_mtime - mtime) > 0.002:
            raise LocalFileError(f"cannot link {path}: size or mtime differs from the one given")
        hasher = ContentHasher()
        with open(path, "rb") as f:
            while block := f.read(BLOCK_SIZE):
                hasher.update(block)
        if hasher.size != size or os.stat(path).st_mtime != st.st_mtime:
            raise LocalFileError(f"cannot link {path}: it changed while it was being hashed")
        sha1 = hasher.sha1()
        manifest = hasher.manifest_bytes()
        manifest_sha1 = self.add_bytes(manifest).sha1 if manifest is not None else None
        if not self._claim(self.path_for(sha1), sha1, size):     # else the blob is here, and claimed
            record = {"path": path, "manifestSha1": manifest_sha1,
                      "stat": {"size": size, "mtime": mtime}, "_writingProcess": "daemon"}
            self._write_small_file(self.link_path_for(sha1), json.dumps(record, separators=(",", ":")).encode())
        return StoredBlob(sha1, size, manifest_sha1)

    # ---- maintenance --------------------------------------------------------------------

    def clean_stale_temps(self) -> int:
        """Remove temp files whose writing process is gone, and put back the blobs a dead node had
        set aside for removal (claims.py). Returns how many temp files were removed."""
        removed = 0
        for name in scandir_names(self.tmp_dir):
            pid = name.split(".", 1)[0]
            if pid.isdigit() and pid_alive(int(pid)):
                continue
            if name.endswith(claims.ASIDE) and name.count(".") >= 3:
                try:
                    claims.restore_aside(self.tmp_dir / name, self.sha1_dir)
                except OSError as e:
                    log.warning("could not put back %s: %s", name, e)
            elif unlink_quietly(self.tmp_dir / name):
                removed += 1
        return removed

    def publish_verified(self, path: Path, sha1: str) -> Path:
        """Move a complete file whose SHA-1 the caller has checked (the node's fetcher) into place
        under its hash, durable as any store (durability.py), marked cached (claims.py). `path` must
        be on the storage directory's file system. A blob already under that name is kept (it may
        be a client's claimed copy): ours is dropped."""
        final = self.path_for(sha1)
        try:
            os.chmod(path, BLOB_MODE)
            claims.mark_cached(path)
            if self.sync_always:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            self._publish_unsynced(path, final, sha1, os.stat(path).st_size, replace=False)
        except OSError as e:
            raise storage_error(e, f"cannot publish sha1://{sha1} in {self.root}") from None
        return final

    # ---- internals ----------------------------------------------------------------------

    def _remove_torn(self, path: str | Path, sha1: str) -> None:
        log.error("sha1://%s in %s has the wrong bytes (torn by a crash before it was written back): "
                  "removed, it will be fetched again", sha1, self.root)
        unlink_quietly(path)
        self._journal.settle(sha1)

    def _publish_unsynced(self, tmp: Path, final: Path, sha1: str, size: int, replace: bool = True) -> None:
        """Publish a blob whose bytes may not be on disk yet (unless KACHERY_SYNC=always): a large
        one behind a journal entry, and either way flushed within about a second (durability.py)."""
        if self.sync_always:
            self._publish(tmp, final, sha1, size, replace)
            return
        if size <= SMALL_BLOB:
            self._publish(tmp, final, sha1, size, replace)
            durability.pending.add(self.root)
            return
        entry = self._journal.record(sha1)
        try:
            self._publish(tmp, final, sha1, size, replace)
        except BaseException:
            self._journal.clear(entry)
            raise
        durability.pending.add(self.root, (final, entry))

    def _holds(self, path: str | Path, sha1: str, size: int | None = None) -> bool:
        """The blob file is there (of `size`, if given) with the right bytes (durability.py), so a
        new copy need not be written; one open, the size checked on the open file. A small blob
        torn by a crash before its write-back is removed, so that it reads as missing and is
        fetched again."""
        sound = blob_is_sound(path, sha1, self._journal, size)
        if sound is False:
            self._remove_torn(path, sha1)
        return bool(sound)

    def _claim(self, path: str | Path, sha1: str, size: int | None = None) -> bool | None:
        """A store about to write this content: True if it is here and now claimed (nothing to
        write), False if not here, None if here but another user's (claims.claim_held)."""
        return claims.claim_held(self, path, sha1, size)

    def _publish(self, tmp: Path, final: Path, sha1: str, size: int, replace: bool = True) -> None:
        """Rename into place; `replace=False` (a fetched blob): never over a blob already there."""
        if not replace:
            claims.link_unless_present(self, tmp, final, sha1, size)
            return
        try:
            os.replace(tmp, final)
        except FileNotFoundError:
            os.makedirs(final.parent, exist_ok=True)
            os.replace(tmp, final)
            return                  # a directory just made holds no link
        # A blob made visible removes any link it supersedes.
        unlink_quietly(final.with_name(final.name + ".link"))

    def _write_small_file(self, final: Path, data: bytes) -> None:
        tmp, fd = self.create_temp()
        with removed_on_error(tmp, f"cannot write {final}"):
            try:
                write_all(fd, memoryview(data))
                os.fsync(fd)
            finally:
                os.close(fd)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
