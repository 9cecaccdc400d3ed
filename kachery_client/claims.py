"""Claims: how a store that finds its content already present keeps it from a concurrent gc or drop
without asking the node (docs/ARCHITECTURE.md "Life of stored data", docs/PROTOCOL.md section 21).

A blob the node fetched (cached: gc may remove it) carries the mtime CACHED_MTIME_NS, set by the
node before it is published and given by nothing else. A store that finds its content present
*claims* it: it sets the blob's mtime to now (one utime) and only then checks the blob; a store
that writes new content gives it a fresh mtime anyway. The node removes a blob by first renaming
it out of its name (atomic), then reading the renamed file's mtime: one claimed since the removal
could have been decided (`is_claimed`) is put back and kept as owned. A claim is therefore made
before the store returns and needs no message to the node; the node's `/kacheryfs/added` notice
only names it.

Why utime before the check: if the check (an open by path) then finds the name, the name was
still there after the claim landed, so a removal renames the claimed inode and sees the claim.
A utime that finds no name (the node set it aside just then) means "write the content again".
"""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from .durability import storage_error
from .store_files import unlink_quietly
from .uri import is_sha1

if TYPE_CHECKING:
    from .store import Store

CACHED_MTIME_NS = 946_684_800 * 10**9      # 2000-01-01T00:00:00Z: the mtime of a cached blob
PRESENT, ABSENT, FOREIGN = 1, 0, -1        # claim(): claimed / no such name / not ours to touch
# A claim's mtime comes from the kernel's coarse clock, up to a tick (<= 10 ms) behind
# time.time(): a removal counts as "since" its start everything from this much before it.
CLOCK_SLACK_NS = 20_000_000
_NO_HARD_LINK = {errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV}


def claim(path: str | os.PathLike[str]) -> int:
    """Set the blob's mtime to now. ABSENT if there is no such name (write the content); FOREIGN if
    this user may not touch it (another user's blob in a shared group store: write a copy of our
    own over it); PRESENT otherwise (also on a read-only file system, where nobody removes it)."""
    try:
        os.utime(path)
    except (FileNotFoundError, NotADirectoryError):
        return ABSENT
    except PermissionError:
        return FOREIGN
    except OSError as e:
        if e.errno != errno.EROFS:
            raise storage_error(e, f"cannot claim {path}") from None
    return PRESENT


def mark_cached(path: str | os.PathLike[str]) -> None:
    """The node, before publishing a fetched blob: mark it cached (unclaimed)."""
    os.utime(path, ns=(CACHED_MTIME_NS, CACHED_MTIME_NS))


def is_claimed(mtime_ns: int, since_ns: int) -> bool:
    """A blob set aside for removal with this mtime was claimed at or after `since_ns`."""
    return mtime_ns != CACHED_MTIME_NS and mtime_ns >= since_ns - CLOCK_SLACK_NS


def claim_held(store: Store, path: str | Path, sha1: str, size: int | None = None) -> bool | None:
    """A store about to write this content: True if the blob is here and now claimed (so that
    a concurrent gc or drop keeps it), so nothing need be written; False if it is
    not here; None if it is here but another user's, which this one may not claim: the caller
    writes its own copy over it (a rename, never a link)."""
    held = claim(path)
    if held == ABSENT:
        return False
    sound = store._holds(path, sha1, size)
    if held == PRESENT:
        return sound
    return None if sound else False


def link_unless_present(store: Store, tmp: Path, final: Path, sha1: str, size: int) -> None:
    """Link `tmp` under its name unless a sound blob is already there (then it is kept: a client
    may have claimed it), and drop the temp name. Where hard links cannot be made, a rename."""
    for _ in range(3):
        try:
            os.link(tmp, final)
        except FileExistsError:
            if store._holds(final, sha1, size):
                break                   # kept: ours goes
            continue                    # a torn one, just removed: link ours in its place
        except FileNotFoundError:
            os.makedirs(final.parent, exist_ok=True)
            continue
        except OSError as e:
            if e.errno not in _NO_HARD_LINK:
                raise
            os.replace(tmp, final)      # no hard links here
            return
        unlink_quietly(final.with_name(final.name + ".link"))
        break
    else:
        os.replace(tmp, final)          # the name keeps holding wrong bytes: ours replaces them
        return
    unlink_quietly(tmp)


# ---- the node's side: set aside, then keep or delete ---------------------------------------------

ASIDE = ".aside"


def set_aside(final: Path, tmp_dir: Path) -> Path | None:
    """Rename the blob (or `.link`) `final` out of its name into tmp/, as
    `<pid>.<random>.<name>.aside` (a crash leaves it for `restore_aside`). None if it is absent."""
    aside = tmp_dir / f"{os.getpid()}.{secrets.token_hex(6)}.{final.name}{ASIDE}"
    for _ in range(2):
        try:
            os.rename(final, aside)
            return aside
        except FileNotFoundError:
            if tmp_dir.is_dir() or not final.parent.is_dir():
                return None
            tmp_dir.mkdir(parents=True, exist_ok=True)
    return None


def put_back(aside: Path, final: Path) -> bool:
    """Link the set-aside file back under its name and drop the aside name. False if the name was
    taken meanwhile (a new copy of the same content: the aside one just goes)."""
    try:
        os.link(aside, final)
        kept = True
    except FileExistsError:
        kept = False
    except FileNotFoundError:               # its directory went: make it again
        os.makedirs(final.parent, exist_ok=True)
        return put_back(aside, final)
    except OSError as e:
        # No hard link here: to another user's file under fs.protected_hardlinks (a group-shared
        # store), or on a file system without them. A rename puts the same bytes back.
        if e.errno not in _NO_HARD_LINK:
            raise
        os.rename(aside, final)
        return True
    os.unlink(aside)
    return kept


def restore_aside(aside: Path, sha1_dir: Path) -> None:
    """A file a dead node set aside (it crashed between the rename and the decision): put it back,
    the node's reconcile then fixes its record; a later gc decides again."""
    name = aside.name[:-len(ASIDE)].split(".", 2)[2]         # <sha1> or <sha1>.link
    if not is_sha1(name.removesuffix(".link")):
        unlink_quietly(aside)                                # not one of ours: nothing to put back
        return
    put_back(aside, sha1_dir / name[0:2] / name[2:4] / name[4:6] / name)
