"""Signed URLs for task results: where a backend may PUT a result, and where a requester may GET it.

Both are paths on this node (docs/PROTOCOL.md section 10) carrying an HMAC made with a key
derived from the node's private key, so they stay valid across restarts and cannot be forged:
    PUT  /taskResults/<channel>/aa/bb/cc/<task hash>?kind=&size=&expires=&signature=
    GET  /taskResults/<channel>/aa/bb/cc/<task hash>?token=
"""

from __future__ import annotations

import hashlib
import hmac
import time

from kachery_client.errors import AuthError

RESULT_PATH_PREFIX = "/taskResults/"
UPLOAD_URL_SECONDS = 3600


def url_secret(node_seed: bytes) -> bytes:
    """The HMAC key for result URLs, derived from the node's private key (stable across restarts)."""
    return hashlib.sha256(b"kacheryfs task result urls\0" + node_seed).digest()


def result_path(channel: str, task_hash: str) -> str:
    h = task_hash
    return f"{RESULT_PATH_PREFIX}{channel}/{h[0:2]}/{h[2:4]}/{h[4:6]}/{h}"


class ResultUrls:
    def __init__(self, secret: bytes):
        self._secret = secret

    def upload_url(self, base_url: str, channel: str, task_hash: str, kind: str, size: int) -> str:
        """A URL where the holder may PUT the result (signed: kind, size, expiry)."""
        expires = int(time.time()) + UPLOAD_URL_SECONDS
        signature = self._sign("put", channel, task_hash, kind, str(size), str(expires))
        return (f"{base_url}{result_path(channel, task_hash)}?kind={kind}&size={size}&expires={expires}"
                f"&signature={signature}")

    def check_upload(self, channel: str, task_hash: str, params: dict[str, str]) -> tuple[str, int]:
        """(kind, size) of a signed upload URL's query parameters; AuthError unless genuine."""
        kind, size, expires = params.get("kind", ""), params.get("size", ""), params.get("expires", "")
        expected = self._sign("put", channel, task_hash, kind, size, expires)
        if not hmac.compare_digest(expected, params.get("signature", "")):
            raise AuthError("invalid task result upload signature")
        if not expires.isdigit() or int(expires) < time.time():
            raise AuthError("this task result upload URL has expired")
        return kind, int(size)

    def read_url(self, base_url: str, channel: str, task_hash: str) -> str:
        return f"{base_url}{result_path(channel, task_hash)}?token={self._sign('read', channel, task_hash)}"

    def check_read(self, channel: str, task_hash: str, token: str) -> None:
        if not hmac.compare_digest(self._sign("read", channel, task_hash), token):
            raise AuthError("invalid task result token")

    def _sign(self, *parts: str) -> str:
        return hmac.new(self._secret, "\n".join(parts).encode(), hashlib.sha256).hexdigest()[:40]
