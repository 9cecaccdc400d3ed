"""Content: getting blobs into the local store and knowing what is there.

`fetcher` brings a missing blob in from the channel's sources (single flight per hash, chunked,
every chunk verified before anyone reads it, resumable via partial/, whose files `partfile` writes and reads); `sources` are the places it
asks (other nodes over the peer API, an S3-compatible bucket); `index` records names, manifests and
cache use in kacheryfs.db. Blobs themselves are written only through kachery_client.store.

May import: kacheryfs.security, kacheryfs.config, kacheryfs.background, kacheryfs.sqlite_db,
kacheryfs.exception_groups and
kachery_client's pure modules. Never an edge (http, fuse, cli, daemon).
"""
