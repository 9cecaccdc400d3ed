"""The only module that speaks HTTP to the node (docs/PROTOCOL.md sections 1-4).

Connection errors, HTTP statuses and error frames are mapped here, once, to kachery_client.errors.
One requests.Session per NodeClient keeps connections alive between calls. Notices of blobs a
client added to the node's storage directory itself go in the background (announcer.py).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import requests

from .announcer import Announcer
from .config import AUTH_HEADER, Config
from .errors import (
    AuthError,
    IntegrityError,
    KacheryError,
    LocalStorageError,
    NodeError,
    NodeUnavailableError,
    NotFoundError,
    TransferError,
)
from .store import StoredBlob
from .uri import FileURI

log = logging.getLogger(__name__)
PROBE_CACHE_SECONDS = 10.0
# The node's error kinds (HTTP error bodies, /store failures, /loadFile error frames; docs/PROTOCOL.md
# section 15) -> our errors. Anything else is a NodeError.
KIND_ERRORS: dict[str, type[KacheryError]] = {
    "auth": AuthError, "not-found": NotFoundError, "integrity": IntegrityError,
    "source-failed": TransferError, "local-storage": LocalStorageError,
}
AUTH_CACHE_SECONDS = 60.0
ProgressFn = Callable[[int, int, str | None], None]       # (bytes loaded, bytes total, source)


@dataclass(frozen=True)
class ProbeInfo:
    node_id: str
    storage_dir: Path | None


class NodeClient:
    def __init__(self, config: Config):
        self.config = config
        self.url = config.daemon_url
        self._session = requests.Session()
        if config.daemon_host in ("localhost", "127.0.0.1", "::1"):
            # A local node is reached directly; this also skips requests' scan of the whole
            # environment for proxy settings, which costs ~0.5 ms per call.
            self._session.trust_env = False
        self._probe: tuple[float, ProbeInfo] | None = None
        self._auth: tuple[float, str] | None = None
        self._announcer: Announcer | None = None
        self._shared: tuple[float, Path, str] | None = None      # (checked at, dir, node id)

    # ---- discovery and auth -------------------------------------------------------------

    def probe(self) -> ProbeInfo:
        """GET /probe (no auth), cached briefly. Raises NodeUnavailableError if nothing answers."""
        now = time.monotonic()
        if self._probe and now - self._probe[0] < PROBE_CACHE_SECONDS:
            return self._probe[1]
        try:
            r = self._session.get(self.url + "/probe", timeout=10)
        except requests.RequestException:
            raise NodeUnavailableError(
                f"no kachery node answers at {self.url}: start one with `kacheryfs run`, or set "
                "KACHERY_OFFLINE_STORAGE_DIR to use a storage directory without a node") from None
        if r.status_code != 200:
            raise NodeError(f"the node at {self.url} answered /probe with HTTP {r.status_code}")
        try:
            obj = r.json()
        except ValueError:
            raise NodeError(f"what answers at {self.url} is not a kachery node (/probe is not JSON)") from None
        storage = obj.get("kacheryStorageDir")
        info = ProbeInfo(node_id=str(obj.get("nodeId", "")), storage_dir=Path(storage) if storage else None)
        self._probe = (now, info)
        return info

    def storage_dir(self) -> Path | None:
        """The node's storage dir as this client sees it (KACHERY_STORAGE_DIR overrides the probe)."""
        return self.config.storage_dir or self.probe().storage_dir

    def shared_storage_dir(self) -> Path | None:
        """The storage dir if this client can see the node's own (kachery-node-id matches), else None.

        Once seen, it is kept: stores into it need no probe, and they go on while the node
        restarts (the same storage dir keeps its node id; notices wait for the node, announcer.py)."""
        if self._shared is not None:
            if time.monotonic() - self._shared[0] < PROBE_CACHE_SECONDS:
                return self._shared[1]
            try:
                self.probe()
            except NodeUnavailableError:
                if _node_id_at(self._shared[1]) == self._shared[2]:
                    # The node is away; its storage dir is still ours. Probe again in a while.
                    self._shared = (time.monotonic(), self._shared[1], self._shared[2])
                    return self._shared[1]
                raise
        d = self.storage_dir()
        if d is None:
            return None
        node_id = self.probe().node_id
        if _node_id_at(d) != node_id:
            return None
        self._shared = (time.monotonic(), d, node_id)
        return d

    def _auth_code(self, refresh: bool = False) -> str:
        if self.config.client_auth_code:
            return self.config.client_auth_code
        now = time.monotonic()
        if not refresh and self._auth and now - self._auth[0] < AUTH_CACHE_SECONDS:
            return self._auth[1]
        d = self.storage_dir()
        path = (d / "client-auth") if d else None
        try:
            code = path.read_text() if path else ""
        except PermissionError as e:
            raise AuthError(f"cannot read the client auth file {path}: {e.strerror}{_group_hint(path)}") from None
        except OSError as e:
            raise AuthError(f"cannot read the node's client auth code from {path} ({e.strerror}). "
                            + _AUTH_HINT) from None
        if not code:
            raise AuthError(f"no client auth code in {path} (is the node running?). " + _AUTH_HINT)
        self._auth = (now, code)
        return code

    # ---- requests -----------------------------------------------------------------------

    def _request(self, path: str, *, stream: bool = False, **kwargs: Any) -> requests.Response:
        self.probe()
        for attempt in (0, 1):
            headers = dict(kwargs.pop("headers", None) or {})
            headers[AUTH_HEADER] = self._auth_code(refresh=attempt == 1)
            try:
                r = self._session.post(self.url + path, headers=headers, stream=stream, **kwargs)
            except requests.RequestException as e:
                raise NodeUnavailableError(f"lost the connection to the node at {self.url} ({_reason(e)})") from None
            if r.status_code == 403 and attempt == 0 and "data" not in kwargs:
                continue        # the code may have rotated: re-read it once
            break
        return _checked_status(r, path, "the node refused our client auth code")

    def post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = self._request(path, json=body)
        try:
            obj = r.json()
        except ValueError:
            raise NodeError(f"{path}: the node answered with something that is not JSON") from None
        if not isinstance(obj, dict):
            raise NodeError(f"{path}: expected a JSON object")
        return obj

    # ---- URLs the node handed out (task results: the token is in the URL, no auth header) --

    def get_url(self, url: str) -> bytes:
        return self._plain("GET", url).content

    def put_url(self, url: str, data: bytes) -> None:
        self._plain("PUT", url, data=data, headers={"Content-Type": "application/octet-stream"})

    def _plain(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        try:
            r = self._session.request(method, url, **kwargs)
        except requests.RequestException as e:
            raise NodeUnavailableError(f"{method} {url.split('?')[0]}: {_reason(e)}") from None
        what = f"{method} {url.split('?')[0]}"
        return _checked_status(r, what, what)

    # ---- files --------------------------------------------------------------------------

    def store_stream(self, f: IO[bytes], size: int, name: str | None = None) -> StoredBlob:
        headers = {"Content-Length": str(size)}
        if name:
            headers["X-Kachery-Name"] = name
        obj = self._checked(self._request("/store", data=f, headers=headers).json(), "/store")
        return StoredBlob(obj["sha1"], size, obj.get("manifestSha1"))

    def notify_added(self, sha1: str, name: str | None = None, manifest_sha1: str | None = None) -> None:
        """Tell the node about a blob this process added to its storage directory: in the
        background, batched, retried while the node is away (no request per store)."""
        if self._announcer is None:
            self._announcer = Announcer(NodeClient(self.config))
        self._announcer.add({"sha1": sha1, "name": name, "manifestSha1": manifest_sha1})

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the node has been told about every blob added so far. False on timeout."""
        return self._announcer is None or self._announcer.flush(timeout)

    def link_file(self, path: str, size: int, mtime: float) -> StoredBlob:
        obj = self._checked(self.post_json("/linkFile", {"localFilePath": path, "size": size, "mtime": mtime}),
                            "/linkFile")
        return StoredBlob(obj["sha1"], size, obj.get("manifestSha1"))

    def load_file(self, uri: FileURI, progress: ProgressFn | None = None) -> str:
        """Ask the node to make the blob local (fetching it if it must); returns the node's path."""
        file_key: dict[str, Any] = {"sha1": uri.sha1}
        if uri.manifest_sha1:
            file_key["manifestSha1"] = uri.manifest_sha1
        body: dict[str, Any] = {"fileKey": file_key}
        if uri.name and uri.name != uri.sha1:
            body["name"] = uri.name             # ours: the node lists it under sha1/<hash>/
        r = self._request("/loadFile", json=body, stream=True)
        with r:
            for frame in iter_frames(r.raw):
                kind = frame.get("type")
                if kind == "progress" and progress:
                    progress(int(frame.get("bytesLoaded", 0)), int(frame.get("bytesTotal", 0)),
                             frame.get("source") if isinstance(frame.get("source"), str) else None)
                elif kind == "finished":
                    return str(frame["localFilePath"])
                elif kind == "error":
                    raise frame_error(frame, uri.sha1)
        raise NodeError(f"the node ended /loadFile for sha1://{uri.sha1} without an answer")

    def download(self, sha1: str, start: int | None = None, end: int | None = None,
                 clamp_end: bool = False) -> Iterator[bytes]:
        body: dict[str, Any] = {"fileKey": {"sha1": sha1}}
        if start is not None and end is not None:
            body["startByte"], body["endByte"] = start, end
            if clamp_end:
                body["clampEnd"] = True
        with self.post_stream("/downloadFileData", body) as r:
            yield from body_blocks(r, f"sha1://{sha1}")

    def post_stream(self, path: str, body: dict[str, Any]) -> requests.Response:
        """POST a JSON body; the answer's body is read by the caller (body_blocks), who closes it."""
        return self._request(path, json=body, stream=True)

    @staticmethod
    def _checked(obj: dict[str, Any], path: str) -> dict[str, Any]:
        if not obj.get("success"):
            error = KIND_ERRORS.get(str(obj.get("kind")), NodeError)
            raise error(f"the node refused {path}: {obj.get('error') or 'no reason given'}")
        return obj


def _node_id_at(storage_dir: Path) -> str | None:
    try:
        return (storage_dir / "kachery-node-id").read_text()
    except OSError:
        return None


def iter_frames(raw: IO[bytes]) -> Iterator[dict[str, Any]]:
    """Parse the /loadFile stream: <decimal byte length>#<JSON>, repeated (docs/PROTOCOL.md 4.3)."""
    while True:
        header = bytearray()
        while True:
            c = raw.read(1)
            if not c:
                if header.strip():
                    raise NodeError("truncated /loadFile frame header")
                return
            if c == b"#":
                break
            header += c
            if len(header) > 20:
                raise NodeError("malformed /loadFile frame header")
        try:
            n = int(header.decode().strip())
        except ValueError:
            raise NodeError(f"malformed /loadFile frame length {bytes(header)!r}") from None
        body = b""
        while len(body) < n:
            more = raw.read(n - len(body))
            if not more:
                raise NodeError("truncated /loadFile frame")
            body += more
        frame = json.loads(body)
        if not isinstance(frame, dict):
            raise NodeError("malformed /loadFile frame")
        yield frame


_STATUS_ERRORS: dict[int, type[KacheryError]] = {404: NotFoundError, 502: TransferError, 507: LocalStorageError}
_AUTH_HINT = ("On a machine other than the node's, set KACHERY_CLIENT_AUTH_CODE to a code the node's "
              "operator issued (README: \"Clients on a second workstation\").")


def frame_error(frame: dict[str, Any], sha1: str) -> KacheryError:
    """An error frame of /loadFile as our error: by its kind (ours, docs/PROTOCOL.md section 15), with
    the node's reason ("detail" when there is one, section 17.1); a frame without a kind (the original daemon) only ever meant "not found"."""
    kind = frame.get("kind")
    text = str(frame.get("detail") or frame.get("error") or "no reason given")
    if sha1 not in text:
        text = f"sha1://{sha1}: {text}"
    return (NotFoundError if kind is None else KIND_ERRORS.get(str(kind), NodeError))(text)


def body_blocks(r: requests.Response, what: str) -> Iterator[bytes]:
    """A streamed answer's body in blocks of up to 1 MiB; a connection lost mid-body (a short body
    included: urllib3 checks Content-Length) is a NodeUnavailableError, not requests' internals."""
    try:
        yield from r.iter_content(1024 * 1024)
    except requests.RequestException as e:
        raise NodeUnavailableError(f"{what}: lost the connection to the node at {r.url.rsplit('/', 1)[0]} "
                                   f"mid-answer ({_reason(e)})") from None


def _reason(e: requests.RequestException) -> str:
    """A connection failure in a few words, not requests' and urllib3's nested reprs."""
    if isinstance(e, requests.Timeout):
        return "no answer in time"
    text = str(e)
    for words in ("Connection refused", "Connection reset", "Name or service not known", "No route to host",
                  "Remote end closed connection", "timed out"):
        if words in text:
            return words.lower()
    return type(e).__name__


def _checked_status(r: requests.Response, what: str, refused: str) -> requests.Response:
    """HTTP statuses -> our errors, once: 403 AuthError, then the error kind the node sent (docs/PROTOCOL.md
    section 15), else by status: 404 NotFoundError, 502 TransferError, 507 LocalStorageError, other
    non-200 NodeError. The message is the node's reason (no status code for its own errors, no raw JSON)."""
    if r.status_code == 403:
        raise AuthError(f"{refused}: {_error_text(r)}")
    if r.status_code == 404:
        raise NotFoundError(_error_text(r))
    if r.status_code != 200:
        error = KIND_ERRORS.get(_error_kind(r), _STATUS_ERRORS.get(r.status_code, NodeError))
        raise error(_error_text(r) if r.status_code in (400, 500, 502, 507)
                    else f"{what}: HTTP {r.status_code}: {_error_text(r)}")
    return r


def _error_kind(r: requests.Response) -> str:
    try:
        obj = r.json()
    except ValueError:
        return ""
    return str(obj.get("kind", "")) if isinstance(obj, dict) else ""


def _error_text(r: requests.Response) -> str:
    try:
        obj = r.json()
        if isinstance(obj, dict) and obj.get("error"):
            return str(obj["error"])
    except ValueError:
        pass
    return r.text.strip()[:500] or f"HTTP {r.status_code}"


def _group_hint(path: Path | None) -> str:
    """For a storage directory shared with a Unix group (`kacheryfs run --group`): name the group."""
    import grp
    for p in (path, path.parent) if path is not None else ():
        try:
            gid = os.stat(p).st_gid
        except OSError:
            continue
        if gid != 0 and gid not in os.getgroups() and gid != os.getgid():
            try:
                name = grp.getgrgid(gid).gr_name
            except KeyError:
                name = str(gid)
            return f" (this node's storage is shared with the Unix group {name!r}, and this user is not in it)"
    return ""


def is_writable_dir(path: Path) -> bool:
    return os.access(path, os.W_OK | os.X_OK)


__all__ = ["NodeClient", "ProbeInfo", "iter_frames", "KacheryError"]
