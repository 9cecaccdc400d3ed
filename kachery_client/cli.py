"""The kachery-* commands: parse arguments, call the API, print. No logic of their own.

Results go to stdout; progress and errors to stderr. A KacheryError (a user mistake or a
missing file, node or hash), or a write the local disk refused, is printed as one line, without a
traceback, and exits with the code of its kind (exit_codes.py: 2 usage, 3 not found, 6 local
storage, ...).
Progress (progress.py) shows on a terminal only, and never with --quiet.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from . import __version__, api
from .errors import KacheryError, UsageError
from .exit_codes import one_line
from .progress import ProgressLine

F = TypeVar("F", bound=Callable[..., Any])
QUIET = click.option("--quiet", "-q", is_flag=True, help="no progress display on the terminal")


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


@click.command(help="Write the content of a kachery URI to stdout (optionally bytes [START, END)).")
@click.argument("uri")
@click.option("--start", type=click.IntRange(min=0), default=None, help="first byte (default 0)")
@click.option("--end", type=click.IntRange(min=0), default=None, help="byte after the last (default: end of file)")
@QUIET
@_errors_as_one_line
def cat(uri: str, start: int | None, end: int | None, quiet: bool) -> None:
    if start is not None and end is not None and end < start:
        raise UsageError(f"--end ({end}) is before --start ({start})")
    out = sys.stdout.buffer
    progress = ProgressLine("kachery-cat", quiet=quiet or out.isatty())     # not over the content itself
    try:
        # Remote content streams: each block is out as soon as the node has verified it.
        for block in api.load_range(uri, start or 0, end, progress=progress):
            out.write(block)
            out.flush()
    finally:
        progress.close()


@click.command(help="Make the content of a kachery URI local and print its path (or copy it to --dest).")
@click.argument("uri")
@click.option("--dest", type=click.Path(dir_okay=False), default=None,
              help="copy the file here instead of printing the store's path")
@QUIET
@_errors_as_one_line
def load(uri: str, dest: str | None, quiet: bool) -> None:
    progress = ProgressLine("kachery-load", quiet=quiet)
    try:
        path = api.load_file(uri, dest=dest, progress=progress)
    finally:
        progress.close()
    click.echo(path)


@click.command(help="Store files and print one sha1:// URI per file. A file may be anything readable "
                    "(a pipe, <(command)).")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--upload", "channel", default=None, metavar="CHANNEL",
              help="also put each file into this channel's bucket (through the node)")
@QUIET
@_errors_as_one_line
def store(files: tuple[str, ...], channel: str | None, quiet: bool) -> None:
    for path in files:
        size = os.path.getsize(path) if os.path.isfile(path) else 0
        progress = ProgressLine(os.path.basename(path), quiet=quiet)
        try:
            uri = api.store_file(path, progress=functools.partial(progress, total=size))
        finally:
            progress.close()
        if channel is not None:
            try:
                api.upload(uri, channel)
            except KacheryError as e:
                raise type(e)(f"stored {uri}, but the upload to channel {channel!r} failed: {e}") from None
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
