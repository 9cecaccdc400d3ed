"""The store's small file-system pieces: `.link` records, scans, temp-file bookkeeping. Pure helpers
of store.py (docs/PROTOCOL.md section 5), no policy here."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .durability import storage_error


@dataclass(frozen=True)
class Link:
    """A parsed `.link` file: the blob lives at `path` while its size and mtime hold."""
    path: str
    size: int
    mtime: float
    manifest_sha1: str | None

    def is_valid(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_size == self.size and st.st_mtime == self.mtime


# An unnamed file (O_TMPFILE) made in the blob's own directory and linked under its hash once
# whole: no temp name to create and remove, and nothing left behind by a crash. Linux >= 3.11 on
# ext4, xfs, btrfs, tmpfs; elsewhere the caller falls back to a named temp file and a rename.
O_TMPFILE = getattr(os, "O_TMPFILE", 0)
_NO_TMPFILE = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOTSUP}


def unnamed_files_possible() -> bool:
    """This system has O_TMPFILE and a /proc to link unnamed files through."""
    return bool(O_TMPFILE) and os.path.isdir("/proc/self/fd")


def open_unnamed(directory: str, mode: int) -> int | None:
    """An unnamed file open for writing in `directory`, or None if the file system cannot make one.
    Raises FileNotFoundError if the directory is missing, OSError for a refused write."""
    if not O_TMPFILE:
        return None
    try:
        return os.open(directory, os.O_WRONLY | O_TMPFILE | os.O_CLOEXEC, mode)
    except FileNotFoundError:
        raise
    except OSError as e:
        if e.errno in _NO_TMPFILE:
            return None
        raise


def link_unnamed(fd: int, final: str) -> None:
    """Give the unnamed file `fd` its name (linkat through /proc/self/fd, which needs no privilege;
    `src_dir_fd` only makes Python call linkat, the path is absolute). Raises FileExistsError if
    the name is taken, OSError if it cannot be linked."""
    os.link(f"/proc/self/fd/{fd}", final, src_dir_fd=fd, follow_symlinks=True)


def make_dirs(path: str) -> bool:
    """`mkdir -p`, deepest first: a new blob's directory usually has its parent already, so this is
    one mkdir where os.makedirs stats the parent first. True if `path` itself was made here."""
    try:
        os.mkdir(path)
        return True
    except FileExistsError:
        return False
    except FileNotFoundError:
        parent = os.path.dirname(path)
        if parent == path:
            raise
        make_dirs(parent)
        try:
            os.mkdir(path)
            return True
        except FileExistsError:
            return False


def write_all(fd: int, view: memoryview) -> None:
    while len(view):
        n = os.write(fd, view)
        view = view[n:]


def writev_all(fd: int, views: list[memoryview]) -> None:
    """Write every byte of `views`, in order, with as few writev calls as the kernel allows."""
    views = [v for v in views if len(v)]
    while views:
        n = os.writev(fd, views[:_IOV_MAX])
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n:
            views[0] = views[0][n:]


_IOV_MAX = os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 16


def unlink_quietly(path: str | Path) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def scandir_names(path: Path) -> Iterator[str]:
    try:
        with os.scandir(path) as it:
            for entry in it:
                yield entry.name
    except (FileNotFoundError, NotADirectoryError):
        return


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError as e:
        return e.errno != errno.ESRCH
    return True


def walk_hashes(sha1_dir: Path) -> Iterator[str]:
    """Names of blobs under sha1/aa/bb/cc/, directory by directory, no descriptor held between
    steps. By path, one listdir per directory (open, getdents, close): a walk with directory
    descriptors costs more system calls per directory here (Python dups each descriptor for
    scandir), and sha1/ holds a directory per blob or two; this walk beats `find`."""
    yield from _walk_level(os.fspath(sha1_dir), 3)


def _walk_level(path: str, depth: int) -> Iterator[str]:
    try:
        names = os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return                          # removed meanwhile, or a stray file where a directory goes
    if depth == 0:
        for name in names:
            if len(name) == 40 and _HEX.issuperset(name):
                yield name
        return
    for name in names:
        if len(name) == 2:
            yield from _walk_level(f"{path}/{name}", depth - 1)


_HEX = frozenset("0123456789abcdef")


@contextlib.contextmanager
def removed_on_error(tmp: Path, doing: str) -> Iterator[None]:
    """Whatever goes wrong inside, the temp file goes; an OSError comes out as LocalStorageError."""
    try:
        yield
    except OSError as e:
        unlink_quietly(tmp)
        raise storage_error(e, doing) from None
    except BaseException:
        unlink_quietly(tmp)
        raise

