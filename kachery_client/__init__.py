"""kachery client: content-addressed storage for scientific data.

    import kachery_client as kc
    uri = kc.store_json({"a": 1})     # 'sha1://<hash>/file.json'
    kc.load_json(uri)
"""

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

__version__ = "0.1.0"

__all__ = [
    "Feed", "Subfeed", "create_feed", "delete_feed", "get_feed_id", "load_feed", "load_subfeed",
    "watch_for_new_messages",
    "FileURI", "KacheryError", "NotFoundError", "delete", "flush", "format_file_uri", "get", "get_string",
    "link_file", "load_bytes", "load_file", "load_json", "load_npy", "load_pkl", "load_text",
    "node_client", "parse_file_uri", "set", "store_bytes", "store_file", "store_json", "store_npy",
    "store_pkl", "store_text", "upload",
    "TaskError", "TaskRequest", "request_task", "run_task_backend", "taskfunction",
    "pin", "pins", "unpin", "whereis",
]
