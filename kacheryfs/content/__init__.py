"""Content: getting blobs into the local store and knowing what is there.

`fetcher` brings a missing blob in from the channel's sources (single flight per hash, chunked,
every chunk verified before anyone reads it, resumable via partial/). `transfer` is one transfer
(chunk plan, who holds it, guarded writes); `whole_hash` the whole file's hash following the
downloads; `search` asks the sources for a blob's size;
`partfile` writes and reads part files; `partial` bounds partial/; `ranges` serves a byte range
as soon as its chunks are verified. `sources` are the places it asks (other nodes over the peer
API, an S3-compatible bucket); `index` records names, manifests, kinds (owned/cached/link), pins,
quarantine and running totals in kacheryfs.db. The life of stored content: `lifecycle` (records,
gc, the cache limit, removal, quarantine: the only code that removes from sha1/), `verify`
(parallel re-hash), `whereis` (every source asked), `shared_group` (a storage tree shared by a
Unix group). Blobs themselves are written only through kachery_client.store.

May import: kacheryfs.security, the top-level helpers (kacheryfs.config, .background, .sqlite_db,
.exception_groups, .metrics) and kachery_client's pure modules. Never an edge (http, fuse, cli,
daemon), never kacheryfs.node.
"""
