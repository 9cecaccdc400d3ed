"""The life of local content after it is written: kinds, use, garbage collection, du, quarantine.

`Lifecycle` keeps NodeIndex's records (kind, size, last use, pins) in step with the store and is
the one place that removes content from sha1/ (gc, the cache limit, drop, quarantine). Removal
keeps a store that finds the content present (claims.py) from losing it: the file is first
renamed out of its name (set aside); one claimed since is put back and recorded owned; for the
others the record goes (gc: one conditional DELETE, so a pin or an owner that lands first wins),
then the file. A blob that is open stays readable to its reader (unlink semantics).

Cost: gc and the cache limit read candidates from an index in least-recently-used order and the
running totals (index.py): a pass costs the number of blobs it removes, never the store's size.
Only `reconcile` (once at node start, and in verify) walks the store.

Synchronous: called from worker threads.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kachery_client import claims
from kachery_client.errors import UsageError
from kachery_client.store import Store
from kachery_client.uri import is_sha1
from kacheryfs.content.index import NodeIndex

log = logging.getLogger(__name__)
GC_FIRST_PAGE = 8
GC_PAGE = 512
DAY = 86400.0


@dataclass
class GcResult:
    removed: list[tuple[str, int]] = field(default_factory=list)     # (sha1, size)
    freed: int = 0
    dry_run: bool = False
    kept: list[str] = field(default_factory=list)       # claimed while set aside: now owned

    def as_json(self) -> dict[str, Any]:
        return {"removed": [{"sha1": s, "size": n} for s, n in self.removed], "freed": self.freed,
                "dryRun": self.dry_run, "kept": self.kept}


@dataclass(frozen=True)
class Aside:
    """A blob gc renamed out of its name (claims.set_aside), not yet kept or deleted."""
    sha1: str
    path: Path | None       # None: nothing was under the name


@dataclass(frozen=True)
class Found:
    """One piece of content found on disk by a walk."""
    sha1: str
    path: Path          # the blob, or the .link file
    size: int           # the blob's size, or the size the link records
    is_link: bool
    cached: bool = False    # a blob with the fetched mark (claims.CACHED_MTIME_NS), claimed by no store since


def walk(store: Store, top: str | None = None) -> Iterator[Found]:
    """Every blob and .link under sha1/ (or under sha1/<top>/ only): a full walk, for verify and
    reconcile only. Strings and d_type, one stat per blob: the walk is most of a small file's cost."""
    tops = [top] if top is not None else top_dirs(store)
    for d1 in tops:
        for d2 in _subdirs(os.path.join(store.sha1_dir, d1)):
            for d3 in _subdirs(d2):
                try:
                    with os.scandir(d3) as it:
                        entries = list(it)
                except OSError:
                    continue
                for e in entries:
                    name = e.name
                    if len(name) == 40 and is_sha1(name):
                        try:
                            st = e.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue
                        if stat.S_ISREG(st.st_mode):
                            yield Found(name, Path(e.path), st.st_size, False,
                                        st.st_mtime_ns == claims.CACHED_MTIME_NS)
                    elif name.endswith(".link") and is_sha1(name[:-5]) and not os.path.exists(e.path[:-5]):
                        link = store.read_link(name[:-5])
                        if link is not None:
                            yield Found(name[:-5], Path(e.path), link.size, True)


