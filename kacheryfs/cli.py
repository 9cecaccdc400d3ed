"""The `kacheryfs` command: run the node, ask a running node for its status, print the node id.

Parse, build, call: the node's logic lives in node.py and daemon.py. Errors are one line: a
KacheryError exits 1; a taken address or mount point, or a second node on one storage directory
(StartupError, NodeAlreadyRunning), exits 2.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

import click

from kachery_client.config import DEFAULT_PORT, DEFAULT_STORAGE_DIR
from kachery_client.errors import KacheryError
from kacheryfs import __version__
from kacheryfs.status_cli import print_status

log = logging.getLogger(__name__)


def _default_storage_dir() -> str:
    return os.environ.get("KACHERY_STORAGE_DIR") or str(DEFAULT_STORAGE_DIR.expanduser())


def _default_port() -> int:
    return int(os.environ.get("KACHERY_DAEMON_PORT") or DEFAULT_PORT)


@click.group(help="kacheryfs: the kachery node (HTTP API, fetching, feeds, FUSE mount).\n\n"
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
    if len(args) < 2 or args[0] in commands.commands:
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
@click.option("--log-file", type=click.Path(dir_okay=False), default=None, help="log here instead of stderr")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True, help="least important log messages to write")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="node configuration (channels, peers, buckets, cache limit) "
                   "[default: <storage-dir>/kacheryfs.toml if it exists]")
@click.option("--auth-rotation-seconds", type=float, default=180.0, show_default=True,
              help="how often the client auth code (<storage-dir>/client-auth) changes")
def run(storage_dir: str, host: str, port: int, mountpoint: str | None, no_mount: bool, fetch_timeout: float,
        log_file: str | None, log_level: str, config_path: str | None, auth_rotation_seconds: float) -> None:
    import trio

    from kacheryfs.daemon import serve
    from kacheryfs.node import Node, NodeAlreadyRunning

    _setup_logging(log_file, log_level)
    try:
        node = Node(Path(storage_dir), config_path=Path(config_path).expanduser() if config_path else None,
                    fetch_timeout=fetch_timeout)
    except NodeAlreadyRunning as e:
        raise _Busy(str(e)) from None
    except (KacheryError, PermissionError) as e:
        raise click.ClickException(str(e)) from None
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
        extra.append(functools.partial(run_mount, node, where, fetch_timeout=fetch_timeout))
    try:
        trio.run(lambda: serve(node, host, port, extra_tasks=extra, auth_rotation_seconds=auth_rotation_seconds))
    except BaseException as e:
        _one_line(e, f"{host}:{port}")
        raise
    finally:
        node.close()


class _Busy(click.ClickException):
    exit_code = 2


def _one_line(e: BaseException, address: str) -> None:
    """A failed start as one line (raises click's exception), or return to let `e` propagate."""
    from kacheryfs.node import StartupError
    leaves = _leaves(e)
    startup = next((x for x in leaves if isinstance(x, StartupError)), None)
    if startup is not None:
        raise _Busy(str(startup)) from None
    ours = next((x for x in leaves if isinstance(x, KacheryError)), None)
    if ours is not None:
        raise click.ClickException(str(ours)) from None
    os_error = next((x for x in leaves if isinstance(x, OSError)), None)
    if os_error is not None:
        raise click.ClickException(f"cannot serve on {address}: {os_error.strerror or os_error}") from None


def _leaves(e: BaseException) -> list[BaseException]:
    if isinstance(e, BaseExceptionGroup):
        return [leaf for x in e.exceptions for leaf in _leaves(x)]
    return [e]


@commands.command(help="Print a running node's id, storage directory, addresses, mount point, blobs, "
                       "transfers in progress and what partial/ holds.")
@click.option("--storage-dir", default=None,
              help="the node's storage directory [default: the one the node reports at /probe]")
@click.option("--port", type=int, default=_default_port, show_default="$KACHERY_DAEMON_PORT or 20431",
              help="the node's client API port")
@click.option("--host", default=os.environ.get("KACHERY_DAEMON_HOST") or "127.0.0.1", show_default=True,
              help="the node's client API address")
def status(storage_dir: str | None, port: int, host: str) -> None:
    try:
        print_status(host, port, Path(storage_dir) if storage_dir else None)
    except KacheryError as e:
        raise click.ClickException(str(e)) from None


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
    handler: logging.Handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler], force=True)
    logging.getLogger("hypercorn.error").setLevel(logging.WARNING)
