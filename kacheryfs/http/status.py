"""What `kacheryfs status` shows beyond the original's /stats: where the node listens and is
mounted, its config file, transfers in progress, what partial/ holds and the store's running totals (docs/PROTOCOL.md 17.3)."""

from __future__ import annotations

import time
from typing import Any

import trio

from kacheryfs.content.partial import list_partial
from kacheryfs.node import Node


async def node_status(node: Node) -> dict[str, Any]:
    listen = node.config.peer_listen
    transfers = []
    if node.fetcher is not None:
        now = time.monotonic()
        for t in node.fetcher.in_progress():
            transfers.append({"sha1": t.sha1, "bytesLoaded": t.bytes_present, "bytesTotal": t.size,
                              "source": t.source, "waiters": t.waiters, "seconds": round(now - t.started, 1)})
    partial_dir = node.fetcher.partial_dir if node.fetcher is not None else node.storage_dir / "partial"
    partial = await trio.to_thread.run_sync(list_partial, partial_dir)
    return {
        "peerListen": f"{listen[0]}:{listen[1]}" if listen else None,
        "mountPoint": str(node.mountpoint) if node.mountpoint else None,
        "configFile": str(node.config.path) if node.config.path else None,
        "transfers": transfers,
        "partial": {"count": len(partial), "bytes": sum(p.disk_bytes for p in partial)},
        "totals": await node.data.du(),          # running totals in kacheryfs.db: no walk of the store
    }