def top_dirs(store: Store) -> list[str]:
    """The names of sha1/'s first level (aa): units of work for a parallel walk."""
    try:
        with os.scandir(store.sha1_dir) as it:
            return [e.name for e in it if len(e.name) == 2 and e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _subdirs(path: str) -> list[str]:
    try:
        with os.scandir(path) as it:
            return [e.path for e in it if len(e.name) == 2 and e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


class Lifecycle:
    def __init__(self, store: Store, index: NodeIndex):
        self.store = store
        self.index = index
        self.quarantine_dir = store.root / "quarantine"
        self.partial_dir = store.root / "partial"
        self.pinned: set[str] = {sha1 for sha1, _ in index.pinned()}     # read on the loop (xattrs)
        # True once a reconcile finished: from then on the index records every blob in sha1/
        # (the mount lists sha1/ from it; docs/ARCHITECTURE.md "The mount at scale").
        self.reconciled = False
        # Held from set aside to settled (gc's page, a drop): a record made for content found
        # absent waits for it, since the content may be just set aside and about to come back.
        self._settling = threading.RLock()

    # ---- records ----------------------------------------------------------------------------

    def stored(self, sha1: str) -> int | None:
        """Content was stored or linked here: record it as owned (or link). Its size; None if absent."""
        size = self._record_stored(sha1)
        if size is None:
            with self._settling:     # maybe set aside by a gc page or a drop just now: wait for it
                size = self._record_stored(sha1)
        return size

    def _record_stored(self, sha1: str) -> int | None:
        path = self.store.locate(sha1)
        if path is None:
            return None
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            return None
        is_link = path != self.store.path_for(sha1)
        self.index.record_owned(sha1, size, "link" if is_link else "owned")
        return size

    def fetched(self, sha1: str, size: int, source: str, manifest_sha1: str | None = None) -> None:
        self.index.record_cached(sha1, size, source)
        if manifest_sha1 is not None:
            self.index.set_manifest(sha1, manifest_sha1)

    def used(self, sha1: str) -> None:
        self.index.touch(sha1)

    def reconcile(self) -> tuple[int, int]:
        """Records := what is on disk (one walk). (records added or fixed, records removed). A blob
        with no record is owned, unless it carries the fetched mark: then cached (a fetch that
        published it while this walk ran, or whose record was lost)."""
        found = ((f.sha1, f.size, "link" if f.is_link else "cached" if f.cached else "owned")
                 for f in walk(self.store))
        added, removed = self.index.reconcile(found, gone=lambda sha1: self.store.locate(sha1) is None)
        self.reconciled = True
        if added or removed:
            log.info("index reconciled with the store: %d records added or fixed, %d removed", added, removed)
        return added, removed

    # ---- removal ----------------------------------------------------------------------------

    def identity(self, sha1: str) -> tuple[int, int] | None:
        """(inode, mtime ns) of the content's file (blob, else .link), or None: what a drop saw."""
        for path in (self.store.path_for(sha1), self.store.link_path_for(sha1)):
            try:
                st = os.stat(path)
                return st.st_ino, st.st_mtime_ns
            except FileNotFoundError:
                pass
        return None

    def remove(self, sha1: str, since_ns: int | None = None, seen: tuple[int, int] | None = None) -> int | None:
        """Forget and delete the content (blob or link): drop. Its record's size, or None if it
        had no record (then the file stays). With `since_ns` (the drop's start) and `seen` (its
        file's `identity` then), content claimed (stored again) since is kept: UsageError."""
        with self._settling:
            return self._remove(sha1, since_ns, seen)

    def _remove(self, sha1: str, since_ns: int | None, seen: tuple[int, int] | None) -> int | None:
        final = self.store.path_for(sha1)
        aside = claims.set_aside(final, self.store.tmp_dir)
        if aside is None:
            final = self.store.link_path_for(sha1)
            aside = claims.set_aside(final, self.store.tmp_dir)
        if aside is not None and since_ns is not None:
            st = os.stat(aside)
            since = max(since_ns, self.index.claims_since_ns())
            if claims.is_claimed(st.st_mtime_ns, since) or seen not in (None, (st.st_ino, st.st_mtime_ns)):
                claims.put_back(aside, final)
                self.stored(sha1)
                raise UsageError(f"sha1://{sha1} was stored again while it was being dropped: kept")
        size = self.index.forget(sha1)
        if size is None:
            if aside is not None:
                claims.put_back(aside, final)
            return None
        self.pinned.discard(sha1)
        if aside is not None:
            os.unlink(aside)
        return size

    def set_aside(self, sha1s: list[str]) -> list[Aside]:
        """gc's first step: rename each blob out of its name. From here a store of the same content
        finds no name and writes it again; a store that claimed it before left its mark."""
        return [Aside(sha1, claims.set_aside(self.store.path_for(sha1), self.store.tmp_dir))
                for sha1 in sha1s]

    def settle(self, asides: list[Aside], kept: list[str] | None = None) -> list[tuple[str, int]]:
        """gc's second step: a blob claimed since claims began (claims.py) goes back under its name,
        recorded owned; the records of the others still cached and unpinned are deleted (one
        transaction), then their files; any other goes back as it was. (sha1, size) deleted; the
        claimed ones are added to `kept`."""
        since = self.index.claims_since_ns()
        claimed: list[tuple[str, int]] = []
        unclaimed: list[str] = []
        for a in asides:
            if a.path is not None:
                st = os.stat(a.path)
                if claims.is_claimed(st.st_mtime_ns, since):
                    claimed.append((a.sha1, st.st_size))
                    continue
            unclaimed.append(a.sha1)
        gone = dict(self.index.forget_cached(unclaimed, claimed))
        if kept is not None:
            kept += [sha1 for sha1, _ in claimed]
        for a in asides:
            if a.sha1 not in gone:
                if a.path is not None:
                    claims.put_back(a.path, self.store.path_for(a.sha1))
                continue
            if a.path is not None:
                os.unlink(a.path)
            self._record_newcomer(a.sha1)
        return [(a.sha1, gone[a.sha1]) for a in asides if a.sha1 in gone]

    def _record_newcomer(self, sha1: str) -> None:
        """A copy written under the name while gc held the old one aside (a client storing it
        again, its notice still on the way) is recorded now, so that records match files."""
        try:
            st = os.stat(self.store.path_for(sha1))
        except FileNotFoundError:
            if self.store.read_link(sha1) is not None:
                self.stored(sha1)
            return
        if st.st_mtime_ns != claims.CACHED_MTIME_NS:      # else a fetch: it records it itself
            self.index.record_owned(sha1, st.st_size)

    def gc(self, target_bytes: int = 0, older_than_days: float | None = None, dry_run: bool = False) -> GcResult:
        """Remove cached, unpinned blobs, least recently used first, until the cached ones total
        at most `target_bytes` (0: all) or none older than `older_than_days` remains."""
        before = time.time() - older_than_days * DAY if older_than_days is not None else None
        cached = self.index.totals()["cached"].bytes
        result = GcResult(dry_run=dry_run)
        seen: set[str] = set()
        want = GC_FIRST_PAGE          # small first: a pass that frees a few blobs reads a few rows
        while cached > target_bytes:
            page = [c for c in self.index.gc_candidates(before, want + len(seen) if dry_run else want)
                    if c[0] not in seen]
            want = min(want * 4, GC_PAGE)
            if not page:
                break
            chosen = []
            expected = cached
            for sha1, size, _ in page:
                if expected <= target_bytes:
                    break
                seen.add(sha1)
                chosen.append(sha1)
                expected -= size
            if dry_run:
                gone = [(sha1, size) for sha1, size, _ in page[:len(chosen)]]
                cached = expected
            else:
                with self._settling:
                    gone = self.settle(self.set_aside(chosen), result.kept)
                cached = self.index.totals()["cached"].bytes     # claimed ones left it too
            for sha1, size in gone:
                result.removed.append((sha1, size))
                result.freed += size
        return result

    def enforce_cache_limit(self, limit: int) -> GcResult:
        """`cache_max_bytes`: the store (owned + cached blobs) fits in `limit`, by removing cached
        blobs only (owned and pinned content is never removed)."""
        totals = self.index.totals()
        if totals["owned"].bytes + totals["cached"].bytes <= limit:
            return GcResult()
        return self.gc(max(0, limit - totals["owned"].bytes))

    # ---- quarantine -------------------------------------------------------------------------

    def quarantine(self, sha1: str, is_link: bool, reason: str) -> None:
        """Move corrupt content out of sha1/ into quarantine/ (never served again) and record why."""
        self.quarantine_dir.mkdir(exist_ok=True)
        src = self.store.link_path_for(sha1) if is_link else self.store.path_for(sha1)
        dest = self.quarantine_dir / (sha1 + (".link" if is_link else ""))
        try:
            size = os.stat(src).st_size
            os.replace(src, dest)
        except FileNotFoundError:
            return
        record = self.index.get(sha1)
        self.index.quarantine(sha1, record.size if record else size, reason)
        self.pinned.discard(sha1)
        log.warning("sha1://%s quarantined in %s: %s", sha1, dest, reason)

    def restored(self, sha1: str) -> None:
        """Content quarantined earlier is whole again (repaired): its old kind and pin return."""
        before = self.index.quarantined(sha1)
        kind, pinned = before if before else ("cached", False)
        if kind != "cached":
            self.stored(sha1)
        if pinned:
            self.index.set_pinned(sha1, True)
            self.pinned.add(sha1)
        self.index.release_quarantine(sha1)
        for leftover in (self.quarantine_dir / sha1, self.quarantine_dir / (sha1 + ".link")):
            try:
                leftover.unlink()
            except FileNotFoundError:
                pass

    # ---- pins -------------------------------------------------------------------------------

    def pin(self, sha1: str) -> bool:
        if not self.index.set_pinned(sha1, True):
            if self.stored(sha1) is None:        # local but unrecorded (e.g. a task result)
                return False
            self.index.set_pinned(sha1, True)
        self.pinned.add(sha1)
        return True

    def unpin(self, sha1: str) -> bool:
        self.pinned.discard(sha1)
        return self.index.set_pinned(sha1, False)

    # ---- du ---------------------------------------------------------------------------------

    def du(self) -> dict[str, dict[str, int]]:
        """Bytes and counts by kind, from the running totals (partial transfers: one small dir)."""
        totals = self.index.totals()
        out = {kind: {"count": t.count, "bytes": t.bytes} for kind, t in totals.items()}
        out["links"] = out.pop("link")
        part = {"count": 0, "bytes": 0}
        try:
            with os.scandir(self.partial_dir) as it:
                for e in it:
                    if e.name.endswith(".part"):
                        part["count"] += 1
                        part["bytes"] += e.stat().st_blocks * 512        # what it really takes on disk
        except FileNotFoundError:
            pass
        out["partial"] = part
        out["store"] = {"count": out["owned"]["count"] + out["cached"]["count"],
                        "bytes": out["owned"]["bytes"] + out["cached"]["bytes"]}
        return out
