"""Write-side OSErrors of the local storage -> LocalStorageError, for the callers of the store.

store.py raises LocalStorageError itself for what it writes; the edges that call it (the client's
store_* functions, the node's /store and incoming/ files, the fetcher's part files) also pass a raw
OSError through `local_storage_error`, so that a disk-full condition reads the same everywhere:

    ENOSPC  no space left        EDQUOT  quota exceeded
    EROFS   read-only            EIO     the device failed
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

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


@contextlib.contextmanager
def storage_errors(where: str = "the storage directory") -> Iterator[None]:
    """Re-raise refused local writes as LocalStorageError; everything else passes unchanged."""
    try:
        yield
    except OSError as e:
        mapped = local_storage_error(e, where)
        if mapped is None:
            raise
        raise mapped from None
