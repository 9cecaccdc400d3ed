"""Several real nodes in one channel, for network tests and benchmarks.

    sa, sb, port_a = source_and_reader(tmp_path)   # B asks A (its peer); A serves B (a member)
    with running_node(sa, port=port_a) as a, running_node(sb) as b: ...

By hand: node_id(storage) makes a node's keys before it starts; write_config(storage, ...)
writes its kacheryfs.toml.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def node_id(storage_dir: Path) -> str:
    """The node id a node on this storage directory will have (its keys are made now if absent)."""
    from kacheryfs.security.keys import load_or_create_node_keys
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


def source_and_reader(root: Path, *, channel: str = "testchan", bucket: dict[str, str] | None = None,
                      reader_node: dict[str, Any] | None = None,
                      reader_is_member: bool = True) -> tuple[Path, Path, int]:
    """Storage dirs <root>/a/storage (the source, A) and <root>/b/storage (the reader, B) in one
    channel: B lists A as its peer, A lists B as a member (unless not). A must be started on the
    returned port."""
    from tests.support.nodeproc import free_port
    sa, sb = root / "a" / "storage", root / "b" / "storage"
    port_a = free_port()
    write_config(sa, channel=channel, members=[node_id(sb)] if reader_is_member else [], bucket=bucket)
    write_config(sb, channel=channel, peers=[f"http://127.0.0.1:{port_a}"], members=[node_id(sa)],
                 bucket=bucket, node=reader_node)
    return sa, sb, port_a
