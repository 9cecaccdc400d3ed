"""The `kacheryfs` command: run the node, ask a running node for its status, print the node id.

Parse, build, call: the node's logic lives in node.py and daemon.py. Errors are one line with the
exit code of their kind (kachery_client/exit_codes.py); a taken address or mount point, or a second
node on one storage directory (StartupError, NodeAlreadyRunning: usage errors), exits 2.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click

from kachery_client.config import DEFAULT_PORT, DEFAULT_STORAGE_DIR
from kachery_client.errors import KacheryError
from kachery_client.exit_codes import OneLineError, one_line
from kacheryfs import __version__
from kacheryfs.status_cli import print_status, watch_status


def _default_storage_dir() -> str:
    return os.environ.get("KACHERY_STORAGE_DIR") or str(DEFAULT_STORAGE_DIR.expanduser())


def _default_port() -> int:
    return int(os.environ.get("KACHERY_DAEMON_PORT") or DEFAULT_PORT)


class _Commands(click.Group):
    """The group, with the stored-data commands (cli_data.py) imported only when one is asked for:
    `kacheryfs status` starts without them (issue 13)."""

    LATER = ("verify", "du", "gc", "drop")

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LATER})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.LATER and name not in self.commands:
            from kacheryfs.cli_data import COMMANDS
            for command in COMMANDS:
                self.add_command(command)
        return super().get_command(ctx, name)


@click.group(cls=_Commands, help="kacheryfs: the kachery node (HTTP API, fetching, feeds, FUSE mount).\n\n"
                  "Also the mount helper: `kacheryfs <storage-dir> <mount-point> -o <options>` "
                  "(what `mount -t fuse.kacheryfs` and fstab run).")
@click.version_option(__version__, prog_name="kacheryfs")
def commands() -> None:
    pass


def main() -> None:
    """Entry point: subcommands, or the mount(8) helper form `kacheryfs SOURCE MOUNTPOINT [-o OPTIONS]`."""
    if _is_mount_helper_call(sys.argv[1:]):
        from kacheryfs.fuse.helper import main as helper_main
        sys.exit(helper_main(sys.argv))
    commands(prog_name="kacheryfs")


def _is_mount_helper_call(args: list[str]) -> bool:
    """Only the shape mount(8) produces: two existing directories, not options, then options.

    Anything else goes to click, so a typo (`kacheryfs drop --help`) is an unknown command that
    starts nothing and creates nothing, never a node on a new storage directory.
    """
    if len(args) < 2 or args[0] in commands.commands or args[0] in _Commands.LATER:
        return False
    source, mountpoint = args[0], args[1]
    if source.startswith("-") or mountpoint.startswith("-"):
        return False
    return os.path.isdir(source) and os.path.isdir(mountpoint)


@commands.command(help="Run the node in the foreground until SIGTERM or SIGINT.")
@click.option("--storage-dir", default=_default_storage_dir, show_default="$KACHERY_STORAGE_DIR or ~/kachery-storage",
              help="the storage directory this node owns")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address the client API listens on (loopback unless you mean otherwise)")
@click.option("--port", type=click.IntRange(0, 65535), default=_default_port,
              show_default="$KACHERY_DAEMON_PORT or 20431", help="port of the client API (clients use the same "
              "KACHERY_DAEMON_PORT); the peer API is [node] peer_listen in the config file")
@click.option("--mount", "mountpoint", default=None,
              help="mount the store here [default: /kachery as root, else ~/kachery]")
@click.option("--no-mount", is_flag=True, help="run without the FUSE mount (headless node)")
@click.option("--fetch-timeout", type=float, default=60.0, show_default=True,
              help="seconds a read in the mount waits for a fetch before failing with EIO")
@click.option("--listing-inodes", type=click.IntRange(0), default=10_000, show_default=True,
              help="hashes of sha1/ a listing hands the kernel with their attributes (then `ls -l` or a "
                   "coloured `ls` of them needs no lookup each); beyond this many inodes held, names only")
@click.option("--log-file", type=click.Path(dir_okay=False), default=None, help="log here instead of stderr")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True, help="least important log messages to write")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="node configuration (channels, peers, buckets, cache limit) "
                   "[default: <storage-dir>/kacheryfs.toml if it exists]")
@click.option("--group", default=None, metavar="GROUP",
              help="share the storage directory with the users of this Unix group (README: shared storage)")
@click.option("--auth-rotation-seconds", type=float, default=180.0, show_default=True,
              help="how often the client auth code (<storage-dir>/client-auth) changes")
def run(storage_dir: str, host: str, port: int, mountpoint: str | None, no_mount: bool, fetch_timeout: float,
        listing_inodes: int, log_file: str | None, log_level: str, config_path: str | None, group: str | None,
        auth_rotation_seconds: float) -> None:
    import trio

    from kacheryfs.daemon import serve
    from kacheryfs.node import Node

    _setup_logging(log_file, log_level)
    try:
        node = Node(Path(storage_dir), config_path=Path(config_path).expanduser() if config_path else None,
                    fetch_timeout=fetch_timeout, group=group)
    except PermissionError as e:
        raise click.ClickException(str(e)) from None
    except (KacheryError, OSError) as e:
        failure = one_line(e)           # exit codes per kind: kachery_client/exit_codes.py
        if failure is None:
            raise
        raise failure from None
    extra = []
    if not no_mount:
        try:
            from kacheryfs.fuse.mount import default_mountpoint, run_mount
        except ImportError as e:          # pyfuse3 missing, or libfuse3.so.3 not on this machine
            node.close()
            raise click.ClickException(
                f"the FUSE mount cannot start: {e}.\n"
                "Install FUSE 3 (Debian/Ubuntu: sudo apt-get install fuse3 libfuse3-3), "
                "or run without the mount: kacheryfs run --no-mount") from None
        where = Path(mountpoint).expanduser() if mountpoint else default_mountpoint()
        from kacheryfs.fuse.helper import is_live_mount
        if is_live_mount(where):              # checked again when mounting; this says it before any start-up
            node.close()
            raise _Busy(f"cannot mount at {where}: it is already a mount point (umount it first, or --mount "
                        "elsewhere)")
        extra.append(functools.partial(run_mount, node, where, fetch_timeout=fetch_timeout,
                                       listing_inodes=listing_inodes))
    try:
        trio.run(lambda: serve(node, host, port, extra_tasks=extra, auth_rotation_seconds=auth_rotation_seconds))
    except BaseException as e:
        start_failure = _start_failure(e, f"{host}:{port}")
        if start_failure is None:
            raise
        raise start_failure from None
    finally:
        node.close()


class _Busy(click.ClickException):
    exit_code = 2


def _start_failure(e: BaseException, address: str) -> click.ClickException | None:
    """A failed start as one line (exit codes per kind: kachery_client/exit_codes.py; a taken address
    or mount point is a StartupError, 2), or None to let `e` propagate (Ctrl-C, a bug)."""
    from kacheryfs.exception_groups import first_error
    error = first_error(e)
    failure: click.ClickException | None = one_line(error)
    if failure is None and isinstance(error, OSError):
        return click.ClickException(f"cannot serve on {address}: {error.strerror or error}")
    return failure


@commands.command(help="Print a running node's id, storage directory, addresses, mount point, blobs, "
                       "transfers in progress and what partial/ holds.")
@click.option("--storage-dir", default=None,
              help="the node's storage directory [default: the one the node reports at /probe]")
@click.option("--port", type=int, default=_default_port, show_default="$KACHERY_DAEMON_PORT or 20431",
              help="the node's client API port")
@click.option("--host", default=os.environ.get("KACHERY_DAEMON_HOST") or "127.0.0.1", show_default=True,
              help="the node's client API address")
@click.option("--watch", is_flag=True, help="show transfers and totals live, redrawn every --interval seconds")
@click.option("--interval", type=click.FloatRange(0.1), default=1.0, show_default=True,
              help="seconds between redraws with --watch")
@click.option("--count", type=click.IntRange(1), default=None, hidden=True, help="stop after this many redraws")
def status(storage_dir: str | None, port: int, host: str, watch: bool, interval: float, count: int | None) -> None:
    try:
        if watch:
            watch_status(host, port, Path(storage_dir) if storage_dir else None, interval, count)
            return
        print_status(host, port, Path(storage_dir) if storage_dir else None)
    except KacheryError as e:
        raise OneLineError(e) from None


@commands.command("id", help="Print this node's id (what other nodes list under `members`).")
@click.option("--storage-dir", default=_default_storage_dir, show_default="$KACHERY_STORAGE_DIR or ~/kachery-storage")
def node_id(storage_dir: str) -> None:
    from kacheryfs.security.keys import load_or_create_node_keys
    path = Path(storage_dir).expanduser()
    if not (path / "private.pem").exists():
        raise click.ClickException(f"no node keys in {path} yet: start the node once (`kacheryfs run`), "
                                   "or pass --storage-dir")
    click.echo(load_or_create_node_keys(path).public_hex)


def _setup_logging(log_file: str | None, level: str) -> None:
    import logging  # here: `kacheryfs status` starts without it
    handler: logging.Handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler], force=True)
    logging.getLogger("hypercorn.error").setLevel(logging.WARNING)
