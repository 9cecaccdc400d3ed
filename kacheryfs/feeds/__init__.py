"""Feeds and mutables: the node's signed append-only logs and its local key/value store.

`store` keeps feeds in feeds.db (the original daemon's schema) and checks every signature chain;
`mutables` is mutables.db; `service` adds waiting for new messages (long polls) on the trio loop;
`replication` follows feeds owned by other nodes through the peer API; `chains` re-checks every
stored subfeed's chain for `kacheryfs verify`.

May import: kacheryfs.security, kacheryfs.content.sources, the top-level helpers
(kacheryfs.background, .sqlite_db, .metrics) and kachery_client's pure modules. Never an edge.
"""
