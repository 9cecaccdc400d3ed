"""Shared storage on a lab server: one storage directory written by every user of one Unix group.

`kacheryfs run --group GROUP` (or `[node] group = "GROUP"`) prepares the tree at start:

* every directory of the tree (the root, sha1/ and its levels, tmp/, hash-cache/, quarantine/)
  is owned by GROUP, setgid (new entries inherit the group, new directories the bit) and
  group-writable; the root is closed to others (a user outside the group can neither read the
  store nor the client-auth file, and gets a permission error naming the group);
* each directory gets a default POSIX ACL `user::rwx group::rwx other::r-x`, so that what any
  member's client creates there is group-writable (directories) and group-readable (blobs, mode
  0644) whatever that client's umask; on a file system without ACLs clients must run with
  `umask 002` instead (README);
* blobs and links are made group-readable; the node's key files stay private (0600).

The node itself runs with umask 002 when a group is set.
"""

from __future__ import annotations

import errno
import grp
import logging
import os
import stat
import struct
from pathlib import Path

from kachery_client.errors import UsageError

log = logging.getLogger(__name__)

SHARED_DIRS = ("sha1", "tmp", "hash-cache", "quarantine")
_ACL_VERSION = 2
_ACL_UNDEFINED_ID = 0xFFFFFFFF
_USER_OBJ, _GROUP_OBJ, _OTHER = 0x01, 0x04, 0x20


def _default_acl() -> bytes:
    entries = ((_USER_OBJ, 7), (_GROUP_OBJ, 7), (_OTHER, 5))
    return struct.pack("<I", _ACL_VERSION) + b"".join(
        struct.pack("<HHI", tag, perm, _ACL_UNDEFINED_ID) for tag, perm in entries)


def group_id(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise UsageError(f"no Unix group named {name!r} on this machine") from None


def prepare_shared_storage(root: Path, group: str) -> bool:
    """Make the tree group-shared (see the module docstring). True if default ACLs are in place
    (clients need no umask), False if the file system has none."""
    gid = group_id(group)
    os.umask(0o002)
    try:
        st = os.stat(root)
        done_before = st.st_gid == gid and st.st_mode & stat.S_ISGID
        _share_dir(root, gid, others=False)
        acl = True
        for name in SHARED_DIRS:
            d = root / name
            d.mkdir(exist_ok=True)
            acl = _share_dir(d, gid) and acl
            if not done_before:             # the first time: everything below, once
                acl = _share_tree(d, gid) and acl
        client_auth = root / "client-auth"
        if client_auth.exists():
            os.chown(client_auth, -1, gid)
    except PermissionError as e:
        raise UsageError(f"cannot give {root} to group {group!r}: {e.strerror} (the node's user must be "
                         f"a member of {group!r}, or root)") from None
    if not acl:
        log.warning("%s has no POSIX ACLs: clients of group %s must run with umask 002", root, group)
    return acl


def _share_dir(d: Path, gid: int, others: bool = True) -> bool:
    os.chown(d, -1, gid)
    os.chmod(d, 0o2775 if others else 0o2770)
    try:
        os.setxattr(d, "system.posix_acl_default", _default_acl())
        return True
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
            return False
        raise


def _share_tree(top: Path, gid: int) -> bool:
    acl = True
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames:
            acl = _share_dir(Path(dirpath) / name, gid) and acl
        for name in filenames:
            path = os.path.join(dirpath, name)
            os.chown(path, -1, gid, follow_symlinks=False)
            mode = os.stat(path, follow_symlinks=False).st_mode
            if stat.S_ISREG(mode):
                os.chmod(path, stat.S_IMODE(mode) | 0o040)
    return acl
