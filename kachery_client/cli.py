"""The kachery-* commands: parse arguments, call the API, print. No logic of their own.

Results go to stdout; progress and errors to stderr. A KacheryError (a user mistake or a
missing file, node or hash), or a write the local disk refused, is printed as one line, without a
traceback, and exits with the code of its kind (exit_codes.py: 2 usage, 3 not found, 6 local
storage, ...).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from . import __version__, api
from .errors import KacheryError
from .exit_codes import one_line

F = TypeVar("F", bound=Callable[..., Any])
PROGRESS_MIN_BYTES = 100_000_000


def _errors_as_one_line(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:
            sys.stderr.close()      # `kachery-cat … | head`: not an error
            raise SystemExit(0) from None
        except (KacheryError, OSError) as e:
            failure = one_line(e)
            if failure is None:
                raise
            raise failure from None
    return wrapper  # type: ignore[return-value]


class _Progress:
    """A progress bar on stderr, only on a terminal and only for large files."""

    def __init__(self, label: str, total: int):
        self._bar = None
        if total >= PROGRESS_MIN_BYTES and sys.stderr.isatty():
            self._bar = click.progressbar(length=total, label=label, file=sys.stderr)
            self._bar.__enter__()
        self._done = 0

    def __call__(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(done - self._done)
            self._done = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)


@click.command(help="Write the content of a kachery URI to stdout (optionally bytes [START, END)).")
@click.argument("uri")
@click.option("--start", type=click.IntRange(min=0), default=None, help="first byte (default 0)")
@click.option("--end", type=click.IntRange(min=0), default=None, help="byte after the last (default: end of file)")
@_errors_as_one_line
def cat(uri: str, start: int | None, end: int | None) -> None:
    path = api.load_file(uri)
    out = sys.stdout.buffer
    with open(path, "rb") as f:
        f.seek(start or 0)
        remaining = None if end is None else max(0, end - (start or 0))
        while remaining is None or remaining > 0:
            block = f.read(1 << 20 if remaining is None else min(1 << 20, remaining))
            if not block:
                break
            out.write(block)
            if remaining is not None:
                remaining -= len(block)
    out.flush()


@click.command(help="Make the content of a kachery URI local and print its path (or copy it to --dest).")
@click.argument("uri")
@click.option("--dest", type=click.Path(dir_okay=False, writable=True), default=None,
              help="copy the file here instead of printing the store's path")
@_errors_as_one_line
def load(uri: str, dest: str | None) -> None:
    click.echo(api.load_file(uri, dest=dest))


@click.command(help="Store files and print one sha1:// URI per file.")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--upload", "channel", default=None, metavar="CHANNEL",
              help="also put each file into this channel's bucket (through the node)")
@_errors_as_one_line
def store(files: tuple[str, ...], channel: str | None) -> None:
    for path in files:
        size = os.path.getsize(path) if os.path.isfile(path) else 0
        progress = _Progress(os.path.basename(path), size)
        try:
            uri = api.store_file(path, progress=progress)
        finally:
            progress.close()
        if channel is not None:
            api.upload(uri, channel)
        click.echo(uri)


@click.command(help="Register files in place (no copy) and print one sha1:// URI per file. "
                    "A linked file stays loadable while its size and mtime do not change.")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@_errors_as_one_line
def link(files: tuple[str, ...]) -> None:
    for path in files:
        click.echo(api.link_file(path))


@click.group(help="The kachery client.")
def client() -> None:
    pass


@client.command(help="Print the client's version.")
def version() -> None:
    click.echo(f"kachery-client {__version__}")


cat_main = functools.partial(cat.main, prog_name="kachery-cat")
load_main = functools.partial(load.main, prog_name="kachery-load")
store_main = functools.partial(store.main, prog_name="kachery-store")
link_main = functools.partial(link.main, prog_name="kachery-link")
client_main = functools.partial(client.main, prog_name="kachery-client")
