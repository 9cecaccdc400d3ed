"""`kacheryfs status` and `kacheryfs status --watch`: ask a running node (on any port) what it is
doing, and print it once or redraw it until Ctrl-C.

Both read the one snapshot the node builds (http/status_data.py): once from /stats, whose extras
are that snapshot under the original's names, and live from /ui/status.json (drawn by
status_view.py). One client (NodeStatusClient) asks for both: the node says where its storage
directory is at GET /probe (no auth needed), and the client auth code is read from there (or
KACHERY_CLIENT_AUTH_CODE) on every request, since the node rotates it. It speaks http.client, not
requests: `kacheryfs status` is a command one runs often, and requests alone takes longer to
import than the whole answer (issue 13: under 0.1 s).
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from kachery_client.config import AUTH_HEADER
from kachery_client.errors import AuthError, KacheryError, NodeUnavailableError
from kacheryfs.status_view import human_bytes, render

CLEAR = "\x1b[H\x1b[2J"


def client_auth_code(storage_dir: Path | None, url: str) -> str:
    """The node's current client auth code: KACHERY_CLIENT_AUTH_CODE, else <storage_dir>/client-auth
    (read on every request: the node rotates it). Also used by cli_data's commands."""
    code = os.environ.get("KACHERY_CLIENT_AUTH_CODE")
    if code:
        return code
    try:
        return (storage_dir / "client-auth").read_text() if storage_dir else ""
    except OSError as e:
        raise AuthError(f"the node at {url} answers, but its auth code in {storage_dir}/client-auth "
                        f"cannot be read ({e.strerror}); run as a user who can read it, or set "
                        "KACHERY_CLIENT_AUTH_CODE") from None


class NodeStatusClient:
    """The node at `url`: found once at /probe, then asked with its current client auth code."""

    def __init__(self, url: str, storage_dir: Path | None):
        self.url = url
        where = urlsplit(url)
        self._conn = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port, timeout=10)
        try:
            status, probe = self._get("/probe", {})
            if status != 200 or not isinstance(probe, dict):
                raise ValueError
        except (OSError, http.client.HTTPException, ValueError):
            raise NodeUnavailableError(f"no kachery node answers at {url}; start one with `kacheryfs run`") from None
        reported = probe.get("kacheryStorageDir")
        self.storage_dir = storage_dir or (Path(reported) if reported else None)

    def _get(self, path: str, headers: dict[str, str]) -> tuple[int, Any]:
        """One GET on the kept connection (opened again once if the node closed it): status, JSON or None."""
        for attempt in (1, 2):
            try:
                self._conn.request("GET", path, headers=headers)
                response = self._conn.getresponse()
                body = response.read()
                break
            except (OSError, http.client.HTTPException):
                self._conn.close()
                if attempt == 2:
                    raise
        try:
            return response.status, json.loads(body)
        except ValueError:
            return response.status, None

    def get(self, path: str) -> dict[str, Any]:
        try:
            status, answer = self._get(path, {AUTH_HEADER: client_auth_code(self.storage_dir, self.url)})
        except (OSError, http.client.HTTPException):
            raise NodeUnavailableError(f"the node at {self.url} stopped answering") from None
        if status in (401, 403):
            raise AuthError(f"the node at {self.url} refused the auth code from {self.storage_dir}/client-auth "
                            "(is --storage-dir the node's own?)")
        if status != 200 or not isinstance(answer, dict):
            raise KacheryError(f"the node at {self.url} answered {path} with HTTP {status}")
        return answer

    def close(self) -> None:
        self._conn.close()


def print_status(host: str, port: int, storage_dir: Path | None) -> None:
    url = f"http://{host}:{port}"
    client = NodeStatusClient(url, storage_dir)
    try:
        stats = client.get("/stats").get("stats")
    finally:
        client.close()
    if not isinstance(stats, dict):
        raise KacheryError(f"the node at {url} answered /stats without its stats")
    totals = stats.get("totals") or {}
    echo = click.echo
    echo(f"Node ID:           {stats['nodeId']}")
    echo(f"Storage directory: {stats.get('storageDir', client.storage_dir)}")
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
        echo(f"  sha1://{t['sha1']}  {human_bytes(t['bytesLoaded'])} of {human_bytes(t['bytesTotal'])}  "
             f"from {t.get('source') or '(looking for sources)'}  {t['seconds']} s, {t['waiters']} waiting")
    partial = stats.get("partial")
    if partial and partial.get("count"):
        echo(f"partial/:          {partial['count']} unfinished transfer(s), {human_bytes(partial['bytes'])} "
             "(resumed on the next load; oldest removed first beyond [node] partial_max_bytes)")


def watch_status(host: str, port: int, storage_dir: Path | None, interval: float, count: int | None) -> None:
    """Poll /ui/status.json and redraw until Ctrl-C (or `count` redraws, for tests). A node that
    stops answering after the first draw is reported in place and the watch goes on."""
    url = f"http://{host}:{port}"
    client = NodeStatusClient(url, storage_dir)
    drawn = 0
    tty = sys.stdout.isatty()
    try:
        while count is None or drawn < count:
            try:
                lines = render(client.get("/ui/status.json"), url)
            except (KacheryError, KeyError) as e:
                if drawn == 0:
                    raise KacheryError(f"the node at {url} gave no status: {e}") from None
                lines = [f"{time.strftime('%H:%M:%S')}  the node at {url} does not answer: {e}"]
            click.echo((CLEAR if tty else "") + "\n".join(lines) + ("" if tty else "\n"))
            drawn += 1
            if count is None or drawn < count:
                time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
