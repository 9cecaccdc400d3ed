"""The records of the mount's inode table, shared by vfs.py and incoming.py. No pyfuse3 here."""

from __future__ import annotations

import os
from dataclasses import dataclass

from kachery_client.errors import KacheryError

IMMUTABLE_TIMEOUT = 24 * 3600.0      # sha1/ never changes under a name
MUTABLE_TIMEOUT = 1.0                # root listing, incoming/


class FsError(KacheryError):
    """A file-system refusal with its errno (read-only content, name taken, ...)."""

    def __init__(self, code: int, message: str = ""):
        super().__init__(message or os.strerror(code))
        self.errno = code



@dataclass
class Attr:
    ino: int
    mode: int
    size: int = 0
    nlink: int = 1
    mtime_ns: int = 0
    timeout: float = IMMUTABLE_TIMEOUT


@dataclass
class Entry:
    ino: int
    kind: str                            # "dir", "hashdir", "blob", "incoming"
    sha1: str | None = None
    name: str | None = None
