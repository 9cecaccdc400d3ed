"""One exception tree for the whole project.

    KacheryError                   anything kachery raises on purpose
     ├── UsageError                the caller's mistake: a CLI prints it as one line, no traceback
     │    ├── InvalidURIError      a string that is not a well-formed kachery URI
     │    ├── InvalidHashError     not 40 hex digits
     │    └── LocalFileError       a local path that is missing, unreadable or not a regular file
     ├── NotFoundError            content that no source has (local store, node, peers, bucket)
     ├── IntegrityError           bytes that do not match their hash; they are never served
     ├── TransferError            every source that should have it failed or timed out (EIO in the mount)
     ├── LocalStorageError        this machine's storage refused a write (ENOSPC, EDQUOT, EROFS, EIO)
     ├── OfflineError             a feature that needs a node, asked for in offline mode
     ├── NodeUnavailableError     no node answers at the configured address
     ├── TaskError                a requested task ended with status error (the message says why)
     └── NodeError                the node answered with an error
          └── AuthError           the node refused the client auth code (HTTP 403)

Foreign errors (OSError, requests exceptions, HTTP statuses) are mapped to these once, at the
edge where they arise: store.py for the file system, node_http.py for HTTP.
"""

from __future__ import annotations


class KacheryError(Exception):
    """Base of every error kachery raises on purpose."""


class UsageError(KacheryError):
    """The caller asked for something impossible; the message says what and how to fix it."""


class InvalidURIError(UsageError):
    pass


class InvalidHashError(UsageError):
    pass


class LocalFileError(UsageError):
    pass


class NotFoundError(KacheryError):
    """No source has the requested content."""


class IntegrityError(KacheryError):
    """Bytes whose SHA-1 differs from the one they were asked for under."""


class TransferError(KacheryError):
    """Sources that should have the content failed, served bad bytes, or timed out."""


class LocalStorageError(KacheryError):
    """The local storage directory refused a write: disk full, quota, read-only, I/O error.

    Nothing partial is left behind (the temp file is removed) and the store stays consistent;
    `errno` keeps the file system's code for the edges (FUSE answers with it).
    """

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno


class OfflineError(KacheryError):
    """Feeds, mutables and remote loads need a node; offline mode has none."""


class NodeUnavailableError(KacheryError):
    """Nothing answers at the node's address."""


class TaskError(KacheryError):
    """A requested task ended in error: its function raised, no backend provides it, or the
    backend went away."""


class NodeError(KacheryError):
    """The node answered, with an error."""


class AuthError(NodeError):
    """The node refused our client auth code."""
