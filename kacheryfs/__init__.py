"""kacheryfs: the kachery node (HTTP API, fetcher, feeds, mutables, FUSE mount) in one trio process."""

__version__ = "0.1.0"
