"""The mount's lifecycle inside the node's trio loop (a daemon extra task).

    start: clean a stale mount at the mount point (fusermount3 -u -z), pyfuse3.init, started()
    run:   pyfuse3.main() until the daemon cancels us
    stop:  cancelled (SIGTERM, /halt) -> unmount cleanly;
           crashed (an exception escaped the FUSE loop) -> NOT unmounted, loudly logged: a stale
           mount says "Transport endpoint is not connected", an empty directory would look
           like lost data. The next start cleans it.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from pathlib import Path

import pyfuse3
import trio

from kacheryfs.fuse.ops import Operations
from kacheryfs.fuse.vfs import VFS
from kacheryfs.node import Node, StartupError

log = logging.getLogger(__name__)


def default_mountpoint() -> Path:
    return Path("/kachery") if os.geteuid() == 0 else Path("~/kachery").expanduser()


def clean_stale_mount(mountpoint: Path) -> None:
    """A mount left by a crashed process answers ENOTCONN: lazily unmount it before reuse.

    statvfs, not stat: the kernel may still answer stat from its attribute cache.
    """
    try:
        os.statvfs(mountpoint)
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno != errno.ENOTCONN:
            raise
        log.warning("cleaning a stale mount at %s (left by a crashed node)", mountpoint)
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=True, capture_output=True)
    mountpoint.mkdir(parents=True, exist_ok=True)
    if os.path.ismount(mountpoint):
        raise OSError(errno.EBUSY, f"{mountpoint} is already a mount point (another node is mounted there?)")


def _only_cancellation(exc: BaseException) -> bool:
    """True for trio.Cancelled, also when pyfuse3's internal nursery wraps it in a group."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_cancellation(e) for e in exc.exceptions)
    return isinstance(exc, trio.Cancelled)


async def run_mount(node: Node, mountpoint: Path, *, fetch_timeout: float = 60.0, listing_inodes: int = 10_000,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    try:
        clean_stale_mount(mountpoint)
    except (OSError, subprocess.CalledProcessError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise StartupError(f"cannot mount at {mountpoint}: {reason}") from None
    async with trio.open_nursery() as background:      # incoming/ batch writes
        vfs = VFS(node, fetch_timeout=fetch_timeout, spawn=background.start_soon, listing_inodes=listing_inodes)
        await _serve(node, vfs, mountpoint, task_status)
        background.cancel_scope.cancel()


async def _serve(node: Node, vfs: VFS, mountpoint: Path, task_status: trio.TaskStatus[None]) -> None:
    ops = Operations(vfs)
    options = set(pyfuse3.default_options)
    options.add("fsname=kacheryfs")
    options.add("subtype=kacheryfs")
    if os.geteuid() == 0:
        options.add("allow_other")          # a shared /kachery: every user reads it
    try:
        pyfuse3.init(ops, str(mountpoint), options)
    except (RuntimeError, OSError) as e:      # libfuse says why on stderr; its exception says little
        raise StartupError(f"cannot mount at {mountpoint}: {e}") from None
    log.info("mounted %s at %s", node.storage_dir, mountpoint)
    node.mountpoint = mountpoint
    task_status.started()
    clean = False
    try:
        await pyfuse3.main()
        clean = True
    except BaseException as e:
        if _only_cancellation(e):            # the daemon is stopping us: a normal end
            clean = True
            raise
        log.critical("the FUSE loop crashed: leaving %s mounted but dead (it will answer 'Transport endpoint "
                     "is not connected'); no data is lost; restart the node, which cleans it", mountpoint)
        raise
    finally:
        node.mountpoint = None
        pyfuse3.close(unmount=clean)
        if clean:
            log.info("unmounted %s", mountpoint)
