"""The node's configuration: a TOML file naming channels, their peers and bucket, and this node's roles.

Default place: <storage>/kacheryfs.toml (`kacheryfs run --config PATH` for another). No file, or
no channel in it: a purely local node. Example:

    [node]
    peer_listen = "0.0.0.0:20432"      # optional: a second listener serving ONLY the peer API
    cache_max_bytes = "50G"            # optional: evict blobs that a peer or the bucket also holds
    fetch_connections = 4              # parallel chunk downloads per transfer
    numcopies = 1                      # `kacheryfs drop`: other sources that must hold a content
    group = "lab"                      # optional: shared storage for this Unix group (README)

    [[channel]]
    name = "lab"
    roles = ["download", "upload", "serve"]      # the default: all three
    peers = ["http://10.0.0.2:20432"]            # other nodes' peer API base URLs
    members = ["<64-hex node id>", ...]          # nodes allowed to fetch from this one
    upload_all = false                           # upload every stored blob to the bucket

    [channel.bucket]
    endpoint_url = "https://s3.example.org"      # omit for AWS S3
    bucket = "kachery"
    prefix = "lab"
    region = "us-east-1"
    profile = "kachery"                          # optional AWS profile

Bucket credentials come from the standard AWS environment variables and config files (boto3's
chain), never from this file, and are never logged.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kachery_client.errors import UsageError

ROLES = ("download", "upload", "serve")
CONFIG_NAME = "kacheryfs.toml"
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_NODE_ID_RE = re.compile(r"^[0-9a-f]{64}$")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)[iI]?[bB]?\s*$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class ConfigError(UsageError):
    """The configuration file is malformed; the message names the file and the setting."""


@dataclass(frozen=True)
class BucketConfig:
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None

    def key_for(self, sha1: str) -> str:
        """<prefix>/sha1/aa/bb/cc/<sha1>: the storage layout, inside the bucket."""
        path = f"sha1/{sha1[0:2]}/{sha1[2:4]}/{sha1[4:6]}/{sha1}"
        return f"{self.prefix.strip('/')}/{path}" if self.prefix.strip("/") else path

    def describe(self) -> str:
        where = self.endpoint_url or "AWS S3"
        return f"s3://{self.bucket}/{self.prefix.strip('/')} at {where}"


@dataclass(frozen=True)
class ChannelConfig:
    name: str
    roles: tuple[str, ...] = ROLES
    peers: tuple[str, ...] = ()
    members: frozenset[str] = frozenset()
    bucket: BucketConfig | None = None
    upload_all: bool = False

    def can(self, role: str) -> bool:
        return role in self.roles


@dataclass(frozen=True)
class NodeConfig:
    channels: tuple[ChannelConfig, ...] = ()
    peer_listen: tuple[str, int] | None = None
    cache_max_bytes: int | None = None
    fetch_connections: int = 4
    path: Path | None = None
    numcopies: int = 1
    group: str | None = None

    def channel(self, name: str) -> ChannelConfig | None:
        return next((c for c in self.channels if c.name == name), None)

    def require_channel(self, name: str) -> ChannelConfig:
        c = self.channel(name)
        if c is None:
            known = ", ".join(c.name for c in self.channels) or "none"
            raise UsageError(f"this node is not a member of channel {name!r} (its channels: {known})")
        return c


def load_config(path: Path, *, required: bool = False) -> NodeConfig:
    """Read and validate the file. A missing file is an empty config unless `required`."""
    if not path.exists():
        if required:
            raise ConfigError(f"{path}: no such configuration file")
        return NodeConfig()
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from None
    return parse_config(raw, path)


def parse_config(raw: dict[str, Any], path: Path | None = None) -> NodeConfig:
    where = str(path) if path else "config"
    node = _table(raw.get("node", {}), f"{where}: [node]")
    _no_unknown(node, {"peer_listen", "cache_max_bytes", "fetch_connections", "numcopies", "group"},
                f"{where}: [node]")
    _no_unknown(raw, {"node", "channel"}, where)
    channels = []
    seen = set()
    for i, c in enumerate(raw.get("channel", [])):
        ch = _parse_channel(_table(c, f"{where}: [[channel]] #{i + 1}"), f"{where}: [[channel]] #{i + 1}")
        if ch.name in seen:
            raise ConfigError(f"{where}: channel {ch.name!r} is defined twice")
        seen.add(ch.name)
        channels.append(ch)
    fetch_connections = node.get("fetch_connections", 4)
    if not isinstance(fetch_connections, int) or not 1 <= fetch_connections <= 64:
        raise ConfigError(f"{where}: [node] fetch_connections must be an integer from 1 to 64")
    cache = node.get("cache_max_bytes")
    numcopies = node.get("numcopies", 1)
    if not isinstance(numcopies, int) or isinstance(numcopies, bool) or not 0 <= numcopies <= 100:
        raise ConfigError(f"{where}: [node] numcopies must be an integer from 0 to 100")
    group = node.get("group")
    if group is not None and not (isinstance(group, str) and group):
        raise ConfigError(f"{where}: [node] group must be the name of a Unix group")
    return NodeConfig(
        channels=tuple(channels),
        peer_listen=_parse_listen(node["peer_listen"], where) if "peer_listen" in node else None,
        cache_max_bytes=parse_size(cache, f"{where}: [node] cache_max_bytes") if cache not in (None, 0) else None,
        fetch_connections=fetch_connections, path=path, numcopies=numcopies, group=group)


def _parse_channel(c: dict[str, Any], where: str) -> ChannelConfig:
    _no_unknown(c, {"name", "roles", "peers", "members", "bucket", "upload_all"}, where)
    name = c.get("name")
    if not isinstance(name, str) or not 3 <= len(name) <= 40 or not _NAME_RE.match(name):
        raise ConfigError(f"{where}: name must be 3-40 characters of letters, digits, '_', '-', '.'")
    where = f"{where} ({name})"
    roles = tuple(_str_list(c.get("roles", list(ROLES)), f"{where}: roles"))
    bad = [r for r in roles if r not in ROLES]
    if bad:
        raise ConfigError(f"{where}: unknown role(s) {bad}; roles are {list(ROLES)}")
    peers = tuple(p.rstrip("/") for p in _str_list(c.get("peers", []), f"{where}: peers"))
    for p in peers:
        if not p.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: peer {p!r} is not an http(s):// URL")
    members = _str_list(c.get("members", []), f"{where}: members")
    for m in members:
        if not _NODE_ID_RE.match(m):
            raise ConfigError(f"{where}: member {m!r} is not a node id (64 lowercase hex digits)")
    bucket = None
    if "bucket" in c:
        b = _table(c["bucket"], f"{where}: bucket")
        _no_unknown(b, {"bucket", "prefix", "endpoint_url", "region", "profile"}, f"{where}: bucket")
        if not isinstance(b.get("bucket"), str) or not b["bucket"]:
            raise ConfigError(f"{where}: bucket.bucket (the bucket's name) is required")
        for k in ("prefix", "endpoint_url", "region", "profile"):
            if k in b and not isinstance(b[k], str):
                raise ConfigError(f"{where}: bucket.{k} must be a string")
        bucket = BucketConfig(b["bucket"], b.get("prefix", ""), b.get("endpoint_url"), b.get("region"),
                              b.get("profile"))
    upload_all = c.get("upload_all", False)
    if not isinstance(upload_all, bool):
        raise ConfigError(f"{where}: upload_all must be true or false")
    if upload_all and (bucket is None or "upload" not in roles):
        raise ConfigError(f"{where}: upload_all needs a bucket and the upload role")
    return ChannelConfig(name, roles, peers, frozenset(members), bucket, upload_all)


def parse_size(value: Any, where: str) -> int:
    """50000000, "50G", "1.5 GiB" -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    m = _SIZE_RE.match(value) if isinstance(value, str) else None
    if not m:
        raise ConfigError(f"{where}: expected a size such as 50000000 or \"50G\", not {value!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _parse_listen(value: Any, where: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}: [node] peer_listen must look like \"0.0.0.0:20432\", not {value!r}")
    return host.strip("[]"), int(port)


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table")
    return value


def _str_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of strings")
    return value


def _no_unknown(table: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {unknown}; known: {sorted(known)}")

