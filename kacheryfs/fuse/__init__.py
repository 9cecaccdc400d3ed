"""The FUSE edge: the mount.

`vfs` defines what the filesystem looks like (root, sha1/<hash>/<name>, incoming/; the inode table)
without importing pyfuse3; `incoming` holds the files being written into incoming/ and stores them
on close; `ops` is the thin pyfuse3.Operations adapter and the only place that raises FUSEError;
`entries` holds the inode-table records both share (`Entry`, `Attr`, `FsError`); `inodes` numbers
one inode per content from its hash; `listing` hands out directory listings (sha1/ from the node's
index); `plain_entries` sends the entries of sha1/ beyond `--listing-inodes` without giving the
kernel an inode; `mount` runs the mount's lifecycle inside the node's trio loop; `helper` is the
mount(8) helper form (`mount -t fuse.kacheryfs`).

May import: kacheryfs.node and everything below it, kachery_client's pure modules.
Imported by: kacheryfs.cli and kacheryfs.daemon. pyfuse3 is imported only by `ops`, `plain_entries` and `mount`.
"""
