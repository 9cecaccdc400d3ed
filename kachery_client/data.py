"""Pins and whereis through the node (docs/PROTOCOL.md section 19): kc.pin, kc.unpin, kc.pins, kc.whereis.

Pinning content that is not local fetches it first (through /loadFile, with progress), then asks
the node to keep it from garbage collection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .api import node_client
from .uri import parse_file_uri

ProgressFn = Callable[[int, int], None]       # (bytes loaded, bytes total)


def pin(uri: str, progress: ProgressFn | None = None) -> int:
    """Keep the content on the node (fetched first if needed). Its size."""
    furi = parse_file_uri(uri)
    node = node_client()
    node.load_file(furi, (lambda done, total, _source: progress(done, total)) if progress else None)
    out = node.post_json("/kacheryfs/pin", {"uris": [uri]})
    return int(out["pinned"][0]["size"])


def unpin(uri: str) -> bool:
    """Let gc remove the content again (if it is cached). False if the node does not hold it."""
    parse_file_uri(uri)
    return bool(node_client().post_json("/kacheryfs/unpin", {"uris": [uri]})["unpinned"])


def pins() -> list[dict[str, Any]]:
    """The pinned content: [{"uri", "sha1", "size"}]."""
    return list(node_client().post_json("/kacheryfs/pins", {})["pins"])


def whereis(uri: str) -> list[dict[str, Any]]:
    """Every source's answer: [{"source", "kind", "found", "size", "manifestSha1", "seconds", "error"}],
    this node first, then each peer of each channel and each bucket."""
    parse_file_uri(uri)
    return list(node_client().post_json("/kacheryfs/whereis", {"uri": uri})["answers"])
