"""Where a node fetches content it lacks: other nodes (peer.py) and S3-compatible buckets (bucket.py).

A Source is synchronous (the fetcher calls it from worker threads) and maps its foreign errors
(requests, botocore) to these, once, here:

    TransferError (kachery_client.errors)
     └── SourceError          this source failed this time (connection, timeout, 5xx): retry, fail over
          └── SourceRefused   this source will keep refusing (credentials, 403, no such bucket)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from kachery_client.errors import TransferError

Sink = Callable[[memoryview], None]      # receives the bytes of a range, in order


class SourceError(TransferError):
    pass


class SourceRefused(SourceError):
    pass


@dataclass(frozen=True)
class RemoteBlob:
    size: int
    manifest_sha1: str | None = None


class Source(Protocol):
    label: str          # for logs and error messages: says which peer or bucket
    kind: str           # "peer" or "bucket": peers are tried first

    def stat(self, sha1: str, need_manifest: bool = True) -> RemoteBlob | None:
        """Size (and manifest hash, if known) of a blob this source has; None if it has not.
        `need_manifest=False`: the asker has the manifest; a peer need not make one."""
        ...

    def read_range(self, sha1: str, start: int, end: int, sink: Sink) -> None:
        """Feed bytes [start, end) of the blob to `sink`; SourceError if fewer arrive."""
        ...
