"""The `kacheryfs` command: run the node, ask a running node for its status.

Parse, build, call: the node's logic lives in node.py and daemon.py.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

import click
import requests

from kachery_client.config import DEFAULT_PORT, DEFAULT_STORAGE_DIR
from kachery_client.errors import KacheryError
from kacheryfs import __version__

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
              show_default="$KACHERY_DAEMON_PORT or 20431")
@click.option("--mount", "mountpoint", default=None,
              help="mount the store here [default: /kachery as root, else ~/kachery]")
@click.option("--no-mount", is_flag=True, help="run without the FUSE mount (headless node)")
@click.option("--fetch-timeout", type=float, default=60.0, show_default=True,
              help="seconds a read in the mount waits for a fetch before failing with EIO")
@click.option("--log-file", type=click.Path(dir_okay=False), default=None, help="log here instead of stderr")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="node configuration (channels, peers, buckets, cache limit) "
                   "[default: <storage-dir>/kacheryfs.toml if it exists]")
@click.option("--group", default=None, metavar="GROUP",
              help="share the storage directory with the users of this Unix group (README: shared storage)")
@click.option("--auth-rotation-seconds", type=float, default=180.0, hidden=True)
def run(storage_dir: str, host: str, port: int, mountpoint: str | None, no_mount: bool, fetch_timeout: float,
        log_file: str | None, log_level: str, config_path: str | None, group: str | None,
        auth_rotation_seconds: float) -> None:
    import trio

    from kacheryfs.daemon import serve
    from kacheryfs.node import Node

    _setup_logging(log_file, log_level)
    try:
        node = Node(Path(storage_dir), config_path=Path(config_path).expanduser() if config_path else None,
                    group=group)
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
        extra.append(functools.partial(run_mount, node, where, fetch_timeout=fetch_timeout))
    try:
        trio.run(lambda: serve(node, host, port, extra_tasks=extra, auth_rotation_seconds=auth_rotation_seconds))
    except OSError as e:
        raise click.ClickException(f"cannot serve on {host}:{port}: {e.strerror or e}") from None
    finally:
        node.close()


@commands.command(help="Print a running node's id, storage directory, blob counts and bytes (its running "
                       "totals), requests served.")
@click.option("--storage-dir", default=_default_storage_dir, show_default="$KACHERY_STORAGE_DIR or ~/kachery-storage")
@click.option("--port", type=int, default=_default_port, show_default="$KACHERY_DAEMON_PORT or 20431")
@click.option("--host", default=os.environ.get("KACHERY_DAEMON_HOST") or "127.0.0.1", show_default=True)
def status(storage_dir: str, port: int, host: str) -> None:
    from kacheryfs.cli_data import store_totals
    url = f"http://{host}:{port}"
    try:
        headers = {"KACHERY-CLIENT-AUTH-CODE": (Path(storage_dir) / "client-auth").read_text()}
        r = requests.get(url + "/stats", headers=headers, timeout=10)
        r.raise_for_status()
        stats = r.json()["stats"]
        totals = store_totals(url, headers)      # running totals kept by the node: no walk
    except (OSError, requests.RequestException, ValueError, KeyError, KacheryError) as e:
        raise click.ClickException(
            f"no node answers at {url} for {storage_dir} ({e}); start one with `kacheryfs run`") from None
    store = totals["store"]
    click.echo(f"Node ID:           {stats['nodeId']}")
    click.echo(f"Storage directory: {stats.get('storageDir', storage_dir)}")
    click.echo(f"Blobs:             {store['count']} ({store['bytes']} bytes): "
               f"{totals['owned']['count']} owned, {totals['cached']['count']} cached, "
               f"{totals['pinned']['count']} pinned")
    click.echo(f"Requests served:   {stats.get('requests', 0)}")
    for c in stats.get("channels", []):
        bucket = f", bucket {c['bucket']}" if c.get("bucket") else ""
        click.echo(f"Channel {c['name']}: {'/'.join(c['roles'])}; {c['peers']} peers, "
                   f"{c['members']} members{bucket}")
    click.echo(f"Listening on:      {url}")


def _register_data_commands() -> None:
    from kacheryfs.cli_data import COMMANDS
    for command in COMMANDS:
        commands.add_command(command)


_register_data_commands()


def _setup_logging(log_file: str | None, level: str) -> None:
    handler: logging.Handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler], force=True)
    logging.getLogger("hypercorn.error").setLevel(logging.WARNING)
