"""Large blobs published before their bytes are known to be on disk: <storage>/unsynced/<sha1>/<token>.

A writer records an entry (fsynced, holding this boot's id) before it renames a large blob into
place without an fsync; the entry is removed once a syncfs that covers the blob has returned
(durability.flush, at most about a second later). So after a power loss every large blob whose
bytes may be missing still has an entry from an earlier boot, and a reader hashes such a blob
before serving it: whole -> the entries go and it is served; torn -> the blob is removed (and
fetched again where a source has it). An entry from this boot needs no check: the page cache
holds the bytes the writer wrote. One directory per hash, one file per writer, so one writer's
clear never removes another's entry.
"""

from __future__ import annotations

import os
import secrets
from functools import cache
from pathlib import Path

UNSYNCED = "unsynced"


@cache
def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown-boot"        # never equal to a recorded id from a real boot: always checked


class Journal:
    def __init__(self, root: Path):
        self.dir = root / UNSYNCED

    def record(self, sha1: str) -> Path:
        """A durable entry for `sha1`, before its blob is published unsynced. Raises OSError."""
        d = self.dir / sha1
        token = f"{os.getpid()}.{secrets.token_hex(6)}"
        for _ in range(5):
            try:
                os.makedirs(d, exist_ok=True)
                fd = os.open(d / token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                break
            except FileNotFoundError:
                continue                 # another writer's clear removed the directory meanwhile
        else:
            raise OSError(f"cannot create an entry under {d}")
        try:
            os.write(fd, boot_id().encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(d)
        _fsync_dir(self.dir)
        return d / token

    def clear(self, entry: Path) -> None:
        """The blob is on disk: drop this writer's entry (and the hash's directory if it is empty)."""
        try:
            os.unlink(entry)
        except FileNotFoundError:
            pass
        try:
            os.rmdir(entry.parent)
        except OSError:
            pass                          # another writer's entry is still there

    def needs_check(self, sha1: str) -> bool:
        """True if an entry from another boot says the blob's bytes may never have reached the disk."""
        d = self.dir / sha1
        try:
            names = os.listdir(d)
        except (FileNotFoundError, NotADirectoryError):
            return False
        current = boot_id()
        for name in names:
            try:
                if (d / name).read_text() != current:
                    return True
            except FileNotFoundError:
                continue
        return False

    def settle(self, sha1: str) -> None:
        """The blob was checked (or removed): no entry for it is needed any more."""
        d = self.dir / sha1
        try:
            names = os.listdir(d)
        except (FileNotFoundError, NotADirectoryError):
            return
        for name in names:
            self.clear(d / name)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
