"""Several real nodes in one channel, for network tests.

    ids = node_ids(storage_a, storage_b)          # creates the node keys before the nodes start
    write_config(storage_b, channel="lab", peers=[url_a], members=[ids[0]], bucket=...)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def node_id(storage_dir: Path) -> str:
    """The node id a node on this storage directory will have (its keys are made now if absent)."""
    from kacheryfs.keys import load_or_create_node_keys
    storage_dir.mkdir(parents=True, exist_ok=True)
    return load_or_create_node_keys(storage_dir).public_hex


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple, set, frozenset)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(v)


def write_config(storage_dir: Path, *, channel: str = "testchan", peers: list[str] = (),  # type: ignore[assignment]
                 members: list[str] = (), bucket: dict[str, str] | None = None,  # type: ignore[assignment]
                 node: dict[str, Any] | None = None, **channel_settings: Any) -> Path:
    lines = []
    if node:
        lines.append("[node]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in node.items()]
    lines += ["[[channel]]", f"name = {_toml_value(channel)}", f"peers = {_toml_value(list(peers))}",
              f"members = {_toml_value(list(members))}"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in channel_settings.items()]
    if bucket:
        lines.append("[channel.bucket]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in bucket.items()]
    storage_dir.mkdir(parents=True, exist_ok=True)
    path = storage_dir / "kacheryfs.toml"
    path.write_text("\n".join(lines) + "\n")
    return path
