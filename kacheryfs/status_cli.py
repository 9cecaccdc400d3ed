"""`kacheryfs status`: ask a running node (on any port) what it is doing, and print it.

The node says where its storage directory is at GET /probe (no auth needed); the client auth code
is read from there (or KACHERY_CLIENT_AUTH_CODE), so `status --port P` works for a node on any
port and storage directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
import requests

from kachery_client.errors import AuthError, KacheryError, NodeUnavailableError
from kachery_client.progress import human


def fetch_stats(url: str, storage_dir: Path | None) -> tuple[dict[str, Any], Path | None]:
    session = requests.Session()
    session.trust_env = False
    try:
        probe = session.get(url + "/probe", timeout=10).json()
    except (requests.RequestException, ValueError):
        raise NodeUnavailableError(f"no kachery node answers at {url}; start one with `kacheryfs run`") from None
    reported = probe.get("kacheryStorageDir")
    storage = storage_dir or (Path(reported) if reported else None)
    code = os.environ.get("KACHERY_CLIENT_AUTH_CODE")
    if not code:
        try:
            code = (storage / "client-auth").read_text() if storage else ""
        except OSError as e:
            raise AuthError(f"the node at {url} answers, but its auth code in {storage}/client-auth cannot be "
                            f"read ({e.strerror}); run as a user who can read it, or set KACHERY_CLIENT_AUTH_CODE") from None
    try:
        r = session.get(url + "/stats", headers={"KACHERY-CLIENT-AUTH-CODE": code or ""}, timeout=10)
    except requests.RequestException:
        raise NodeUnavailableError(f"the node at {url} stopped answering") from None
    if r.status_code == 403:
        raise AuthError(f"the node at {url} refused the auth code from {storage}/client-auth "
                        "(is --storage-dir the node's own?)")
    try:
        return r.json()["stats"], storage
    except (ValueError, KeyError):
        raise KacheryError(f"the node at {url} answered /stats with HTTP {r.status_code}") from None


def print_status(host: str, port: int, storage_dir: Path | None) -> None:
    url = f"http://{host}:{port}"
    stats, storage = fetch_stats(url, storage_dir)
    totals = stats.get("totals") or {}
    echo = click.echo
    echo(f"Node ID:           {stats['nodeId']}")
    echo(f"Storage directory: {stats.get('storageDir', storage)}")
    echo(f"Config file:       {stats.get('configFile') or 'none (a purely local node)'}")
    echo(f"Client API:        {url}")
    echo(f"Peer API:          {stats.get('peerListen') or 'not listening (no [node] peer_listen)'}")
    echo(f"Mount point:       {stats.get('mountPoint') or 'not mounted'}")
    store = totals.get("store", {"count": 0, "bytes": 0})
    echo(f"Blobs:             {store['count']} ({store['bytes']} bytes): "
         + ", ".join(f"{totals[k]['count']} {k}" for k in ("owned", "cached", "pinned") if k in totals))
    echo(f"Requests served:   {stats.get('requests', 0)}")
    for c in stats.get("channels", []):
        bucket = f", bucket {c['bucket']}" if c.get("bucket") else ""
        echo(f"Channel {c['name']}: {'/'.join(c['roles'])}; {c['peers']} peers, {c['members']} members{bucket}")
    transfers = stats.get("transfers", [])
    echo(f"Transfers:         {len(transfers) or 'none in progress'}")
    for t in transfers:
        echo(f"  sha1://{t['sha1']}  {human(t['bytesLoaded'])} of {human(t['bytesTotal'])}  "
             f"from {t.get('source') or '(looking for sources)'}  {t['seconds']} s, {t['waiters']} waiting")
    partial = stats.get("partial")
    if partial and partial.get("count"):
        echo(f"partial/:          {partial['count']} unfinished transfer(s), {human(partial['bytes'])} "
             "(resumed on the next load; oldest removed first beyond [node] partial_max_bytes)")
