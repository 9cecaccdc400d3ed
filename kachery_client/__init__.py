"""kachery client: content-addressed storage for scientific data.

    import kachery_client as kc
    uri = kc.store_json({"a": 1})     # 'sha1://<hash>/file.json'
    kc.load_json(uri)

The names below are imported on first use (PEP 562 `__getattr__`): a command that needs little
of the client (`kacheryfs status`, `kachery-client version`) starts without loading requests and
the store.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module (in this package) that defines it
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        ("delete", "flush", "get", "get_string", "link_file", "load_bytes", "load_file", "load_json",
         "load_npy", "load_pkl", "load_text", "node_client", "set", "store_bytes", "store_file",
         "store_json", "store_npy", "store_pkl", "store_text", "upload"), "api"),
    **dict.fromkeys(("pin", "pins", "unpin", "whereis"), "data"),
    **dict.fromkeys(("KacheryError", "NotFoundError", "TaskError"), "errors"),
    **dict.fromkeys(("Feed", "Subfeed", "create_feed", "delete_feed", "get_feed_id", "load_feed",
                     "load_subfeed", "watch_for_new_messages"), "feeds"),
    **dict.fromkeys(("TaskRequest", "request_task", "run_task_backend", "taskfunction"), "tasks"),
    **dict.fromkeys(("FileURI", "format_file_uri", "parse_file_uri"), "uri"),
}

__all__ = [   # the same names as _EXPORTS (a test holds them equal); a literal so that linters read it
    "Feed", "Subfeed", "create_feed", "delete_feed", "get_feed_id", "load_feed", "load_subfeed",
    "watch_for_new_messages",
    "FileURI", "KacheryError", "NotFoundError", "delete", "flush", "format_file_uri", "get", "get_string",
    "link_file", "load_bytes", "load_file", "load_json", "load_npy", "load_pkl", "load_text",
    "node_client", "parse_file_uri", "set", "store_bytes", "store_file", "store_json", "store_npy",
    "store_pkl", "store_text", "upload",
    "TaskError", "TaskRequest", "request_task", "run_task_backend", "taskfunction",
    "pin", "pins", "unpin", "whereis",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kachery_client' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value              # the next use is a plain global lookup
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:                        # what type checkers and editors see
    from .api import (
        delete,
        flush,
        get,
        get_string,
        link_file,
        load_bytes,
        load_file,
        load_json,
        load_npy,
        load_pkl,
        load_text,
        node_client,
        set,
        store_bytes,
        store_file,
        store_json,
        store_npy,
        store_pkl,
        store_text,
        upload,
    )
    from .data import pin, pins, unpin, whereis
    from .errors import KacheryError, NotFoundError, TaskError
    from .feeds import (
        Feed,
        Subfeed,
        create_feed,
        delete_feed,
        get_feed_id,
        load_feed,
        load_subfeed,
        watch_for_new_messages,
    )
    from .tasks import TaskRequest, request_task, run_task_backend, taskfunction
    from .uri import FileURI, format_file_uri, parse_file_uri
