"""Which blob a local file was last stored as, so storing an unchanged file again reads nothing.

    <storage>/hash-cache/<aa>/<sha1 of the file's absolute path>.json
        {"path", "size", "mtime_ns", "ctime_ns", "ino", "dev", "sha1", "manifestSha1"}

An entry is used only if every one of those stat fields still matches (ctime changes on any
write and cannot be set from user space, the inode on a replace) and the blob is still in the
store, whole; anything else is a miss and the file is hashed as usual. Entries are hints: written
without fsync, atomically renamed, and ignored if unreadable. An entry is written only if the
file did not change while it was being read.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

FIELDS = ("size", "mtime_ns", "ctime_ns", "ino", "dev")


def stat_key(st: os.stat_result) -> dict[str, int]:
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            "ino": st.st_ino, "dev": st.st_dev}


class HashCache:
    def __init__(self, root: Path):
        self.dir = root / "hash-cache"

    def _entry_path(self, path: str) -> Path:
        h = hashlib.sha1(path.encode("utf-8", "surrogateescape")).hexdigest()
        return self.dir / h[:2] / f"{h}.json"

    def lookup(self, path: str, st: os.stat_result) -> dict[str, Any] | None:
        try:
            entry = json.loads(self._entry_path(path).read_bytes())
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("path") != path:
            return None
        if any(entry.get(k) != v for k, v in stat_key(st).items()):
            return None
        return entry

    def remember(self, path: str, st: os.stat_result, sha1: str, manifest_sha1: str | None) -> None:
        final = self._entry_path(path)
        tmp = final.with_name(f".{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"path": path, **stat_key(st), "sha1": sha1, "manifestSha1": manifest_sha1}))
            os.replace(tmp, final)
        except OSError:
            tmp.unlink(missing_ok=True)      # a hint that could not be kept: the next store hashes
