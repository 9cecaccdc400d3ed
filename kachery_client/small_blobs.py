"""Small blobs (durability.SMALL_BLOB bytes or fewer), the hot path of store_json and friends: one
write, no hasher, no manifest, no fsync (unless KACHERY_SYNC=always); such a blob is verified
whenever it is read (durability.py). Part of store.py's Store, kept apart for size.

The bytes go into an unnamed file (O_TMPFILE) made in the blob's own directory, which is linked
under its hash once whole: about half the directory work of a named temp file under tmp/ and a
rename, and a crash leaves nothing behind. Where the file system makes no unnamed files, a named
temp file and a rename, as for large blobs.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from . import durability
from .blob_writer import BLOB_MODE, StoredBlob
from .durability import storage_error
from .errors import LocalStorageError
from .store_files import link_unnamed, make_dirs, open_unnamed, removed_on_error, unlink_quietly, write_all

if TYPE_CHECKING:
    from .store import Store


def add_small(store: Store, data: bytes) -> StoredBlob:
    """The hot path of store_json and friends: one write, no hasher, no manifest, no fsync
    (unless KACHERY_SYNC=always): the blob is verified whenever it is read (durability.py)."""
    sha1 = hashlib.sha1(data).hexdigest()
    leaf = f"{store._sha1_prefix}{sha1[0:2]}/{sha1[2:4]}/{sha1[4:6]}"
    final = f"{leaf}/{sha1}"
    if store.unnamed_ok:
        if not _add_unnamed(store, leaf, final, sha1, data):
            _add_named(store, Path(final), sha1, data)      # not here, or another user's copy
    elif not store._claim(final, sha1, len(data)):      # present: claimed (claims.py), nothing to write
        _add_named(store, Path(final), sha1, data)
    return StoredBlob(sha1, len(data))


def _add_unnamed(store: Store, leaf: str, final: str, sha1: str, data: bytes) -> bool:
    """Store the bytes unless present (then claim them): written into an unnamed file in the blob's
    directory and linked under its hash (store_files.open_unnamed), about half the directory work
    of a temp file and a rename. False when the content is not here (or is another user's copy)
    and cannot be written this way: the caller writes a named temp file, without asking again."""
    if not store._tmp_made:
        store.new_temp_path()            # tmp/ is part of the layout, made once per Store
    try:
        # The directory first: content not in the store is nearly always the first in its
        # directory (16.7 million of them), and a directory just made holds no blob, so there is
        # nothing to claim: one mkdir, then the write.
        made_dir = _make_leaf(store, leaf, int(sha1[:4], 16))
        if not made_dir:
            held = store._claim(final, sha1, len(data))
            if held is None:
                return False            # another user's copy is there: ours replaces it, named
            if held:
                return True             # present, and now claimed
        fd = open_unnamed(leaf, BLOB_MODE)
        if fd is None:
            store.unnamed_ok = False    # the file system makes no unnamed files
            return False
        try:
            _fill(store, fd, data)
            if not _link_unnamed(store, fd, final, sha1, len(data)):
                return False            # another user's copy is there: ours replaces it, named
        finally:
            os.close(fd)
    except FileNotFoundError:
        return False                    # the directory went meanwhile: the named way makes it
    except OSError as e:
        raise storage_error(e, f"cannot store sha1://{sha1} in {store.root}") from None
    if not made_dir:                    # a directory just made holds no link
        unlink_quietly(Path(final + ".link"))
    if not store.sync_always:
        durability.pending.add(store.root)
    return True


def _make_leaf(store: Store, leaf: str, parent_number: int) -> bool:
    """make_dirs(leaf), True if the leaf itself was made here. The parent (`sha1/aa/bb`, number
    0xaabb) first, unless this Store made or met it before (`Store._parents_seen`): a new leaf is
    one or two mkdirs, never a failed one first."""
    seen = store._parents_seen
    if not seen[parent_number]:
        make_dirs(leaf[:-3])
        seen[parent_number] = 1
    try:
        os.mkdir(leaf)
        return True
    except FileExistsError:
        return False
    except FileNotFoundError:                       # removed meanwhile (gc of empty directories)
        seen[parent_number] = 0
        return make_dirs(leaf)


def _link_unnamed(store: Store, fd: int, final: str, sha1: str, size: int) -> bool:
    """True once the name holds the content (ours, or another writer's, claimed); False if it holds
    another user's copy, which this user cannot claim."""
    for _ in range(3):
        try:
            link_unnamed(fd, final)
            return True
        except FileExistsError:
            held = store._claim(final, sha1, size)
            if held is None:
                return False
            if held:
                return True             # another writer published the same bytes
            # gone meanwhile, or a torn blob just removed by _holds: link ours in its place
    raise LocalStorageError(f"cannot publish sha1://{sha1} in {store.root}: its name keeps "
                            "being taken by wrong bytes", errno.EEXIST)


def _add_named(store: Store, final: Path, sha1: str, data: bytes) -> None:
    """A small blob through a named temp file under tmp/ and a rename."""
    tmp, fd = store.create_temp()
    with removed_on_error(tmp, f"cannot store sha1://{sha1} in {store.root}"):
        try:
            _fill(store, fd, data)
        finally:
            os.close(fd)
        store._publish_unsynced(tmp, final, sha1, len(data))


def _fill(store: Store, fd: int, data: bytes) -> None:
    """The bytes, the blob's mode (unless the umask already gives it), and with
    KACHERY_SYNC=always the fsync."""
    write_all(fd, memoryview(data))
    if store._umask & 0o644:
        os.fchmod(fd, BLOB_MODE)
    if store.sync_always:
        os.fsync(fd)
