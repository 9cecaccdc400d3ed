"""Another kacheryfs node, over its peer API (kacheryfs/http/peer_routes.py), with signed requests."""

from __future__ import annotations

import json
import threading
from typing import Any

import requests
import urllib3

from kachery_client.uri import check_sha1
from kacheryfs.content.sources import RemoteBlob, Sink, SourceError, SourceRefused
from kacheryfs.security.keys import KeyPair
from kacheryfs.security.peer_auth import sign_request

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0           # between bytes, not for the whole range
BLOCK = 1 << 20


class PeerSource:
    kind = "peer"

    def __init__(self, base_url: str, channel: str, keys: KeyPair):
        self.base_url = base_url.rstrip("/")
        self.channel = channel
        self.keys = keys
        self.label = f"peer {self.base_url} (channel {channel})"
        self._local = threading.local()

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            s.trust_env = False            # peers are addressed directly, never through a proxy
            self._local.session = s
        return s

    def _request(self, method: str, path: str, body: bytes = b"", **kwargs: Any) -> requests.Response:
        headers = {**sign_request(self.keys, self.channel, method, path, body), **kwargs.pop("headers", {})}
        try:
            r = self._session().request(method, self.base_url + path, data=body or None, headers=headers,
                                        timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), **kwargs)
        except requests.RequestException as e:
            raise SourceError(f"{self.label}: {e.__class__.__name__}: {e}") from None
        if r.status_code == 403:
            raise SourceRefused(f"{self.label} refused this node: {r.text[:200]}")
        return r

    def post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A signed JSON request to the peer API (feeds and tasks use this too)."""
        r = self._request("POST", path, json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        if r.status_code != 200:
            raise SourceError(f"{self.label}: {path} answered HTTP {r.status_code}: {r.text[:200]}")
        try:
            out = r.json()
        except ValueError:
            raise SourceError(f"{self.label}: {path} answered with something that is not JSON") from None
        if not isinstance(out, dict):
            raise SourceError(f"{self.label}: {path} answered with a JSON {type(out).__name__}")
        return out

    def stat(self, sha1: str, need_manifest: bool = True) -> RemoteBlob | None:
        body: dict[str, Any] = {"sha1": check_sha1(sha1)}
        if not need_manifest:
            body["needManifest"] = False      # docs/PROTOCOL.md section 20
        out = self.post_json("/peer/stat", body)
        if not out.get("found"):
            return None
        size, manifest = out.get("size"), out.get("manifestSha1")
        if not isinstance(size, int) or size < 0 or not (manifest is None or isinstance(manifest, str)):
            raise SourceError(f"{self.label}: malformed stat answer")
        return RemoteBlob(size, check_sha1(manifest) if manifest else None)

    def read_range(self, sha1: str, start: int, end: int, sink: Sink) -> None:
        if end <= start:
            return
        r = self._request("GET", f"/peer/blob/{check_sha1(sha1)}", stream=True,
                          headers={"Range": f"bytes={start}-{end - 1}"})
        with r:
            if r.status_code == 404:
                raise SourceError(f"{self.label} no longer has sha1://{sha1}")
            if r.status_code != 206:
                raise SourceError(f"{self.label}: ranged read answered HTTP {r.status_code}")
            got = 0
            buf = bytearray(BLOCK)           # one buffer, filled in place: no allocation per block
            view = memoryview(buf)
            try:
                while got < end - start:
                    n = _fill(r.raw, view[:min(BLOCK, end - start - got)])
                    if n == 0:
                        break
                    sink(view[:n])
                    got += n
                if r.raw.read(1):
                    raise SourceError(f"{self.label} sent more bytes than asked for")
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
                raise SourceError(f"{self.label}: transfer broke: {e}") from None
        if got != end - start:
            raise SourceError(f"{self.label} sent {got} of {end - start} bytes")


def _fill(raw: Any, view: memoryview) -> int:
    """Read into `view` until it is full or the body ends; the number of bytes read."""
    filled = 0
    while filled < len(view):
        n = raw.readinto(view[filled:])
        if not n:
            break
        filled += n
    return filled
