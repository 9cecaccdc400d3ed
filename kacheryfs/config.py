"""The node's configuration: a TOML file naming channels, their peers and bucket, and this node's roles.

Default place: <storage>/kacheryfs.toml (`kacheryfs run --config PATH` for another). No file, or
no channel in it: a purely local node. Example:

    [node]
    peer_listen = "0.0.0.0:20432"      # optional: a second listener serving ONLY the peer API
    cache_max_bytes = "50G"            # optional: evict blobs that a peer or the bucket also holds
    fetch_connections = 4              # parallel chunk downloads per transfer
    status_token = "<16+ characters>"  # with --host other than loopback: the token that opens the
                                       # status page and /metrics (?token=... or Authorization: Bearer)
    network_gateway = false            # with --host other than loopback: serve GET /sha1/<hash>/<name>
    peer_serve_rate = "100M"           # optional: at most this many bytes per second to peers
    transfer_grace_seconds = 30        # a transfer nobody waits for stops after this (keeps its chunks)
    partial_max_bytes = "20G"          # partial/ beyond this: oldest abandoned transfers removed first
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
from typing import Annotated, Any

import msgspec

from kachery_client.errors import UsageError

ROLES = ("download", "upload", "serve")
CONFIG_NAME = "kacheryfs.toml"
# The one channel-name rule (the original's): 3-40 characters, dot-separated [A-Za-z0-9_-]+ parts.
CHANNEL_NAME_PATTERN = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
_CHANNEL_NAME_RE = re.compile(CHANNEL_NAME_PATTERN)
_NODE_ID_RE = re.compile(r"^[0-9a-f]{64}$")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)[iI]?[bB]?\s*$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def is_channel_name(name: Any) -> bool:
    return isinstance(name, str) and 3 <= len(name) <= 40 and _CHANNEL_NAME_RE.match(name) is not None


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
    status_token: str | None = None
    network_gateway: bool = False
    peer_serve_rate: int | None = None
    transfer_grace_seconds: float = 30.0
    partial_max_bytes: int = 20 << 30
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


# The file's shape, decoded strictly (msgspec: no bool for an int, unknown settings refused); the
# rules between settings are checked after, in parse_config.

class _BucketFile(msgspec.Struct, forbid_unknown_fields=True):
    bucket: str = ""
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None


class _ChannelFile(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    roles: list[str] = msgspec.field(default_factory=lambda: list(ROLES))
    peers: list[str] = msgspec.field(default_factory=list)
    members: list[str] = msgspec.field(default_factory=list)
    bucket: _BucketFile | None = None
    upload_all: bool = False


class _NodeFile(msgspec.Struct, forbid_unknown_fields=True):
    peer_listen: str | None = None
    cache_max_bytes: int | str | None = None
    fetch_connections: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    status_token: str | None = None
    network_gateway: bool = False
    peer_serve_rate: int | str | None = None
    transfer_grace_seconds: Annotated[float, msgspec.Meta(ge=0, le=86400)] = 30.0
    partial_max_bytes: int | str = 20 << 30
    numcopies: Annotated[int, msgspec.Meta(ge=0, le=100)] = 1
    group: str | None = None


class _ConfigFile(msgspec.Struct, forbid_unknown_fields=True):
    node: _NodeFile = msgspec.field(default_factory=_NodeFile)
    channel: list[_ChannelFile] = msgspec.field(default_factory=list)


_PLACE = re.compile(r" - at `\$\.?([^`]*)`$")


def _decode(raw: dict[str, Any], where: str) -> _ConfigFile:
    try:
        return msgspec.convert(raw, _ConfigFile)
    except msgspec.ValidationError as e:
        message = str(e).replace("Object contains unknown field", "unknown setting")
        m = _PLACE.search(message)
        if m:     # "$.channel[0].roles" -> "[[channel]] #1: roles"
            place = re.sub(r"^channel\[(\d+)\]\.?", lambda c: f"[[channel]] #{int(c.group(1)) + 1} ", m.group(1))
            place = re.sub(r"^node\.?", "[node] ", place).strip()
            message = f"{place or 'top level'}: {message[:m.start()]}"
        raise ConfigError(f"{where}: {message}") from None


def parse_config(raw: dict[str, Any], path: Path | None = None) -> NodeConfig:
    where = str(path) if path else "config"
    file = _decode(raw, where)
    channels = []
    seen = set()
    for i, c in enumerate(file.channel):
        ch = _parse_channel(c, f"{where}: [[channel]] #{i + 1}")
        if ch.name in seen:
            raise ConfigError(f"{where}: channel {ch.name!r} is defined twice")
        seen.add(ch.name)
        channels.append(ch)
    node = file.node
    cache = node.cache_max_bytes
    token = node.status_token
    if token is not None and not (len(token) >= 16 and token.isprintable()):
        raise ConfigError(f"{where}: [node] status_token must be a string of at least 16 characters")
    rate = node.peer_serve_rate
    grace = node.transfer_grace_seconds
    partial_max = parse_size(node.partial_max_bytes, f"{where}: [node] partial_max_bytes")
    if node.group is not None and not node.group:
        raise ConfigError(f"{where}: [node] group must be the name of a Unix group")
    return NodeConfig(
        channels=tuple(channels),
        peer_listen=_parse_listen(node.peer_listen, where) if node.peer_listen is not None else None,
        cache_max_bytes=parse_size(cache, f"{where}: [node] cache_max_bytes") if cache not in (None, 0) else None,
        fetch_connections=node.fetch_connections, status_token=token,
        network_gateway=node.network_gateway,
        peer_serve_rate=parse_size(rate, f"{where}: [node] peer_serve_rate") if rate is not None else None,
        transfer_grace_seconds=float(grace), partial_max_bytes=partial_max,
        numcopies=node.numcopies, group=node.group,
        path=path)


def _parse_channel(c: _ChannelFile, where: str) -> ChannelConfig:
    if not is_channel_name(c.name):
        raise ConfigError(f"{where}: name must be 3-40 characters of letters, digits, '_', '-', '.'")
    where = f"{where} ({c.name})"
    roles = tuple(c.roles)
    bad = [r for r in roles if r not in ROLES]
    if bad:
        raise ConfigError(f"{where}: unknown role(s) {bad}; roles are {list(ROLES)}")
    peers = tuple(p.rstrip("/") for p in c.peers)
    for p in peers:
        if not p.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: peer {p!r} is not an http(s):// URL")
    for m in c.members:
        if not _NODE_ID_RE.match(m):
            raise ConfigError(f"{where}: member {m!r} is not a node id (64 lowercase hex digits)")
    bucket = None
    if c.bucket is not None:
        b = c.bucket
        if not b.bucket:
            raise ConfigError(f"{where}: bucket.bucket (the bucket's name) is required")
        bucket = BucketConfig(b.bucket, b.prefix, b.endpoint_url, b.region, b.profile)
    if c.upload_all and (bucket is None or "upload" not in roles):
        raise ConfigError(f"{where}: upload_all needs a bucket and the upload role")
    return ChannelConfig(c.name, roles, peers, frozenset(c.members), bucket, c.upload_all)


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
