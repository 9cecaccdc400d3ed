"""Re-hash local content: every blob, every link's target, every manifest against its blob.

`check_all` runs the hashes in a thread pool (SHA-1 releases the GIL: one file per core), calls
`progress(done_bytes, total_bytes)` as files finish, and returns one `Finding` per problem:

    corrupt        a blob whose bytes no longer hash to its name (quarantined by the caller)
    bad-link       a valid link (size and mtime unchanged) whose target's bytes changed
    bad-manifest   a manifest whose chunk hashes do not match its blob's chunks
    missing        the index records content that is on disk no more

A link whose target changed size or mtime is already never served (store.py); it is reported as
`stale-link`, not corrupt. Synchronous: called from a worker thread (or the offline command).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kachery_client.errors import IntegrityError
from kachery_client.hashing import CHUNK_SIZE, ContentHasher, parse_manifest
from kachery_client.store import Store
from kacheryfs.content.lifecycle import Found, top_dirs, walk

ProgressFn = Callable[[int, int], None]
SMALL = 1 << 20            # read in one call below this size
BLOCK = 8 << 20
BATCH = 64                 # files between two progress reports


@dataclass(frozen=True)
class Finding:
    sha1: str
    problem: str           # corrupt, bad-link, bad-manifest, missing, stale-link
    detail: str
    is_link: bool = False

    def as_json(self) -> dict[str, object]:
        return {"sha1": self.sha1, "problem": self.problem, "detail": self.detail, "isLink": self.is_link}


@dataclass
class Checked:
    blobs: int = 0
    links: int = 0
    bytes: int = 0


def sha1_of_file(path: Path | str, size: int | None = None) -> str:
    """SHA-1 hex of a file; `size`, when known, saves the fstat of a small one."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if size is None:
            size = os.fstat(fd).st_size
        if size < SMALL:
            data = os.read(fd, size + 1)
            if len(data) <= size:                 # else it grew: hash all of it below
                return hashlib.sha1(data).hexdigest()
            h = hashlib.sha1(data)
        else:
            h = hashlib.sha1()
        buf = bytearray(BLOCK)
        view = memoryview(buf)
        while n := os.readv(fd, [buf]):
            h.update(view[:n])
        return h.hexdigest()
    finally:
        os.close(fd)


def _hash_with_chunks(path: Path) -> ContentHasher:
    """Whole and per-chunk SHA-1s in one read (ContentHasher runs the two on two cores)."""
    hasher = ContentHasher()
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            hasher.update(view[:n])
    return hasher


def check_one(store: Store, item: Found, manifest_sha1: str | None) -> list[Finding]:
    if item.is_link:
        link = store.read_link(item.sha1)
        if link is None:
            return []
        if not link.is_valid():
            return [Finding(item.sha1, "stale-link", f"{link.path} changed since it was linked", True)]
        target: Path = Path(link.path)
    else:
        target = item.path
    try:
        if manifest_sha1 is not None and item.size > CHUNK_SIZE and store.has(manifest_sha1):
            hasher = _hash_with_chunks(target)
            actual = hasher.sha1()
            chunks = _manifest_problem(store, item.sha1, manifest_sha1, hasher) if actual == item.sha1 else None
        else:
            actual, chunks = sha1_of_file(target, None if item.is_link else item.size), None
    except FileNotFoundError:
        return []                   # removed meanwhile (gc, drop): nothing to judge
    if actual != item.sha1:
        what = "bad-link" if item.is_link else "corrupt"
        return [Finding(item.sha1, what, f"{target} hashes to {actual}", item.is_link)]
    return [Finding(manifest_sha1, "bad-manifest", chunks)] if chunks and manifest_sha1 else []


def _manifest_problem(store: Store, sha1: str, manifest_sha1: str, hasher: ContentHasher) -> str | None:
    try:
        m = parse_manifest(store.read_bytes(manifest_sha1), expected_sha1=sha1)
    except (IntegrityError, OSError) as e:
        return f"manifest of sha1://{sha1}: {e}"
    computed = parse_manifest(hasher.manifest_bytes() or b"")
    if m.size != computed.size or [c[2] for c in m.chunks] != [c[2] for c in computed.chunks] \
            or [c[:2] for c in m.chunks] != [c[:2] for c in computed.chunks]:
        return f"manifest of sha1://{sha1}: its chunks do not match the blob's"
    return None


def check_all(store: Store, manifests: dict[str, str], recorded: set[str], *, workers: int | None = None,
              progress: ProgressFn | None = None, expected_bytes: int = 0) -> tuple[Checked, list[Finding]]:
    """Check every blob and link on disk; `recorded` (the index's hashes) finds missing ones.

    One task per first-level directory walks and checks its subtree, so the walk (most of a small
    file's cost) runs in parallel too. `expected_bytes` (the index's totals) is the progress total.
    """
    checked = Checked()
    findings: list[Finding] = []
    on_disk: set[str] = set()
    lock = threading.Lock()
    workers = workers or max(4, 2 * (os.cpu_count() or 2))     # syscalls overlap the GIL-held parts

    def report(part: list[Found], found: list[Finding]) -> None:
        with lock:
            findings.extend(found)
            checked.bytes += sum(i.size for i in part)
            checked.blobs += sum(not i.is_link for i in part)
            checked.links += sum(i.is_link for i in part)
            on_disk.update(i.sha1 for i in part)
            done = checked.bytes
        if progress is not None:
            progress(done, max(expected_bytes, done))

    def subtree(top: str) -> None:
        part: list[Found] = []
        found: list[Finding] = []
        for item in walk(store, top):
            found += check_one(store, item, manifests.get(item.sha1))
            part.append(item)
            if len(part) >= BATCH or item.size >= SMALL:
                report(part, found)
                part, found = [], []
        report(part, found)

    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="kachery-verify") as pool:
        for f in [pool.submit(subtree, top) for top in top_dirs(store)]:
            f.result()
    for sha1 in sorted(recorded - on_disk):
        if store.locate(sha1) is None and not store.link_path_for(sha1).exists():
            findings.append(Finding(sha1, "missing", "recorded in kacheryfs.db but not on disk"))
    return checked, findings
