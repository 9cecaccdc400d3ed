"""Typed schemas (msgspec Structs) of every JSON body the node accepts, and the one decoder.

`decode(raw, Schema)` is the only way a JSON request body reaches a handler:

* strict types: no bool for an int, no float for an int (`3.0` is refused), no NaN or infinity
  (JSON has no literal for them; a number too large for a double is "out of range");
* bounded: bodies up to MAX_BODY bytes, nesting at most MAX_DEPTH levels deep (checked on the raw
  bytes before decoding, so a few thousand `[` never reach a recursive decoder, nor the handlers'
  canonical JSON), lists and maps by their Meta bounds. Measured with msgspec 0.23: 500 levels
  decode, 1,000 and more raise RecursionError, in `Any` fields and in unknown (skipped) fields
  alike; the pre-scan makes that unreachable;
* unknown fields are ignored (docs/PROTOCOL.md section 3: the original's refusal was defect 14).

A body that fails raises `SchemaError` (a UsageError: HTTP 400) whose message names the field:
"invalid channel name: Expected `str` matching regex ... - at `$.channelName`".

msgspec was chosen over pydantic: it is strict by default (the rules above need no custom
validators), decodes straight from bytes in one pass, and measured about as fast as `json.loads`
on a 10,000-message body (4.0 ms vs 4.2 ms), i.e. the typed checks cost nothing extra.
"""

from __future__ import annotations

import re
from itertools import accumulate
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta, Struct

from kachery_client.errors import UsageError
from kacheryfs.config import CHANNEL_NAME_PATTERN

MAX_BODY = 256 * 1024 * 1024          # the original's 100 kB limit was a defect (8)
MAX_DEPTH = 64                        # JSON nesting levels; deeper bodies are refused before decoding
MAX_ITEMS = 1_000_000                 # entries of any list in a body
MAX_MSEC = 24 * 3600 * 1000.0         # any timeout or wait: a day at most (handlers cap it lower)

T = TypeVar("T")


class SchemaError(UsageError):
    """A request body that does not fit its schema (HTTP 400)."""


# ---- field types ----------------------------------------------------------------------------

Sha1 = Annotated[str, Meta(pattern="^[0-9a-fA-F]{40}$")]
FeedId = Annotated[str, Meta(pattern="^[0-9a-fA-F]{64}$")]
SubfeedHash = Annotated[str, Meta(pattern="^[0-9a-fA-F]{40}$")]
ChannelName = Annotated[str, Meta(min_length=3, max_length=40, pattern=CHANNEL_NAME_PATTERN)]
FunctionId = Annotated[str, Meta(min_length=1, max_length=400, pattern=r"^[A-Za-z0-9@_-]+(\.[A-Za-z0-9@_-]+)*$")]
FunctionType = Literal["pure-calculation", "query", "action"]
NonNegInt = Annotated[int, Meta(ge=0, le=2**63 - 1)]
Msec = Annotated[float, Meta(ge=0, le=MAX_MSEC)]          # ints are accepted, bools and NaN are not
ShortStr = Annotated[str, Meta(max_length=1000)]
FilePath = Annotated[str, Meta(min_length=1, max_length=4096)]
Nonce = Annotated[str, Meta(pattern="^[0-9a-f]{32}$")]


def _not_null(value: Any, what: str) -> None:
    if value is None:
        raise ValueError(f"a mutable {what} may not be null")


# ---- the client API (docs/PROTOCOL.md section 4, and 14.2) ------------------------------------

class AnyObject(Struct):
    """A route that reads nothing from its body (it must still be a JSON object)."""


class ChunkOf(Struct):
    fileKey: ParentKey
    startByte: NonNegInt
    endByte: NonNegInt

    def __post_init__(self) -> None:
        if self.endByte < self.startByte:
            raise ValueError("endByte is before startByte")


class ParentKey(Struct):
    sha1: Sha1


class FileKey(Struct):
    sha1: Sha1
    manifestSha1: Sha1 | None = None
    chunkOf: ChunkOf | None = None


class LoadFile(Struct):
    fileKey: FileKey
    channelName: ChannelName | None = None
    name: Any = None                 # ours: the name of the URI asked with (a hint; a bad one is ignored)


