"""The loop of `kacheryfs status --watch`: poll the node's /ui/status.json, redraw, until Ctrl-C.

Sends the client auth code from the storage directory, so it works whatever address the node
listens on (see http/access.py). A node that stops answering is reported in place; the watch
goes on until interrupted (or `count` redraws, for tests).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import requests

from kacheryfs.status_view import render

CLEAR = "\x1b[H\x1b[2J"


def watch_status(url: str, storage_dir: Path, interval: float, count: int | None) -> None:
    session = requests.Session()
    drawn = 0
    tty = sys.stdout.isatty()
    try:
        while count is None or drawn < count:
            try:
                code = (storage_dir / "client-auth").read_text()
                r = session.get(url + "/ui/status.json", headers={"KACHERY-CLIENT-AUTH-CODE": code}, timeout=10)
                r.raise_for_status()
                lines = render(r.json(), url)
            except (OSError, requests.RequestException, ValueError, KeyError) as e:
                if drawn == 0:
                    raise click.ClickException(f"no node answers at {url} for {storage_dir} ({e})") from None
                lines = [f"{time.strftime('%H:%M:%S')}  the node at {url} does not answer: {e}"]
            click.echo((CLEAR if tty else "") + "\n".join(lines) + ("" if tty else "\n"))
            drawn += 1
            if count is None or drawn < count:
                time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        session.close()
