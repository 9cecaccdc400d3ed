"""The command-line edge's one error policy: an error -> one line on stderr and an exit code.

    code  error                                     code  error
    1     any other KacheryError (NodeError, ...)   6     LocalStorageError (ENOSPC, EDQUOT, EROFS, EIO)
    2     UsageError (also click's usage errors)    7     NodeUnavailableError, OfflineError
    3     NotFoundError                             8     AuthError (the node refused the auth code)
    4     IntegrityError                            9     TaskError
    5     TransferError (sources failed)

Used by kachery_client/cli.py (the kachery-* commands) and kacheryfs/cli.py. A write-side OSError
that reaches a command unmapped is treated as the LocalStorageError it is. No traceback is printed.
"""

from __future__ import annotations

import click

from .errors import (
    AuthError,
    IntegrityError,
    KacheryError,
    LocalStorageError,
    NodeUnavailableError,
    NotFoundError,
    OfflineError,
    TaskError,
    TransferError,
    UsageError,
)
from .storage_errors import local_storage_error

EXIT_CODES: tuple[tuple[type[KacheryError], int], ...] = (
    (UsageError, 2), (NotFoundError, 3), (IntegrityError, 4), (TransferError, 5), (LocalStorageError, 6),
    (NodeUnavailableError, 7), (OfflineError, 7), (AuthError, 8), (TaskError, 9), (KacheryError, 1),
)


def exit_code(error: KacheryError) -> int:
    return next(code for cls, code in EXIT_CODES if isinstance(error, cls))


class OneLineError(click.ClickException):
    """click prints "Error: <message>" on stderr and exits with `exit_code`."""

    def __init__(self, error: KacheryError):
        super().__init__(str(error))
        self.exit_code = exit_code(error)  # type: ignore[misc]  # per instance, read by click


def one_line(error: BaseException) -> OneLineError | None:
    """The command-line failure for a KacheryError or a refused local write; None for others."""
    known = error if isinstance(error, KacheryError) else local_storage_error(error)
    return OneLineError(known) if known is not None else None