class DownloadFileData(Struct):
    fileKey: FileKey
    startByte: NonNegInt | None = None
    endByte: NonNegInt | None = None
    clampEnd: bool = False           # ours: an end past the file's size is cut to it
    follow: bool = False             # ours: wait for the range as long as its transfer runs (17.4)
    name: Any = None                 # ours: as in LoadFile


# ---- stored data (ours, docs/PROTOCOL.md section 19; handlers in data_routes.py) ------------

UriText = Annotated[str, Meta(min_length=1, max_length=8192)]     # a sha1:// URI or a bare hash
Days = Annotated[float, Meta(ge=0, le=1e6)]


class Uris(Struct):
    uris: Annotated[list[UriText], Meta(min_length=1, max_length=10_000)]


class OneUri(Struct):
    uri: UriText


class Drop(Struct):
    uri: UriText
    force: bool = False


class Gc(Struct):
    targetBytes: NonNegInt = 0
    olderThanDays: Days | None = None
    dryRun: bool = False


class Verify(Struct):
    repair: bool = False


class LinkFile(Struct):
    localFilePath: FilePath
    size: NonNegInt
    mtime: Annotated[float, Meta(ge=-1e12, le=1e12)]


class AddedNotice(Struct):
    sha1: Sha1
    name: FilePath | None = None
    manifestSha1: Sha1 | None = None


class Added(Struct):
    """{"blobs": [notice, ...]} or one notice {"sha1", "name", "manifestSha1"}."""
    blobs: Annotated[list[AddedNotice], Meta(max_length=100_000)] | None = None
    sha1: Sha1 | None = None
    name: FilePath | None = None
    manifestSha1: Sha1 | None = None

    def notices(self) -> list[AddedNotice]:
        if self.blobs is not None:
            return self.blobs
        assert self.sha1 is not None
        return [AddedNotice(self.sha1, self.name, self.manifestSha1)]

    def __post_init__(self) -> None:
        if self.blobs is None and self.sha1 is None:
            raise ValueError("expected a list `blobs` or one blob's `sha1`")


class Upload(Struct):
    sha1: Sha1
    channel: ChannelName


class MutableKey(Struct):
    key: Any = None

    def __post_init__(self) -> None:
        _not_null(self.key, "key")


class MutableSet(Struct):
    key: Any = None
    value: Any = None
    update: bool = True

    def __post_init__(self) -> None:
        _not_null(self.key, "key")
        _not_null(self.value, "value")


# ---- feeds (4.6) ---------------------------------------------------------------------------

class CreateFeed(Struct):
    feedName: Annotated[str, Meta(min_length=1, max_length=100)] | None = None


class FeedName(Struct):
    feedName: ShortStr


class FeedRef(Struct):
    feedId: FeedId


class SubfeedRef(Struct):
    feedId: FeedId
    subfeedHash: SubfeedHash


class AppendMessages(Struct):
    feedId: FeedId
    subfeedHash: SubfeedHash
    messages: Annotated[list[dict[str, Any]], Meta(max_length=MAX_ITEMS)]


class SubfeedWatch(Struct):
    feedId: FeedId
    subfeedHash: SubfeedHash
    position: NonNegInt = 0
    channelName: ShortStr | None = None        # accepted and ignored ("*local*" from client 1.2.0)


class WatchForNewMessages(Struct):
    subfeedWatches: Annotated[dict[ShortStr, SubfeedWatch], Meta(max_length=1000)]
    waitMsec: Msec = 0
    signed: bool = False
    maxNumMessages: NonNegInt = 0


# ---- tasks (section 10) ----------------------------------------------------------------------

class TaskFunction(Struct):
    channelName: ChannelName
    taskFunctionId: FunctionId
    taskFunctionType: FunctionType


class RegisterTaskFunctions(Struct):
    taskFunctions: Annotated[list[TaskFunction], Meta(max_length=10_000)]
    backendId: ShortStr | None = None
    backendSessionId: ShortStr | None = None
    timeoutMsec: Msec | None = None


class RequestTask(Struct):
    channelName: ChannelName
    taskFunctionId: FunctionId
    taskFunctionType: FunctionType
    taskKwargs: dict[str, Any]
    backendId: ShortStr | None = None
    timeoutMsec: Msec | None = None


