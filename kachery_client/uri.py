"""Parse and format kachery URIs (docs/PROTOCOL.md section 6). Pure: no I/O.

    sha1://<40 hex>[/<name>][?manifest=<40 hex>][&chunkOf=<parent>~<start>~<end>]
    feed://<64 hex>[/<subfeed name, percent-encoded>]

We are stricter than the original client about what we accept, and say why in the error:
a hash must be 40 hex digits, and the name part may never contain empty, `.` or `..`
segments, backslashes or control characters, so that a name taken from a URI can be used
as a file name (in the mount, for `dest=`) without escaping its directory.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from .errors import InvalidHashError, InvalidURIError

SHA1_RE = re.compile(r"^[0-9a-f]{40}$")
FEED_ID_RE = re.compile(r"^[0-9a-f]{64}$")
_HEX_RE = re.compile(r"^[0-9a-fA-F]+$")
MAX_URI_LENGTH = 8192


def check_sha1(value: str, what: str = "hash") -> str:
    """Return `value` lowercased if it is 40 hex digits, else raise InvalidHashError."""
    if not isinstance(value, str) or len(value) != 40 or not _HEX_RE.match(value):
        raise InvalidHashError(f"invalid {what} {value!r}: expected 40 hexadecimal digits")
    return value.lower()


def is_sha1(value: object) -> bool:
    return isinstance(value, str) and SHA1_RE.match(value) is not None


@dataclass(frozen=True)
class ChunkOf:
    parent_sha1: str
    start: int
    end: int


@dataclass(frozen=True)
class FileURI:
    sha1: str
    name: str = ""                     # informational path after the hash, may be empty
    manifest_sha1: str | None = None
    chunk_of: ChunkOf | None = None

    @property
    def basename(self) -> str:
        """Last segment of the name, or the hash when the URI names nothing."""
        return self.name.rsplit("/", 1)[-1] if self.name else self.sha1

    def __str__(self) -> str:
        return format_file_uri(self.sha1, self.name, manifest_sha1=self.manifest_sha1,
                               chunk_of=self.chunk_of)


def check_name(name: str) -> str:
    """Validate the name part of a URI (possibly several `/`-separated segments)."""
    if name == "":
        return name
    for segment in name.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidURIError(f"invalid name {name!r}: empty, '.' and '..' segments are not allowed")
        if "\\" in segment or any(ord(c) < 32 or ord(c) == 127 for c in segment):
            raise InvalidURIError(f"invalid name {name!r}: backslashes and control characters are not allowed")
        if len(segment.encode()) > 255:
            raise InvalidURIError(f"invalid name {name!r}: a segment is longer than 255 bytes")
    return name


def is_file_uri(value: str) -> bool:
    """True for strings that look like kachery file URIs (the original's test: prefix sha1://)."""
    return isinstance(value, str) and value.startswith("sha1://")


def parse_file_uri(uri: str) -> FileURI:
    if not isinstance(uri, str):
        raise InvalidURIError(f"a kachery URI must be a string, not {type(uri).__name__}")
    if uri == "":
        raise InvalidURIError("empty URI")
    if len(uri) > MAX_URI_LENGTH:
        raise InvalidURIError(f"URI longer than {MAX_URI_LENGTH} characters")
    if not uri.startswith("sha1://"):
        scheme = uri.split("://", 1)[0] if "://" in uri else None
        if scheme is None:
            raise InvalidURIError(f"not a kachery URI: {uri!r} (expected sha1://<hash>/<name>)")
        raise InvalidURIError(f"unsupported URI scheme {scheme!r} in {uri!r}: only sha1:// is supported")
    rest, _, query = uri[len("sha1://"):].partition("?")
    hash_part, _, name = rest.partition("/")
    # The original tolerates sha1://<hash>.json: the hash is cut at the first '.'.
    hash_part = hash_part.split(".", 1)[0]
    sha1 = check_sha1(hash_part, "hash in URI")
    check_name(name)
    params = urllib.parse.parse_qs(query.split("?", 1)[0], keep_blank_values=True)
    manifest = params.get("manifest", [None])[0]
    if manifest is not None:
        manifest = check_sha1(manifest, "manifest hash in URI")
    chunk_of = None
    if "chunkOf" in params:
        chunk_of = _parse_chunk_of(params["chunkOf"][0])
    return FileURI(sha1=sha1, name=name, manifest_sha1=manifest, chunk_of=chunk_of)


def _parse_chunk_of(value: str) -> ChunkOf:
    parts = value.split("~")
    if len(parts) != 3:
        raise InvalidURIError(f"invalid chunkOf {value!r}: expected <sha1>~<start>~<end>")
    parent = check_sha1(parts[0], "chunkOf parent hash")
    try:
        start, end = int(parts[1]), int(parts[2])
    except ValueError:
        raise InvalidURIError(f"invalid chunkOf {value!r}: start and end must be integers") from None
    if start < 0 or end < start:
        raise InvalidURIError(f"invalid chunkOf {value!r}: need 0 <= start <= end")
    return ChunkOf(parent, start, end)


def format_file_uri(sha1: str, name: str = "", *, manifest_sha1: str | None = None,
                    chunk_of: ChunkOf | None = None) -> str:
    uri = f"sha1://{sha1}"
    if name:
        uri += f"/{name}"
    query = []
    if manifest_sha1:
        query.append(f"manifest={manifest_sha1}")
    if chunk_of:
        query.append(f"chunkOf={chunk_of.parent_sha1}~{chunk_of.start}~{chunk_of.end}")
    if query:
        uri += "?" + "&".join(query)
    return uri


# ---- feeds (docs/PROTOCOL.md 6.2) -------------------------------------------------------------

@dataclass(frozen=True)
class FeedURI:
    feed_id: str
    subfeed_name: str | None = None


def parse_feed_uri(uri: str) -> FeedURI:
    if not isinstance(uri, str) or uri == "":
        raise InvalidURIError("empty feed URI")
    if "://" not in uri:
        uri = "feed://" + uri
    if not uri.startswith("feed://"):
        raise InvalidURIError(f"not a feed URI: {uri!r} (expected feed://<feed id>)")
    rest = uri[len("feed://"):].split("?", 1)[0]
    feed_id, _, name = rest.partition("/")
    if not FEED_ID_RE.match(feed_id.lower()):
        raise InvalidURIError(f"invalid feed id {feed_id!r}: expected 64 hexadecimal digits")
    return FeedURI(feed_id.lower(), urllib.parse.unquote(name) if name else None)


def format_feed_uri(feed_id: str, subfeed_name: str | None = None) -> str:
    uri = f"feed://{feed_id}"
    if subfeed_name is not None:
        uri += "/" + urllib.parse.quote(subfeed_name, safe="/")
    return uri
