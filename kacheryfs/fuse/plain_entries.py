"""Readdirplus entries that give the kernel no inode: sha1/ listed (beyond --listing-inodes, vfs.py)
without leaving 100,000 inodes behind, in the kernel or in the node.

pyfuse3 always answers readdirplus (it turns FUSE_CAP_READDIRPLUS_AUTO off) and its
`readdir_reply` sends each entry with the node id `EntryAttributes.st_ino`, so the kernel makes
an inode and a dentry of every entry listed and the node has to remember each until the kernel
forgets it. The kernel skips an entry whose node id is 0: "it only means the userspace filesystem
did not want to return attributes/handle for this entry" (fs/fuse/readdir.c,
fuse_direntplus_link), and still lists its name, d_ino and d_type. `ls -f` then costs no
inode; `ls -l` and `stat` look each name up as usual.

pyfuse3's `st_ino` setter writes the node id and `attr.st_ino` (the d_ino) together, so
`PlainEntry` writes the two fields of the C struct `fuse_entry_param` (ino, generation, then
struct stat, whose st_ino follows st_dev) it holds. It finds them by setting a probe value and
looking where it landed: if this pyfuse3 lays its EntryAttributes out otherwise, `plain_entry`
returns None and the caller sends full entries (the inodes are then counted and forgotten as for
lookups).
"""

from __future__ import annotations

import ctypes
import sys

import pyfuse3

_PROBE = 0x5AC3_17E0_9B2D_44F1
_D_INO_AFTER_NODE_ID = 24        # fuse_entry_param: ino (8), generation (8), stat.st_dev (8), stat.st_ino


class PlainEntry:
    """One EntryAttributes sent for many entries: node id 0, d_ino set per entry (`d_ino`)."""

    def __init__(self, entry: pyfuse3.EntryAttributes, node_id_at: int):
        self.entry = entry               # the views below point into it: keep it alive with them
        self._node_id = ctypes.c_uint64.from_address(id(entry) + node_id_at)
        self._d_ino = ctypes.c_uint64.from_address(id(entry) + node_id_at + _D_INO_AFTER_NODE_ID)
        self._node_id.value = 0

    def d_ino(self, ino: int) -> pyfuse3.EntryAttributes:
        self._d_ino.value = ino
        return self.entry


def plain_entry(entry: pyfuse3.EntryAttributes) -> PlainEntry | None:
    """`entry` as a plain entry, or None if its layout is not the one expected."""
    probe = _PROBE.to_bytes(8, sys.byteorder)
    entry.st_ino = _PROBE
    raw = ctypes.string_at(id(entry), type(entry).__basicsize__)
    at = raw.find(probe)
    if at < 0 or raw.count(probe) != 2 or raw[at + _D_INO_AFTER_NODE_ID:][:8] != probe:
        return None
    plain = PlainEntry(entry, at)
    if entry.st_ino != 0:                # the getter reads the node id: the write landed there
        return None
    plain.d_ino(_PROBE >> 1)
    if ctypes.string_at(id(entry), type(entry).__basicsize__).count((_PROBE >> 1).to_bytes(8, sys.byteorder)) != 1:
        return None
    return plain
