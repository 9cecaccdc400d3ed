"""`kachery-pin`, `kachery-unpin`, `kachery-whereis`: parse, call kachery_client.data, print."""

from __future__ import annotations

import functools
import sys
import threading
from typing import Any

import click

from . import data
from .cli import _errors_as_one_line


class ByteProgress:
    """A progress bar on stderr, only on a terminal and once the total is known; `(done, total)`
    calls may come from several threads (kacheryfs verify uses it too)."""

    def __init__(self, label: str):
        self._label = label
        self._bar: Any = None
        self._done = 0
        self._lock = threading.Lock()

    def __call__(self, done: int, total: int) -> None:
        if total <= 0 or not sys.stderr.isatty():
            return
        with self._lock:
            if self._bar is None:
                self._bar = click.progressbar(length=total, label=self._label, file=sys.stderr)
                self._bar.__enter__()
            self._bar.update(done - self._done)
            self._done = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)


@click.command(help="Keep content on the node: never removed by gc (fetched first if it is not local).")
@click.argument("uris", nargs=-1)
@click.option("--list", "list_pins", is_flag=True, help="print the pinned content, one URI per line")
@_errors_as_one_line
def pin(uris: tuple[str, ...], list_pins: bool) -> None:
    if list_pins:
        for p in data.pins():
            click.echo(f"{p['uri']}\t{p['size']}")
        return
    if not uris:
        raise click.UsageError("give URIs to pin, or --list")
    for uri in uris:
        progress = ByteProgress(uri[:40])
        try:
            size = data.pin(uri, progress)
        finally:
            progress.close()
        click.echo(f"pinned {uri} ({size} bytes)")


@click.command(help="Let gc remove content again (cached content only; owned content is never gc'd).")
@click.argument("uris", nargs=-1, required=True)
@_errors_as_one_line
def unpin(uris: tuple[str, ...]) -> None:
    missing = 0
    for uri in uris:
        if data.unpin(uri):
            click.echo(f"unpinned {uri}")
        else:
            click.echo(f"not on this node: {uri}", err=True)
            missing += 1
    if missing:
        sys.exit(1)


@click.command(help="Every source that holds the content (this node, each peer of each channel, each "
                    "bucket), with size and answer time. Exit 1 if none does.")
@click.argument("uri")
@_errors_as_one_line
def whereis(uri: str) -> None:
    found = 0
    for a in data.whereis(uri):
        if a["found"]:
            found += 1
            click.echo(f"{a['source']}\t{a['size']} bytes\t{a['seconds'] * 1000:.0f} ms")
        else:
            what = a["error"] or "not found"
            click.echo(f"{a['source']}\t-\t{a['seconds'] * 1000:.0f} ms\t({what})", err=True)
    if not found:
        click.echo(f"no source holds {uri}", err=True)
        sys.exit(1)


pin_main = functools.partial(pin.main, prog_name="kachery-pin")
unpin_main = functools.partial(unpin.main, prog_name="kachery-unpin")
whereis_main = functools.partial(whereis.main, prog_name="kachery-whereis")
