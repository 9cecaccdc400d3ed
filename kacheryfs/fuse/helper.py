"""The mount(8) helper form: `kacheryfs <storage-dir> <mount-point> -o <options>`.

mount.fuse3 runs this for `mount -t fuse.kacheryfs`, fstab lines and systemd .mount units. Like
other FUSE file systems it returns once the mount is up, leaving the node running in the
background (its own session, logging to log_file= or <storage-dir>/kacheryfs.log).

Options of ours: port=N, host=ADDR, fetch_timeout=SECONDS, listing_inodes=N, log_file=PATH. The generic mount
options (rw, ro, suid, dev, exec, auto, noauto, user, nofail, _netdev, defaults, x-systemd.*)
are accepted and ignored.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

from kachery_client.config import DEFAULT_PORT

MOUNT_DEADLINE = 60.0
_OURS = {"port": "--port", "host": "--host", "fetch_timeout": "--fetch-timeout", "listing_inodes": "--listing-inodes",
         "log_file": "--log-file"}
_GENERIC = {"rw", "ro", "suid", "nosuid", "dev", "nodev", "exec", "noexec", "auto", "noauto", "user", "nouser",
            "users", "nofail", "_netdev", "defaults", "atime", "noatime", "relatime", "sync", "async"}


class HelperError(Exception):
    pass


def is_live_mount(path: Path) -> bool:
    """A mount point something answers at. A stale one (its node died: ENOTCONN) is not: the
    node's start cleans it (fuse/mount.py)."""
    if not os.path.ismount(path):
        return False
    try:
        os.statvfs(path)
    except OSError as e:
        return e.errno != errno.ENOTCONN
    return True


def parse_options(text: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key in _OURS:
            if not value:
                raise HelperError(f"option {key} needs a value ({key}=...)")
            options[key] = value
        elif key not in _GENERIC and not key.startswith("x-"):
            raise HelperError(f"unknown mount option {key!r} (ours: {', '.join(sorted(_OURS))})")
    return options


def main(argv: list[str]) -> int:
    args = argv[1:]
    try:
        if len(args) not in (2, 4) or (len(args) == 4 and args[2] != "-o"):
            raise HelperError("usage: kacheryfs <storage-dir> <mount-point> [-o option,...]")
        storage, mountpoint = Path(args[0]).resolve(), Path(args[1]).resolve()
        options = parse_options(args[3] if len(args) == 4 else "")
    except HelperError as e:
        print(f"kacheryfs: {e}", file=sys.stderr)
        return 2
    if is_live_mount(mountpoint):
        print(f"kacheryfs: cannot mount at {mountpoint}: it is already a mount point (umount it first)",
              file=sys.stderr)
        return 2
    log_file = options.pop("log_file", str(storage / "kacheryfs.log"))
    command = [sys.executable, "-m", "kacheryfs", "run", "--storage-dir", str(storage), "--mount", str(mountpoint),
               "--log-file", log_file]
    options.setdefault("port", os.environ.get("KACHERY_DAEMON_PORT") or str(DEFAULT_PORT))
    for key, value in options.items():
        command += [_OURS[key], value]
    storage.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + MOUNT_DEADLINE
    while not os.path.ismount(mountpoint):
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
            err = err.splitlines()[-1].removeprefix("Error: ") if err else ""
            print(f"kacheryfs: {err}" if err else f"kacheryfs: the node exited before mounting {mountpoint}; "
                  f"see {log_file}", file=sys.stderr)
            return 2 if proc.returncode == 2 else 1
        if time.monotonic() > deadline:
            print(f"kacheryfs: {mountpoint} not mounted after {MOUNT_DEADLINE:.0f} s; see {log_file}", file=sys.stderr)
            return 1
        time.sleep(0.05)
    if proc.stderr:
        proc.stderr.close()
    return 0
