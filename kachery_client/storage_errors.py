"""Write-side OSErrors of the local storage -> LocalStorageError, for the callers of the store.

store.py raises LocalStorageError itself for what it writes; the edges that call it (the client's
store_* functions, the node's /store and incoming/ files, the fetcher's part files) also pass a raw
OSError through `local_storage_error`, so that a disk-full condition reads the same everywhere:

    ENOSPC  no space left        EDQUOT  quota exceeded
    EROFS   read-only            EIO     the device failed
"""

from __future__ import annotations

import errno

from .errors import LocalStorageError

STORAGE_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                  errno.EROFS: "the file system is read-only", errno.EIO: "an I/O error"}


def local_storage_error(error: BaseException, where: str = "the storage directory") -> LocalStorageError | None:
    """The LocalStorageError this error means, or None if it is not a refused local write."""
    if isinstance(error, LocalStorageError):
        return error
    if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
        return LocalStorageError(f"cannot write to {where}: {STORAGE_ERRNOS[error.errno]}", error.errno)
    return None


class storage_errors:  # noqa: N801 (used as `with storage_errors(...)`, like contextlib's)
    """Re-raise refused local writes as LocalStorageError; everything else passes unchanged.
    A class, not a generator: it wraps every small store, where contextlib's cost shows."""

    __slots__ = ("where",)

    def __init__(self, where: str = "the storage directory") -> None:
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, e: BaseException | None, tb: object) -> None:
        if isinstance(e, OSError):
            mapped = local_storage_error(e, self.where)
            if mapped is not None:
                raise mapped from None
        return None