class WaitForTaskResult(Struct):
    channelName: ChannelName
    taskId: ShortStr
    timeoutMsec: Msec | None = None            # taskResultUrl and taskFunctionType are ignored


class UpdateTaskStatus(Struct):
    channelName: ChannelName
    taskId: ShortStr
    status: ShortStr
    errorMessage: str | None = None
    resultJson: str | None = None              # ours: the result's JSON text with `finished`


class CreateTaskResultUploadUrl(Struct):
    channelName: ChannelName
    taskId: Sha1
    size: NonNegInt


# ---- the peer API (section 14.1) -------------------------------------------------------------

class PeerStat(Struct):
    sha1: Sha1
    needManifest: bool = True          # False: the asker has the manifest (docs/PROTOCOL.md section 20)


class PeerFeedMessages(Struct):
    feedId: FeedId
    subfeedHash: SubfeedHash
    position: NonNegInt = 0
    waitMsec: Msec = 0


class PeerTaskRequest(Struct):
    functionId: FunctionId
    functionType: FunctionType
    kwargs: dict[str, Any]
    nonce: Nonce                               # one-time: a replayed request is refused
    timeoutMsec: Msec = 0


class PeerTaskWait(Struct):
    taskId: ShortStr
    taskHash: Sha1
    functionType: FunctionType
    timeoutMsec: Msec = 0


# ---- decoding ------------------------------------------------------------------------------

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_DEPTH_STEP = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")
_NOT_BRACKET = re.compile(rb"[^\[\]{}]")


def json_depth(raw: bytes) -> int:
    """How deeply the JSON text nests (brackets inside strings do not count). Cheap when the body
    has few brackets; a linear scan otherwise."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return MAX_DEPTH
    brackets = _NOT_BRACKET.sub(b"", _STRINGS.sub(b"", raw)).translate(_DEPTH_STEP)
    return max(accumulate(brackets, lambda depth, step: depth + step - 1, initial=0))


async def read_body(request: Any, max_bytes: int = MAX_BODY) -> bytes:
    """A request's body, refused (SchemaError) as soon as it is known to exceed `max_bytes`:
    by its Content-Length before reading, or while it streams in."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise SchemaError(f"request body too large ({declared} bytes; at most {max_bytes})")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise SchemaError(f"request body too large (more than {max_bytes} bytes)")
    return bytes(body)


def check_size_and_depth(raw: bytes, max_bytes: int = MAX_BODY) -> None:
    if len(raw) > max_bytes:
        raise SchemaError(f"request body too large ({len(raw)} bytes; at most {max_bytes})")
    if json_depth(raw) > MAX_DEPTH:
        raise SchemaError(f"request body nests deeper than {MAX_DEPTH} levels")


def decode(raw: bytes, schema: type[T], max_bytes: int = MAX_BODY) -> T:
    """The body as `schema`, or SchemaError naming the field. An empty body is `{}`."""
    check_size_and_depth(raw, max_bytes)
    try:
        return msgspec.json.decode(raw or b"{}", type=schema)
    except msgspec.ValidationError as e:
        raise SchemaError(_describe(str(e))) from None
    except msgspec.DecodeError as e:
        raise SchemaError(f"request body is not JSON: {e}") from None
    except RecursionError:            # unreachable after the depth check; kept as a last fence
        raise SchemaError("request body nests too deeply") from None


_AT = re.compile(r" - at `\$(?:[^`]*\.)?([A-Za-z]+)(?:\[[^`]*\])?`$")
_WORD = re.compile(r"(?<=[a-z])(?=[A-Z])")


def _describe(message: str) -> str:
    """msgspec's message, led by the field in words: "invalid channel name: Expected ..."."""
    message = message.replace("Expected `object`", "Expected a JSON object")
    m = _AT.search(message)
    if m is None:
        return f"invalid request body: {message}"
    return f"invalid {_WORD.sub(' ', m.group(1)).lower()}: {message}"


JsonObject: Any = dict[str, Any]           # for a body that is decoded in two steps (/loadFile)


def convert(obj: Any, schema: type[T]) -> T:
    """An already decoded JSON value as `schema` (same strict rules and messages as decode)."""
    try:
        return msgspec.convert(obj, schema)
    except msgspec.ValidationError as e:
        raise SchemaError(_describe(str(e))) from None
