"""ExceptionGroups (trio nurseries deliver every error in one) -> the one error to report.

Code that catches a bare exception where a nursery runs inside must look into the group; these
helpers pick the error that says most: the first deliberate one (KacheryError), else the first
OSError, else the first.
"""

from __future__ import annotations

from kachery_client.errors import KacheryError


def leaves(error: BaseException) -> list[BaseException]:
    """The non-group exceptions inside `error` (itself, if it is not a group), in order."""
    out: list[BaseException] = []
    todo: list[BaseException] = [error]
    while todo:
        e = todo.pop(0)
        if isinstance(e, BaseExceptionGroup):
            todo[:0] = list(e.exceptions)
        else:
            out.append(e)
    return out


def first_error(error: BaseException) -> BaseException:
    """The error to report from `error` (a group or not): the first KacheryError, else the first
    OSError (a disk or network failure says more than the BrokenResourceError a sibling task got
    because of it), else the first Exception, else the first leaf."""
    found = leaves(error)
    for kind in (KacheryError, OSError, Exception):
        for e in found:
            if isinstance(e, kind):
                return e
    return found[0] if found else error
