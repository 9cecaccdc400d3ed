"""Tasks: functions that backend processes register and clients request through the node.

`hub` holds the task table and routes requests to a local backend or the forwarder; `records` the
records it keeps (Task, backend Session, timeouts) and the name checks; `results`
keeps finished pure-calculation results (content in the store, an index in SQLite); `urls` signs
and checks the result upload and download URLs; `forwarding` sends requests no local backend
serves to the channel's peers and mirrors their statuses.

May import: kacheryfs.security, kacheryfs.content.sources, the top-level helpers
(kacheryfs.background, .sqlite_db, .metrics) and kachery_client's pure modules. Never an edge.
"""
